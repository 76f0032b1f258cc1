"""A job that starts from another job's adapter (or one of its checkpoints, or an
adapter folder): it trains on from those weights; one that does not fit its
base and settings is refused at create, naming what differs."""

from __future__ import annotations

import shutil

import grpc
import mlx.core as mx
import pytest

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import as_user
from .jobs_helpers import losses, tiny_spec, watch_all

pytestmark = pytest.mark.timeout(300)


async def create(jobs, spec, metadata=None):
    return (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=metadata
        )
    ).job


async def refused(jobs, spec, metadata=None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec, metadata)
    return err.value


async def test_a_job_trains_on_from_another_jobs_adapter(jobs, tiny_model_dir, data_dir):
    data = data_dir / "alpaca.json"
    first_spec = tiny_spec(tiny_model_dir, data, max_steps=6)
    first_spec.hyperparameters.learning_rate = 1e-2
    first = await create(jobs, first_spec)
    first_events = await watch_all(jobs, first.id)
    first = (
        await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=first.id))
    ).job
    assert first.state == training_job_pb.JOB_STATE_SUCCEEDED

    # Learning rate ~0: the second job's adapter stays the one it started from.
    spec = tiny_spec(tiny_model_dir, data, max_steps=1)
    spec.hyperparameters.learning_rate = 1e-12
    spec.initial_adapter.job_id = first.id
    second = await create(jobs, spec)
    assert second.resolved.initial_adapter_path.endswith("adapters/adapters.safetensors")
    events = await watch_all(jobs, second.id)
    assert events[-1].state_change.state == training_job_pb.JOB_STATE_SUCCEEDED
    assert any("adapters start from" in e.log.message for e in events if e.HasField("log"))
    started = mx.load(first.artifacts.adapter_path + "/adapters.safetensors")
    ended = mx.load(
        (
            await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=second.id))
        ).job.artifacts.adapter_path
        + "/adapters.safetensors"
    )
    assert started.keys() == ended.keys()
    assert all(mx.allclose(started[k], ended[k], atol=1e-6).item() for k in started)
    # It starts where the first ended, well below where the first began.
    assert losses(events)[0][1] < losses(first_events)[0][1]

    # A checkpoint of it, and the adapter folder by path, start a job as well.
    spec.initial_adapter.Clear()
    spec.initial_adapter.job_id, spec.initial_adapter.checkpoint_step = first.id, 3
    from_checkpoint = await create(jobs, spec)
    assert "/checkpoints/" in from_checkpoint.resolved.initial_adapter_path
    await watch_all(jobs, from_checkpoint.id)
    spec.initial_adapter.Clear()
    shutil.copytree(first.artifacts.adapter_path, data_dir / "mine")  # as a user keeps one
    spec.initial_adapter.path = str(data_dir / "mine" / "adapters.safetensors")
    by_path = await create(jobs, spec)
    assert by_path.resolved.initial_adapter_path == spec.initial_adapter.path
    await watch_all(jobs, by_path.id)

    # What does not fit is refused before anything runs.
    wrong_rank = tiny_spec(tiny_model_dir, data, max_steps=1)
    wrong_rank.lora.rank = 8
    wrong_rank.initial_adapter.job_id = first.id
    err = await refused(jobs, wrong_rank)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lora.rank: is 8, the initial adapter's rank is 4" in err.details()

    fewer_layers = tiny_spec(tiny_model_dir, data, max_steps=1)
    fewer_layers.lora.num_layers = 1
    fewer_layers.initial_adapter.job_id = first.id
    err = await refused(jobs, fewer_layers)
    assert "not an adapter tensor of this job" in err.details()

    dora = tiny_spec(tiny_model_dir, data, max_steps=1, method=training_job_pb.TRAINING_METHOD_DORA)
    dora.initial_adapter.job_id = first.id
    assert "the adapter is 'lora', this job trains 'dora'" in (await refused(jobs, dora)).details()

    unknown_step = tiny_spec(tiny_model_dir, data, max_steps=1)
    unknown_step.initial_adapter.job_id, unknown_step.initial_adapter.checkpoint_step = first.id, 7
    assert "has no checkpoint at step 7" in (await refused(jobs, unknown_step)).details()

    theirs = tiny_spec(tiny_model_dir, data, max_steps=1)
    theirs.initial_adapter.job_id = first.id
    err = await refused(jobs, theirs, metadata=as_user("mallory"))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    outside = tiny_spec(tiny_model_dir, data, max_steps=1)
    outside.initial_adapter.path = "/etc"
    assert (await refused(jobs, outside)).code() == grpc.StatusCode.PERMISSION_DENIED
