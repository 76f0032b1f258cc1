"""A real trainer and a real gateway on port 0, with three keys: alice and bob
(members) and root (admin).

Most tests use a trainer with `max_running_jobs=0`: it accepts, queues,
cancels and streams jobs but never starts a worker, so they need no training.
The end-to-end tests train for real on the tiny model.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import grpc
import pytest

from tunewire.gateway.config import GatewayConfig
from tunewire.gateway.keys import add_key
from tunewire.gateway.server import GatewayServer, start_gateway
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import TrainerServer, start_trainer
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

QA = [
    ("What is a learning rate?", "The step size of each update."),
    ("What does LoRA train?", "Two small low-rank matrices per layer."),
    ("What is overfitting?", "Fitting noise in the training data."),
    ("What is a token?", "A piece of text the model reads."),
]


def write_alpaca(path: Path, n: int = 8) -> Path:
    records = [
        {"instruction": QA[i % len(QA)][0], "input": "", "output": QA[i % len(QA)][1]}
        for i in range(n)
    ]
    path.write_text(json.dumps(records, indent=2))
    return path


@dataclass
class Stack:
    trainer: TrainerServer
    gateway: GatewayServer
    keys: dict[str, str]
    data_dir: Path
    model_dir: Path
    home: Path
    trainer_config: TrainerConfig
    channels: list = field(default_factory=list)

    def channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.gateway.grpc_port}")
        self.channels.append(channel)
        return channel

    def training(self) -> training_service_grpc.TrainingServiceStub:
        return training_service_grpc.TrainingServiceStub(self.channel())

    def datasets(self) -> dataset_service_grpc.DatasetServiceStub:
        return dataset_service_grpc.DatasetServiceStub(self.channel())

    def md(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[who]}"),)

    def headers(self, who: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[who]}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    def spec(self, **hyper) -> training_job_pb.TrainingJobSpec:
        spec = training_job_pb.TrainingJobSpec(model=str(self.model_dir))
        spec.dataset.path = str(self.data_dir / "alpaca.json")
        spec.hyperparameters.batch_size = 2
        spec.hyperparameters.max_seq_length = 64
        spec.hyperparameters.max_steps = hyper.get("max_steps", 2)
        return spec

    async def create_job(self, who: str) -> training_job_pb.TrainingJob:
        reply = await self.training().CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=self.spec()), metadata=self.md(who)
        )
        return reply.job

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        await self.gateway.stop(grace=0.5)
        await self.trainer.stop(grace=2)


async def start_stack(
    tmp_path: Path,
    model_dir: Path,
    *,
    max_running_jobs: int = 0,
    extra_roots: tuple[Path, ...] = (),
    trainer_token: str = "",
    trainer_options: dict | None = None,
    **gateway_options,
) -> Stack:
    home = tmp_path / "home"
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_alpaca(data / "alpaca.json")
    keys_file = tmp_path / "keys.yaml"
    keys = {
        "alice": add_key(keys_file, "alice", "member"),
        "bob": add_key(keys_file, "bob", "member"),
        "root": add_key(keys_file, "root", "admin"),
    }
    trainer_config = TrainerConfig(
        home=home,
        listen="127.0.0.1:0",
        data_roots=(data, model_dir.parent, tmp_path, *extra_roots),
        model_roots=(model_dir.parent,),
        max_running_jobs=max_running_jobs,
        cancel_grace_seconds=5,
        shutdown_grace_seconds=5,
        internal_token=trainer_token,
        **(trainer_options or {}),
    )
    trainer = await start_trainer(trainer_config)
    # As `tunewire server` does: the gateway is handed the trainer's credential.
    gateway_options.setdefault("internal_token", trainer.credential)
    config = GatewayConfig(
        trainer=trainer.address,
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        keys_file=keys_file,
        **gateway_options,
    )
    gateway = await start_gateway(config)
    stack = Stack(trainer, gateway, keys, data, model_dir, home, trainer_config)
    await wait_for(lambda: gateway.trainer_health.serving, "the gateway to see the trainer")
    return stack


async def restart_trainer(stack: Stack) -> None:
    """A new trainer on the same port and home, as after a crash or upgrade."""
    config = replace(stack.trainer_config, listen=stack.trainer.address)
    stack.trainer = await start_trainer(config)


async def wait_for(condition, what: str, timeout: float = 15.0, interval: float = 0.05):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
async def stack(tmp_path, tiny_model_dir):
    s = await start_stack(tmp_path, tiny_model_dir)
    yield s
    await s.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
