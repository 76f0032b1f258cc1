"""Claims by device and memory: two trainers on one PostgreSQL offer different
things (a CPU one with 8 GiB, a "GPU" one with 64 GiB, as configured), and each
claims only the jobs whose spec.resources it meets; a job neither can run stays
QUEUED, holding no lease, its error saying why (NO_TRAINER_CAN_RUN)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.errors import reason_of
from tunewire.reasons import Reason
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from ..trainer.conftest import as_user, write_alpaca
from ..trainer.jobs_helpers import states, tiny_spec, watch_all
from .trainers import CREDENTIAL, SharedTrainer, create, get, runner_of, workers_of

pytestmark = pytest.mark.timeout(600)
ALICE = as_user("alice")


@pytest.fixture
async def cpu_and_gpu_trainers(tmp_path, postgres_url, tiny_model_dir):
    data = tmp_path / "data"
    data.mkdir()
    write_alpaca(data / "alpaca.json", n=32)
    offers = {
        "cpu": ("--device", "cpu", "--memory-gib", "8"),
        "gpu": ("--device", "gpu", "--memory-gib", "64"),
    }
    trainers = {
        name: SharedTrainer(
            name, tmp_path, postgres_url, tmp_path / "shared", data, tiny_model_dir.parent, args
        )
        for name, args in offers.items()
    }
    try:
        await asyncio.gather(*(t.start() for t in trainers.values()))
        yield trainers, data
    finally:
        for t in trainers.values():
            t.stop()


def _needing(spec, device: int, memory_gib: float):
    spec.resources.device = device
    spec.resources.min_memory_gib = memory_gib
    return spec


async def test_each_trainer_claims_only_what_it_can_run(cpu_and_gpu_trainers, tiny_model_dir):
    trainers, data = cpu_and_gpu_trainers
    cpu, gpu = trainers["cpu"], trainers["gpu"]

    def spec():
        return tiny_spec(tiny_model_dir, data / "alpaca.json", max_steps=2, checkpoint_every=100)

    # Every job is created through the CPU trainer: where it runs is the claim's choice.
    async with trainer_channel(cpu.address, CREDENTIAL) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        for_gpu = await create(
            jobs, _needing(spec(), training_job_pb.RESOURCE_DEVICE_GPU, 0), ALICE
        )
        big = await create(jobs, _needing(spec(), training_job_pb.RESOURCE_DEVICE_ANY, 32), ALICE)
        for_cpu = await create(
            jobs, _needing(spec(), training_job_pb.RESOURCE_DEVICE_CPU, 4), ALICE
        )
        too_big = await create(
            jobs, _needing(spec(), training_job_pb.RESOURCE_DEVICE_CPU, 16), ALICE
        )
        # Queued, and its status says why it waits.
        assert too_big.state == training_job_pb.JOB_STATE_QUEUED
        assert reason_of(too_big.error) == Reason.NO_TRAINER_CAN_RUN
        assert "needs cpu, at least 16 GiB" in too_big.error.message
        assert not for_cpu.error.message

        ran = {}
        for job in (for_gpu, big, for_cpu):
            events = await watch_all(jobs, job.id, metadata=ALICE)
            assert states(events)[-1] == "JOB_STATE_SUCCEEDED"
            ran[job.id] = runner_of(events)
        assert ran == {
            for_gpu.id: [gpu.trainer_id],
            big.id: [gpu.trainer_id],
            for_cpu.id: [cpu.trainer_id],
        }
        # Several heartbeats later (0.5 s each), nobody has taken the one neither can run.
        await asyncio.sleep(2)
        waiting = await get(jobs, too_big.id, ALICE)
        assert waiting.state == training_job_pb.JOB_STATE_QUEUED
        assert reason_of(waiting.error) == Reason.NO_TRAINER_CAN_RUN
        assert waiting.resume_count == 0 and not waiting.HasField("start_time")


async def test_a_queued_job_says_so_once_the_only_trainer_that_could_run_it_is_gone(
    cpu_and_gpu_trainers, tiny_model_dir
):
    """The reason is judged again at heartbeats, not only at create: the GPU trainer
    dies (kill -9); its job and the GPU job queued behind it wait, saying why."""
    trainers, data = cpu_and_gpu_trainers
    cpu, gpu = trainers["cpu"], trainers["gpu"]
    gpu_only = training_job_pb.RESOURCE_DEVICE_GPU
    async with trainer_channel(cpu.address, CREDENTIAL) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        long_spec = tiny_spec(tiny_model_dir, data / "alpaca.json", max_steps=100000)
        running = await create(jobs, _needing(long_spec, gpu_only, 0), ALICE)
        for _ in range(300):
            if (await get(jobs, running.id, ALICE)).state == training_job_pb.JOB_STATE_RUNNING:
                break
            await asyncio.sleep(0.1)
        short_spec = tiny_spec(tiny_model_dir, data / "alpaca.json", max_steps=2)
        behind = await create(jobs, _needing(short_spec, gpu_only, 0), ALICE)
        assert behind.state == training_job_pb.JOB_STATE_QUEUED  # the GPU trainer is busy
        assert not behind.error.message  # ...but there is one

        gpu.signal(signal.SIGKILL)
        for pid in workers_of(gpu.artifacts / "jobs" / running.id):
            os.kill(pid, signal.SIGKILL)
        # Leases run out after 4 beats of 0.5 s; the CPU trainer re-judges every 5 beats.
        waiting = {}
        for _ in range(300):
            waiting = {j: await get(jobs, j, ALICE) for j in (running.id, behind.id)}
            if all(reason_of(w.error) == Reason.NO_TRAINER_CAN_RUN for w in waiting.values()):
                break
            await asyncio.sleep(0.1)
        for job in waiting.values():
            assert job.state == training_job_pb.JOB_STATE_QUEUED
            assert reason_of(job.error) == Reason.NO_TRAINER_CAN_RUN, job.error
            assert "needs gpu" in job.error.message and "cpu, 8.0 GiB" in job.error.message
