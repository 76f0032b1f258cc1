"""A new attempt does not start while an earlier attempt's worker is inside its
fenced check-and-rename (here: the test holds that worker's shared lock on the
job's attempt.lock, as a worker frozen there would): the trainer waits its
bounded time, gives the job back still QUEUED, and writes no new attempt."""

from __future__ import annotations

import asyncio
import fcntl
import os

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.protocol import job_layout
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from ..trainer.conftest import as_user, write_alpaca
from ..trainer.jobs_helpers import states, tiny_spec, watch_all
from .trainers import CREDENTIAL, SharedTrainer, create, get

pytestmark = pytest.mark.timeout(600)
ALICE = as_user("alice")


async def test_a_job_whose_fence_is_held_is_given_back_not_started(
    tmp_path, postgres_url, tiny_model_dir
):
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "alpaca.json", n=32)
    trainer = SharedTrainer(  # one job at a time (--max-running-jobs 1, the default)
        "a", tmp_path, postgres_url, tmp_path / "shared", data, tiny_model_dir.parent
    )
    await trainer.start()
    try:
        async with trainer_channel(trainer.address, CREDENTIAL) as ch:
            jobs = training_service_grpc.TrainingServiceStub(ch)
            busy = await create(
                jobs, tiny_spec(tiny_model_dir, data / "alpaca.json", max_steps=100000), ALICE
            )
            waiting = await create(
                jobs, tiny_spec(tiny_model_dir, data / "alpaca.json", max_steps=2), ALICE
            )
            assert (await get(jobs, waiting.id, ALICE)).state == training_job_pb.JOB_STATE_QUEUED
            job_dir = tmp_path / "shared" / "jobs" / waiting.id
            fd = os.open(job_dir / job_layout.ATTEMPT_LOCK_FILE, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_SH)  # an earlier attempt's worker, frozen mid-landing
            try:
                await jobs.CancelTrainingJob(
                    training_service_pb.CancelTrainingJobRequest(job_id=busy.id), metadata=ALICE
                )
                assert states(await watch_all(jobs, busy.id, metadata=ALICE))[-1] == (
                    "JOB_STATE_CANCELLED"
                )
                log = trainer.log_path
                for _ in range(300):  # the runner waits 10 s for the lock, then gives up
                    if "still holds attempt.lock" in log.read_text():
                        break
                    await asyncio.sleep(0.1)
                assert "leaving it for now" in log.read_text()
                job = await get(jobs, waiting.id, ALICE)
                assert job.state == training_job_pb.JOB_STATE_QUEUED
                assert not job.HasField("start_time")
                assert not (job_dir / job_layout.ATTEMPT_FILE).exists()  # no attempt began
            finally:
                os.close(fd)
    finally:
        trainer.stop()
