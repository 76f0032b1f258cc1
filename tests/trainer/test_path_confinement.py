"""No tenant reaches the state directory, or any folder on the server, through a path.

The trainer runs as `tunewire server` does by default: started in a directory
that holds its state directory, with no --data-root (the start directory is the
data root) and the tiny model in HOME/models. Every refusal reads the same
whether the thing refused exists or not.
"""

from __future__ import annotations

import shutil

import grpc
import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .conftest import as_user, write_alpaca
from .jobs_helpers import tiny_spec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def stack(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    home = tmp_path / ".tunewire"
    shutil.copytree(tiny_model_dir, home / "models" / "tiny")
    write_alpaca(tmp_path / "mine.json")
    server = await start_trainer(TrainerConfig(home=home, listen="127.0.0.1:0"))
    async with trainer_channel(server.address, server.credential) as channel:
        yield (
            home,
            training_service_grpc.TrainingServiceStub(channel),
            dataset_service_grpc.DatasetServiceStub(channel),
        )
    await server.stop(grace=5)


async def _upload(datasets, path, who):
    async def chunks():
        yield dataset_service_pb.UploadDatasetRequest(
            metadata=dataset_service_pb.UploadMetadata(display_name="alice's data")
        )
        yield dataset_service_pb.UploadDatasetRequest(chunk=path.read_bytes())

    return (await datasets.UploadDataset(chunks(), metadata=who)).dataset


async def _validate_path(datasets, path, who):
    return await datasets.ValidateDataset(
        dataset_service_pb.ValidateDatasetRequest(path=str(path)), metadata=who
    )


async def test_a_file_of_the_start_directory_is_a_data_root(stack, tmp_path):
    _, _, datasets = stack
    reply = await _validate_path(datasets, tmp_path / "mine.json", as_user("bob"))
    assert reply.report.valid


async def test_nothing_of_the_state_directory_is_reachable_by_path(stack, tmp_path):
    home, jobs, datasets = stack
    alice = await _upload(datasets, tmp_path / "mine.json", as_user("alice"))
    job = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(home / "models" / "tiny", tmp_path / "mine.json", max_steps=1)
            ),
            metadata=as_user("alice"),
        )
    ).job
    targets = [
        *(p for p in (home / "datasets" / alice.id).rglob("*") if p.is_file()),
        home / "state.db",
        home / "internal-token",
        home / "keys.yaml",  # absent here: refused just the same
        home / "jobs" / job.id / "worker_config.json",
        home / "jobs" / job.id / "train.log",
        home / "jobs" / job.id / "data" / "train.jsonl",
    ]
    assert len(targets) >= 8
    messages = set()
    for target in targets:
        for as_path in (str(target), f"./.tunewire/{target.relative_to(home)}"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _validate_path(datasets, as_path, as_user("bob"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, as_path
            messages.add(err.value.details().replace(as_path, "PATH"))
            spec = tiny_spec(home / "models" / "tiny", as_path, max_steps=1)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec),
                    metadata=as_user("bob"),
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, as_path
    # One message for every target, present or not: nothing says what exists.
    assert messages == {"path: path 'PATH' refused: it is outside the allowed data roots"}
    await jobs.CancelTrainingJob(
        training_service_pb.CancelTrainingJobRequest(job_id=job.id, force=True),
        metadata=as_user("alice"),
    )


async def test_model_paths_are_confined_to_the_model_roots(stack, tmp_path):
    home, jobs, _ = stack
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "hf-cache").mkdir()
    details = set()
    for model in ("/root/.ssh", "/no/such/dir", str(tmp_path / "secret-dir"), "/etc", "~"):
        spec = tiny_spec(model, tmp_path / "mine.json", max_steps=1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await jobs.CreateTrainingJob(
                training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=as_user("bob")
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, model
        details.add(err.value.details().replace(repr(model), "MODEL"))
    assert details == {"spec.model: path MODEL refused: it is outside the allowed model roots"}

    # Inside a model root (HOME/models), and a copy in the Hugging Face cache: usable.
    shutil.copytree(home / "models" / "tiny", tmp_path / "hf-cache" / "tiny-copy")
    for model in (home / "models" / "tiny", "./.tunewire/models/tiny", tmp_path / "hf-cache"):
        spec = tiny_spec(model, tmp_path / "mine.json", max_steps=1)
        if model == tmp_path / "hf-cache":
            spec.model = str(tmp_path / "hf-cache" / "tiny-copy")
        job = (
            await jobs.CreateTrainingJob(
                training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=as_user("bob")
            )
        ).job
        await jobs.CancelTrainingJob(
            training_service_pb.CancelTrainingJobRequest(job_id=job.id, force=True),
            metadata=as_user("bob"),
        )


async def test_generate_and_tokenizer_paths_are_confined_too(stack, tmp_path):
    _, jobs, datasets = stack
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.Generate(
            training_service_pb.GenerateRequest(model="/root", prompt="hi", max_tokens=1),
            metadata=as_user("bob"),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await datasets.ValidateDataset(
            dataset_service_pb.ValidateDatasetRequest(
                path=str(tmp_path / "mine.json"),
                options=dataset_service_pb.ValidationOptions(tokenizer="/root", max_tokens=9),
            ),
            metadata=as_user("bob"),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("model", ["x" * 100_000, "a/" + "b" * 5000, "/" + "c" * 300])
async def test_absurd_model_names_are_a_named_field_not_a_crash(stack, tmp_path, model):
    _, jobs, _ = stack
    spec = tiny_spec(model, tmp_path / "mine.json", max_steps=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=as_user("bob")
        )
    assert err.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "spec.model" in err.value.details()
    assert len(err.value.details()) < 600
