"""A real trainer daemon on port 0 with a tiny model and small datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

PRINCIPAL_HEADER = "x-tunewire-principal"

QA = [
    ("What is a learning rate?", "The step size of each update."),
    ("What does LoRA train?", "Two small low-rank matrices per layer."),
    ("What is overfitting?", "Fitting noise in the training data."),
    ("What is a token?", "A piece of text the model reads."),
    ("Why use a validation set?", "To measure loss on unseen data."),
    ("What is an epoch?", "One pass over the training data."),
    ("What is gradient descent?", "Moving weights against the gradient."),
    ("What is a batch?", "Examples processed together in one step."),
]


def write_alpaca(path: Path, n: int = 16) -> Path:
    records = [
        {"instruction": QA[i % len(QA)][0], "input": "", "output": QA[i % len(QA)][1]}
        for i in range(n)
    ]
    path.write_text(json.dumps(records, indent=2))
    return path


def write_sharegpt(path: Path, n: int = 8) -> Path:
    lines = []
    for i in range(n):
        a, b = QA[i % len(QA)], QA[(i + 1) % len(QA)]
        lines.append(
            json.dumps(
                {
                    "conversations": [
                        {"from": "system", "value": "You are a concise tutor."},
                        {"from": "human", "value": a[0]},
                        {"from": "gpt", "value": a[1]},
                        {"from": "human", "value": b[0]},
                        {"from": "gpt", "value": b[1]},
                    ]
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_alpaca(d / "alpaca.json")
    write_sharegpt(d / "sharegpt.jsonl")
    (d / "bad.jsonl").write_text(
        '{"instruction": "ok", "input": "", "output": "fine"}\n'
        '{"instruction": 5, "input": "", "output": "x"}\n'
        '{"instruction": "a", "input": "", "output": "b"\n'
    )
    return d


@pytest.fixture
async def trainer(tmp_path, data_dir, tiny_model_dir):
    config = TrainerConfig(
        home=tmp_path / "home",
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
        cancel_grace_seconds=20,
    )
    server = await start_trainer(config)
    yield server
    await server.stop(grace=10)


@pytest.fixture
async def channel(trainer):
    async with trainer_channel(trainer.address, trainer.credential) as ch:
        yield ch


@pytest.fixture
def jobs(channel):
    return training_service_grpc.TrainingServiceStub(channel)


@pytest.fixture
def datasets_stub(channel):
    return dataset_service_grpc.DatasetServiceStub(channel)


def as_user(name: str, admin: bool = False):
    return ((PRINCIPAL_HEADER, name), ("x-tunewire-role", "admin" if admin else "member"))
