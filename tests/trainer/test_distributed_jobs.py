"""Data-parallel jobs through the daemon: two ranks on this host (ring over loopback)."""

import asyncio
import os
import signal

import pytest

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .jobs_helpers import losses, states, tiny_spec, watch_all

pytestmark = pytest.mark.timeout(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def two_ranks(spec: training_job_pb.TrainingJobSpec) -> training_job_pb.TrainingJobSpec:
    spec.distributed.world_size = 2
    return spec


async def test_two_rank_job_trains_and_reports_ranks_and_hosts(jobs, tiny_model_dir, data_dir):
    spec = two_ranks(tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=4, batch_size=4))
    job = (
        await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    ).job
    assert job.distributed.world_size == 2 and list(job.distributed.hosts) == [
        "localhost",
        "localhost",
    ]
    events = await watch_all(jobs, job.id)
    assert states(events)[-1] == "JOB_STATE_SUCCEEDED", [
        e for e in events if e.HasField("state_change")
    ][-1]
    assert [s for s, _ in losses(events)] == [1, 2, 3, 4]
    reasons = [e.state_change.reason for e in events if e.HasField("state_change")]
    assert "2 ranks started on localhost, localhost" in reasons
    assert any("on 2 ranks" in e.log.message for e in events if e.HasField("log"))
    done = (await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))).job
    assert done.distributed.world_size == 2
    assert done.latest_metrics.tokens_per_second > 0


async def test_a_dying_rank_fails_the_job_naming_it_and_leaves_no_orphans(
    trainer, jobs, tiny_model_dir, data_dir
):
    spec = two_ranks(
        tiny_spec(
            tiny_model_dir,
            data_dir / "alpaca.json",
            max_steps=100000,
            batch_size=4,
            checkpoint_every=1000,
        )
    )
    job = (
        await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    ).job
    async for msg in jobs.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job.id)
    ):
        if msg.event.HasField("training_metrics"):
            break
    pids = trainer.runner.worker_pids(job.id)
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    events = await watch_all(jobs, job.id)
    assert states(events)[-1] == "JOB_STATE_FAILED"
    failed = (
        await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
    ).job
    assert "rank 1" in failed.error.message and "SIGKILL" in failed.error.message, (
        failed.error.message
    )
    await asyncio.sleep(0.5)
    assert not any(_alive(pid) for pid in pids)


async def test_cancel_stops_every_rank(trainer, jobs, tiny_model_dir, data_dir):
    spec = two_ranks(
        tiny_spec(
            tiny_model_dir,
            data_dir / "alpaca.json",
            max_steps=100000,
            batch_size=4,
            checkpoint_every=1000,
        )
    )
    job = (
        await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    ).job
    async for msg in jobs.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job.id)
    ):
        if msg.event.HasField("training_metrics"):
            break
    pids = trainer.runner.worker_pids(job.id)
    await jobs.CancelTrainingJob(training_service_pb.CancelTrainingJobRequest(job_id=job.id))
    events = await watch_all(jobs, job.id)
    assert states(events)[-1] == "JOB_STATE_CANCELLED"
    await asyncio.sleep(0.5)
    assert not any(_alive(pid) for pid in pids)
