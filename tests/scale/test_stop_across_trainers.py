"""Pause and cancel asked of one trainer for a job another trainer runs (one
PostgreSQL queue): the request reaches the running trainer at its heartbeat,
which stops its worker as a local request would. A pause leaves a checkpoint
and the job PAUSED only once it is written; resumed through either trainer, the
job continues from that checkpoint and learns what an uninterrupted run learns."""

from __future__ import annotations

import asyncio
import re

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.jobs import checkpoints
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from ..trainer.conftest import as_user
from ..trainer.jobs_helpers import losses, states, tiny_spec, watch_all
from .trainers import CREDENTIAL, create, get, runner_of, workers_of

pytestmark = pytest.mark.timeout(600)

ALICE = as_user("alice")
# Long enough that the request (seen within a heartbeat, 0.5 s) lands mid-run.
STEPS = 300


async def _until(jobs, job_id, after, done, timeout=300):
    """Events after `after` up to and including the first for which `done` holds."""
    got = []

    async def read():
        async for msg in jobs.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job_id, after_sequence=after),
            metadata=ALICE,
        ):
            got.append(msg.event)
            if done(msg.event):
                return

    await asyncio.wait_for(read(), timeout)
    return got


def _stepped(event) -> bool:
    return event.HasField("training_metrics") and event.training_metrics.step >= 3


def _entered(state):
    return lambda e: e.HasField("state_change") and e.state_change.state == state


async def _running_elsewhere(stack, spec):
    """A job started on one trainer and a few steps in: (its events, runner, the other)."""
    async with trainer_channel(stack.a.address, CREDENTIAL) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        job = await create(jobs, spec, ALICE)
        before = await _until(jobs, job.id, 0, _stepped)
    running, other = (
        (stack.a, stack.b) if runner_of(before)[0] == stack.a.trainer_id else (stack.b, stack.a)
    )
    return job, before, running, other


def _lease_trouble(trainer) -> list[str]:
    return re.findall(r".*(?:lost its lease|lease on it is gone).*", trainer.log_path.read_text())


async def test_a_pause_through_another_trainer_checkpoints_and_resume_continues_from_it(
    two_trainers, tiny_model_dir
):
    stack = two_trainers
    spec = tiny_spec(
        tiny_model_dir, stack.data / "alpaca.json", max_steps=STEPS, checkpoint_every=1000
    )
    job, before, running, other = await _running_elsewhere(stack, spec)
    job_dir = running.artifacts / "jobs" / job.id

    async with trainer_channel(other.address, CREDENTIAL) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        reply = await jobs.PauseTrainingJob(
            training_service_pb.PauseTrainingJobRequest(job_id=job.id), metadata=ALICE
        )
        # Not PAUSED at once: the trainer running it has its worker checkpoint first.
        assert reply.job.state == training_job_pb.JOB_STATE_RUNNING
        pausing = await _until(
            jobs, job.id, before[-1].sequence, _entered(training_job_pb.JOB_STATE_PAUSED)
        )
        paused_at = int(re.search(r"at step (\d+)", pausing[-1].state_change.reason).group(1))
        paused = await get(jobs, job.id, ALICE)
        assert 3 <= paused_at < STEPS
        saved = [
            e.checkpoint_saved.checkpoint.step for e in pausing if e.HasField("checkpoint_saved")
        ]
        assert saved == [paused_at]
        assert paused.state == training_job_pb.JOB_STATE_PAUSED
        assert paused.progress.step == paused_at

        deadline = asyncio.get_running_loop().time() + 30
        while workers_of(job_dir):
            assert asyncio.get_running_loop().time() < deadline, "the paused worker lives on"
            await asyncio.sleep(0.3)
        # Written whole on the shared artifact root, where any trainer resumes from it.
        assert [int(p.name) for p in checkpoints.candidates(job_dir)] == [paused_at]

        # Resumed through the trainer that did not run it.
        await jobs.ResumeTrainingJob(
            training_service_pb.ResumeTrainingJobRequest(job_id=job.id), metadata=ALICE
        )
        after = await watch_all(
            jobs, job.id, after=pausing[-1].sequence, metadata=ALICE, timeout=400
        )
        reference = await watch_all(
            jobs, (await create(jobs, spec, ALICE)).id, metadata=ALICE, timeout=400
        )
        final = await get(jobs, job.id, ALICE)

    events = before + pausing + after
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(events)[-1] == "JOB_STATE_SUCCEEDED"
    assert final.progress.step == STEPS
    reasons = [e.state_change.reason for e in after if e.HasField("state_change")]
    assert any(f"resuming from checkpoint at step {paused_at}" in r for r in reasons), reasons
    assert next(s for s, _ in losses(after)) == paused_at + 1
    got, want = dict(losses(events)), dict(losses(reference))
    assert sorted(got) == list(range(1, STEPS + 1)) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-5), step
    # The pause stopped the worker; nobody lost a lease over it.
    assert _lease_trouble(running) == [] and _lease_trouble(other) == []


async def test_a_cancel_through_another_trainer_stops_the_worker_where_it_runs(
    two_trainers, tiny_model_dir
):
    stack = two_trainers
    spec = tiny_spec(
        tiny_model_dir, stack.data / "alpaca.json", max_steps=STEPS * 10, checkpoint_every=1000
    )
    job, before, running, other = await _running_elsewhere(stack, spec)
    job_dir = running.artifacts / "jobs" / job.id

    async with trainer_channel(other.address, CREDENTIAL) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        reply = await jobs.CancelTrainingJob(
            training_service_pb.CancelTrainingJobRequest(job_id=job.id), metadata=ALICE
        )
        assert reply.job.state == training_job_pb.JOB_STATE_CANCELLING
        after = await watch_all(jobs, job.id, after=before[-1].sequence, metadata=ALICE)
        final = await get(jobs, job.id, ALICE)

    events = before + after
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(after)[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    assert final.state == training_job_pb.JOB_STATE_CANCELLED
    assert 3 <= final.progress.step < STEPS * 10
    assert runner_of(events) == [running.trainer_id]
    deadline = asyncio.get_running_loop().time() + 30
    while workers_of(job_dir):
        assert asyncio.get_running_loop().time() < deadline, "the cancelled worker lives on"
        await asyncio.sleep(0.3)
    assert _lease_trouble(running) == [] and _lease_trouble(other) == []
