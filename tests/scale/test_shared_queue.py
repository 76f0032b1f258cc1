"""Two trainers, one PostgreSQL queue, one artifact root, and a gateway balancing
over both: jobs spread over the trainers, any trainer answers for any job, and
a trainer lost mid-job (kill -9, or frozen until its lease ran out) costs
nothing: its job finishes on the other with a contiguous event log and the
losses of an uninterrupted run."""

from __future__ import annotations

import asyncio
import os
import re
import signal

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from ..trainer.conftest import as_user
from ..trainer.jobs_helpers import losses, states, tiny_spec, watch_all
from .trainers import CREDENTIAL, create, get, runner_of, workers_of

pytestmark = pytest.mark.timeout(600)


async def test_ten_jobs_spread_over_two_trainers_and_any_trainer_answers(
    two_trainers, tiny_model_dir
):
    stack = two_trainers
    spec = tiny_spec(tiny_model_dir, stack.data / "alpaca.json", max_steps=3, checkpoint_every=100)
    async with stack.gateway_channel() as ch:
        # Through the gateway: its calls go to both trainers in turn.
        jobs = training_service_grpc.TrainingServiceStub(ch)
        created = [await create(jobs, spec, stack.md) for _ in range(10)]
        logs = await asyncio.gather(
            *(watch_all(jobs, j.id, metadata=stack.md, timeout=400) for j in created)
        )
        listed = await jobs.ListTrainingJobs(
            training_service_pb.ListTrainingJobsRequest(), metadata=stack.md
        )
    for trainer in (stack.a, stack.b):
        # Each trainer tells every job's whole story, whichever trainer ran it.
        async with trainer_channel(trainer.address, CREDENTIAL) as ch:
            jobs = training_service_grpc.TrainingServiceStub(ch)
            again = [await watch_all(jobs, j.id, metadata=as_user("alice")) for j in created]
            final = await get(jobs, created[0].id, as_user("alice"))
        assert again == logs
        assert final.state == training_job_pb.JOB_STATE_SUCCEEDED
    for events in logs:
        assert states(events)[-1] == "JOB_STATE_SUCCEEDED"
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert len(runner_of(events)) == 1
    runners = [runner_of(events)[0] for events in logs]
    assert set(runners) == {stack.a.trainer_id, stack.b.trainer_id}, runners
    assert {j.id for j in listed.jobs} == {j.id for j in created}
    # Same spec, same seed: every run learned the same thing, wherever it ran.
    assert len({tuple(loss for _, loss in losses(events)) for events in logs}) == 1


@pytest.mark.parametrize("how", ["kill", "freeze"])
async def test_a_trainer_lost_mid_job_costs_nothing(two_trainers, tiny_model_dir, how):
    stack = two_trainers
    spec = tiny_spec(
        tiny_model_dir, stack.data / "alpaca.json", max_steps=40, checkpoint_every=4, batch_size=4
    )
    before = []
    async with stack.gateway_channel() as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        job = await create(jobs, spec, stack.md)
        async for msg in jobs.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id), metadata=stack.md
        ):
            before.append(msg.event)
            # Right after a checkpoint was recorded: the worker is steps away from the
            # next one, so the one the job resumes from is one the store knows, and no
            # step's metrics can fall between the two trainers.
            if (
                msg.event.HasField("checkpoint_saved")
                and msg.event.checkpoint_saved.checkpoint.step >= 4
            ):
                break
    first = runner_of(before)[0]
    lost, survivor = (stack.a, stack.b) if first == stack.a.trainer_id else (stack.b, stack.a)
    if how == "kill":
        lost.signal(signal.SIGKILL)
    else:
        # Frozen, not dead (a paused host): its lease runs out while it still holds the job.
        frozen = workers_of(lost.artifacts / "jobs" / job.id)
        lost.signal(signal.SIGSTOP)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)

    # After a kill, through the gateway (it passes over the dead trainer); a frozen one
    # keeps its connections open until keepalive gives up, so then the survivor directly.
    if how == "kill":
        channel, md = stack.gateway_channel(), stack.md
    else:
        channel, md = trainer_channel(survivor.address, CREDENTIAL), as_user("alice")
    async with channel as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        if how == "freeze":
            # Once the survivor took the job over, the frozen trainer goes on.
            seen = list(before)
            while len(runner_of(seen)) < 2:
                seen += await _until_next_start(jobs, job.id, seen[-1].sequence, md)
            lost.signal(signal.SIGCONT)
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        after = await watch_all(jobs, job.id, after=before[-1].sequence, metadata=md, timeout=400)
        reference = await watch_all(
            jobs, (await create(jobs, spec, md)).id, metadata=md, timeout=400
        )
        final = await get(jobs, job.id, md)

    events = before + after
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(events)[-1] == "JOB_STATE_SUCCEEDED"
    assert runner_of(events) == [lost.trainer_id, survivor.trainer_id]
    reasons = [e.state_change.reason for e in events if e.HasField("state_change")]
    assert any(f"trainer {lost.trainer_id} stopped heartbeating" in r for r in reasons), reasons
    assert any("resuming from checkpoint at step" in r for r in reasons), reasons
    assert final.resume_count == 1
    got, want = dict(losses(events)), dict(losses(reference))
    assert sorted(got) == list(range(1, 41)) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-5), step
    if how == "freeze":
        # The thawed trainer found its lease gone (at its next heartbeat, or when the
        # store refused its next write: nothing it wrote landed, as the log above
        # shows) and stopped its worker.
        deadline = asyncio.get_running_loop().time() + 30
        while not re.search(r"lost its lease|lease on it is gone", lost.log_path.read_text()):
            assert asyncio.get_running_loop().time() < deadline, lost.log_path.read_text()[-3000:]
            await asyncio.sleep(0.5)
        while workers_of(lost.artifacts / "jobs" / job.id):
            assert asyncio.get_running_loop().time() < deadline, "the stale worker lives on"
            await asyncio.sleep(0.5)


async def _until_next_start(jobs, job_id, after, md):
    """Events after `after` up to and including the next STARTING state change."""
    got = []
    async for msg in jobs.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job_id, after_sequence=after),
        metadata=md,
    ):
        got.append(msg.event)
        if runner_of([msg.event]):
            break
    return got
