"""No job is stuck or lost when its worker dies: with a checkpoint on disk it starts
again from it (bounded, with a doubling wait, an event per attempt), a checkpoint
that fails its checksums is set aside and the one before it used; only then FAILED."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.errors import reason_of
from tunewire.reasons import Reason
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.jobs import checkpoints
from tunewire.trainer.protocol.checksums import file_sha256
from tunewire.trainer.server import start_trainer
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import states, tiny_spec, watch_all

pytestmark = pytest.mark.timeout(240)

# A worker that writes a checkpoint and dies by SIGKILL, every time it is started.
DYING_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys
    from tunewire.trainer.protocol import events as p
    from tunewire.trainer.worker.events import EventWriter

    fd = int(sys.argv[sys.argv.index("--events-fd") + 1])
    w = EventWriter(fd)
    w.emit(p.State(state=p.WorkerState.RUNNING, reason="scripted"))
    os.makedirs("checkpoints/00000002", exist_ok=True)
    for name in ("adapters.safetensors", "optimizer.safetensors"):
        open(os.path.join("checkpoints/00000002", name), "wb").write(b"x")
    open("checkpoints/00000002/state.json", "w").write(json.dumps({"step": 2}))
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _config(tmp_path, data_dir, tiny_model_dir, **overrides) -> TrainerConfig:
    return TrainerConfig(
        home=tmp_path / "home",
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
        cancel_grace_seconds=10,
        **overrides,
    )


def _reasons(events) -> list[str]:
    return [e.state_change.reason for e in events if e.HasField("state_change")]


async def _watch_until(jobs, job_id, done):
    """Events of a job until `done(event)` is true."""
    seen = []
    async for msg in jobs.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=job_id)
    ):
        seen.append(msg.event)
        if done(msg.event):
            return seen
    return seen


async def test_a_killed_worker_restarts_from_its_checkpoint_and_the_job_succeeds(
    tmp_path, data_dir, tiny_model_dir
):
    server = await start_trainer(
        _config(tmp_path, data_dir, tiny_model_dir, restart_backoff_seconds=0.2)
    )
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=30)
            spec.checkpointing.interval_steps = 4
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            ).job
            before = await asyncio.wait_for(
                _watch_until(jobs, job.id, lambda e: e.HasField("checkpoint_saved")), 120
            )
            (pid,) = server.runner.worker_pids(job.id)
            os.kill(pid, signal.SIGKILL)
            after = await watch_all(jobs, job.id, after=before[-1].sequence)
            final = (
                await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
            ).job
    finally:
        await server.stop(grace=5)
    assert final.state == training_job_pb.JOB_STATE_SUCCEEDED, final.error
    assert final.restart_count == 1 and final.resume_count == 1
    reasons = _reasons(after)
    restart = next(r for r in reasons if "restarting" in r)
    assert restart.startswith("the worker was killed by signal 9 (SIGKILL); restarting from")
    assert "(attempt 1 of 3)" in restart and "in 0.2 s" in restart
    assert any("resuming from checkpoint at step" in r for r in reasons), reasons
    sequences = [e.sequence for e in before + after]
    assert sequences == list(range(1, len(sequences) + 1))


async def test_a_worker_that_keeps_dying_is_restarted_a_bounded_number_of_times(
    tmp_path, data_dir, tiny_model_dir
):
    script = tmp_path / "dying_worker.py"
    script.write_text(DYING_WORKER)
    python = tmp_path / "python-dying"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    python.chmod(0o755)
    server = await start_trainer(
        _config(
            tmp_path,
            data_dir,
            tiny_model_dir,
            python=str(python),
            restart_backoff_seconds=0.1,
            max_worker_restarts=3,
        )
    )
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            ).job
            events = await watch_all(jobs, job.id, timeout=60)
            final = (
                await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
            ).job
    finally:
        await server.stop(grace=5)
    assert final.state == training_job_pb.JOB_STATE_FAILED
    assert reason_of(final.error) == Reason.WORKER_CRASHED
    assert final.restart_count == 3
    assert final.error.message.endswith("(after 3 restart(s))")
    restarts = [r for r in _reasons(events) if "restarting" in r]
    assert [r.split("(attempt ")[1] for r in restarts] == ["1 of 3)", "2 of 3)", "3 of 3)"]
    assert [r.split(" in ")[1].split(" s ")[0] for r in restarts] == ["0.1", "0.2", "0.4"]
    assert states(events).count("JOB_STATE_STARTING") == 4


def _checkpoint(job_dir, step: int, with_sums: bool = True):
    path = job_dir / "checkpoints" / f"{step:08d}"
    path.mkdir(parents=True)
    for name in ("adapters.safetensors", "optimizer.safetensors"):
        (path / name).write_bytes(os.urandom(64))
    (path / "state.json").write_text(json.dumps({"step": step}))
    if with_sums:
        sums = {p.name: file_sha256(p) for p in path.iterdir()}
        (path / "checksums.json").write_text(json.dumps(sums))
    return path


def test_checkpoints_failing_their_checks_are_set_aside_newest_first(tmp_path):
    job_dir = tmp_path / "job"
    two, four, six = (_checkpoint(job_dir, s) for s in (2, 4, 6))
    with open(six / "adapters.safetensors", "r+b") as f:
        f.truncate(10)
    (four / "optimizer.safetensors").unlink()
    choice = checkpoints.choose(job_dir)
    assert choice.path == two
    assert choice.set_aside == [
        "checkpoint at step 6 is unusable (adapters.safetensors does not match its checksum); "
        "set aside as unusable-00000006",
        "checkpoint at step 4 is unusable (optimizer.safetensors missing); "
        "set aside as unusable-00000004",
    ]
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == [
        "00000002",
        "unusable-00000004",
        "unusable-00000006",
    ]
    # A checkpoint from before checksums existed is still usable; none at all: from the start.
    assert checkpoints.choose(tmp_path / "empty").path is None
    old = _checkpoint(tmp_path / "old", 3, with_sums=False)
    assert checkpoints.choose(tmp_path / "old").path == old


async def test_a_corrupted_checkpoint_is_set_aside_and_the_previous_one_resumed(
    tmp_path, data_dir, tiny_model_dir
):
    server = await start_trainer(
        _config(tmp_path, data_dir, tiny_model_dir, restart_backoff_seconds=3)
    )
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=40)
            spec.checkpointing.interval_steps = 3
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            ).job
            saved = []

            def second_checkpoint(e) -> bool:
                if e.HasField("checkpoint_saved"):
                    saved.append(e.checkpoint_saved.checkpoint.step)
                return len(saved) == 2

            before = await asyncio.wait_for(_watch_until(jobs, job.id, second_checkpoint), 120)
            (pid,) = server.runner.worker_pids(job.id)
            os.kill(pid, signal.SIGKILL)
            # The restart waits 3 s: time to damage the newest checkpoint on disk.
            job_dir = tmp_path / "home" / "jobs" / job.id
            for _ in range(100):
                state = (
                    await jobs.GetTrainingJob(
                        training_service_pb.GetTrainingJobRequest(job_id=job.id)
                    )
                ).job.state
                if state == training_job_pb.JOB_STATE_QUEUED:
                    break
                await asyncio.sleep(0.1)
            newest = checkpoints.candidates(job_dir)[0]
            previous = checkpoints.candidates(job_dir)[1]
            with open(newest / "adapters.safetensors", "r+b") as f:
                f.seek(100)
                f.write(b"\xff" * 16)
            after = await watch_all(jobs, job.id, after=before[-1].sequence)
            final = (
                await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
            ).job
    finally:
        await server.stop(grace=5)
    assert final.state == training_job_pb.JOB_STATE_SUCCEEDED, final.error
    logs = [e.log.message for e in after if e.HasField("log")]
    assert any(
        f"checkpoint at step {int(newest.name)} is unusable" in m
        and "does not match its checksum" in m
        for m in logs
    ), logs
    assert any(
        f"resuming from checkpoint at step {int(previous.name)}" in r for r in _reasons(after)
    )
    assert (job_dir / "checkpoints" / f"unusable-{newest.name}").is_dir()
