"""A full disk at a checkpoint fails the job (RESOURCE_EXHAUSTED, NO_SPACE, naming the
path and the bytes left) instead of leaving it RUNNING, and the checkpoint before it
stays intact. The disk is a real small filesystem: a tmpfs mounted over the trainer's
jobs directory in a mount namespace of its own (needs root; skipped elsewhere)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunewire.client.trainer_channel import trainer_channel
from tunewire.errors import reason_of
from tunewire.identity import read_credential
from tunewire.reasons import Reason
from tunewire.trainer.jobs import checkpoints
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import tiny_spec, watch_all

pytestmark = pytest.mark.timeout(300)


def _can_mount() -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serving(address: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            async with grpc.aio.insecure_channel(address) as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"trainer did not start:\n{log.read_text()}")


def _spawn(home: Path, address: str, mounts: str, log: Path, data_dir, model_dir):
    """The trainer in a mount namespace of its own, after `mounts` (shell) ran there."""
    trainer = [
        sys.executable,
        "-m",
        "tunewire.trainer.main",
        "--home",
        str(home),
        "--listen",
        address,
        "--data-root",
        str(data_dir),
        "--model-root",
        str(model_dir),
    ]
    script = f'mount --make-rprivate / && {mounts} && exec "$@"'
    with open(log, "wb") as out:
        return subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, "sh", *trainer],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _fill(directory: Path) -> None:
    """Writes into `directory` until its filesystem is full."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces for a small disk")
async def test_a_full_disk_at_a_checkpoint_fails_the_job_and_keeps_the_one_before(
    tmp_path, data_dir, tiny_model_dir
):
    home = tmp_path / "home"
    (home / "jobs").mkdir(parents=True)
    address = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "trainer.log"
    trainer = [
        sys.executable,
        "-m",
        "tunewire.trainer.main",
        "--home",
        str(home),
        "--listen",
        address,
        "--data-root",
        str(data_dir),
        "--model-root",
        str(tiny_model_dir.parent),
    ]
    script = (
        f'mount --make-rprivate / && mount -t tmpfs -o size=16m tmpfs {home / "jobs"} && exec "$@"'
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, "sh", *trainer],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await _serving(address, proc, log)
        # The trainer's view of its jobs directory: the small disk.
        jobs_dir = Path(f"/proc/{proc.pid}/root") / home.relative_to("/") / "jobs"
        async with trainer_channel(address, read_credential(home)) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=200)
            spec.checkpointing.interval_steps = 3
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            ).job
            first = None
            async for msg in jobs.WatchTrainingJob(
                training_service_pb.WatchTrainingJobRequest(job_id=job.id)
            ):
                if msg.event.HasField("checkpoint_saved"):
                    first = msg.event
                    break
            _fill(jobs_dir)
            await watch_all(jobs, job.id, after=first.sequence, timeout=120)
            final = (
                await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
            ).job
            assert final.state == training_job_pb.JOB_STATE_FAILED, final
            assert final.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert reason_of(final.error) == Reason.NO_SPACE
            message = final.error.message
            assert message.startswith("no space left on device") and "bytes free" in message
            assert str(home / "jobs" / job.id) in message
            assert "\n" not in message
            # The checkpoint before the full disk is whole, and nothing half-written is left.
            job_dir = jobs_dir / job.id
            kept = checkpoints.candidates(job_dir)
            assert kept and checkpoints.problem(kept[0]) is None
            assert not [p for p in (job_dir / "checkpoints").iterdir() if p.name.startswith(".")]
            # The trainer itself is fine: it answers, and the job is not restarted.
            assert final.restart_count == 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces for a small disk")
async def test_a_full_database_disk_refuses_a_create_and_leaves_nothing(
    tmp_path, data_dir, tiny_model_dir
):
    home, jobs_disk, data_disk = tmp_path / "home", tmp_path / "jobs-disk", tmp_path / "ds-disk"
    for d in (home, jobs_disk, data_disk):
        d.mkdir()
    address = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "trainer.log"
    # The state directory (state.db) on a small disk; jobs' and datasets' files elsewhere.
    mounts = (
        f"mount -t tmpfs -o size=4m tmpfs {home} && mkdir {home / 'jobs'} {home / 'datasets'} "
        f"&& mount --bind {jobs_disk} {home / 'jobs'} "
        f"&& mount --bind {data_disk} {home / 'datasets'}"
    )
    proc = _spawn(home, address, mounts, log, data_dir, tiny_model_dir.parent)
    try:
        await _serving(address, proc, log)
        view = Path(f"/proc/{proc.pid}/root") / home.relative_to("/")
        credential = (view / "internal-token").read_text().strip()
        async with trainer_channel(address, credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            _fill(view)
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
            assert "no space left on the server's disk for the new job" in err.value.details()
            assert list(jobs_disk.iterdir()) == []  # no job directory left behind
            (view / "filler").unlink()
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            ).job
            assert job.state == training_job_pb.JOB_STATE_QUEUED or job.id
    finally:
        proc.terminate()
        proc.wait(timeout=60)
