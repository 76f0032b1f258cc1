"""Nothing lost: kill -9 the daemon mid-job, restart it, and the job resumes from
its last checkpoint with a continuous event log and the losses of an
uninterrupted run; SIGTERM checkpoints and resumes the same way."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunewire.client.trainer_channel import trainer_channel
from tunewire.identity import read_credential
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import losses, states, tiny_spec, watch_all

pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`tunewire-trainer` as a real separate process."""

    def __init__(self, home: Path, data_root: Path, model_root: Path):
        self.home, self.data_root, self.model_root = home, data_root, model_root
        self.address = f"127.0.0.1:{_free_port()}"
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        with open(self.home.parent / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tunewire.trainer.main",
                    "--home",
                    str(self.home),
                    "--listen",
                    self.address,
                    "--data-root",
                    str(self.data_root),
                    "--model-root",
                    str(self.model_root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                async with grpc.aio.insecure_channel(self.address) as ch:
                    reply = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
        raise AssertionError("trainer did not start")

    def kill(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)


def _workers_of(job_dir: Path) -> list[int]:
    """Pids of live processes started for this job (their config lives in job_dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(job_dir) in cmdline and "tunewire.trainer.worker" in cmdline:
                pids.append(int(entry.name))
    return pids


def _final_losses(events) -> dict[int, float]:
    # After a resume, steps after the checkpoint are reported again; the last report wins.
    return dict(losses(events))


@pytest.fixture
async def daemon(tmp_path, data_dir, tiny_model_dir):
    d = Daemon(tmp_path / "home", data_dir, tiny_model_dir.parent)
    await d.start()
    yield d
    if d.proc.poll() is None:
        d.kill(signal.SIGTERM)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to find orphaned workers"
)
@pytest.mark.parametrize("ranks", [1, 2])
async def test_kill_9_mid_job_then_restart_resumes_with_identical_losses(
    daemon, tiny_model_dir, data_dir, ranks
):
    # Long enough that the job cannot finish between our last read and the kill.
    spec = tiny_spec(
        tiny_model_dir, data_dir / "alpaca.json", max_steps=60, checkpoint_every=4, batch_size=4
    )
    spec.distributed.world_size = ranks
    async with trainer_channel(daemon.address, read_credential(daemon.home)) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        job = (
            await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
        ).job
        before = []
        async for msg in jobs.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id)
        ):
            before.append(msg.event)
            if msg.event.HasField("training_metrics") and msg.event.training_metrics.step >= 6:
                break
    assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL
    job_dir = daemon.home / "jobs" / job.id
    deadline = time.monotonic() + 15
    while _workers_of(job_dir) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert _workers_of(job_dir) == [], "the worker outlived its daemon"
    # The worker may have gone on a little after we stopped reading: resume starts
    # from whatever checkpoint was on disk when the daemon died.
    on_disk = sorted(int(p.name) for p in (job_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert on_disk and on_disk[-1] < 60

    await daemon.start()
    async with trainer_channel(daemon.address, read_credential(daemon.home)) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        after = await watch_all(jobs, job.id, after=before[-1].sequence)
        reference_job = (
            await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
        ).job
        reference = await watch_all(jobs, reference_job.id)
        resumed = (
            await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
        ).job

    sequences = [e.sequence for e in before + after]
    assert sequences == list(range(1, len(sequences) + 1)), "the event log has a gap or a repeat"
    assert states(after)[-1] == "JOB_STATE_SUCCEEDED"
    reasons = [e.state_change.reason for e in after if e.HasField("state_change")]
    # From the newest checkpoint the daemon had recorded: one the worker wrote after the
    # daemon's last recorded event would leave those steps' metrics out of the log.
    resumed_at = {int(m) for r in reasons for m in re.findall(r"resum\w* .*?at step (\d+)", r)}
    assert len(resumed_at) == 1 and resumed_at <= set(on_disk), reasons
    assert resumed.resume_count == 1
    got, want = _final_losses(before + after), _final_losses(reference)
    assert sorted(got) == list(range(1, 61)) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-5), step


async def test_sigterm_checkpoints_and_the_job_resumes_at_the_next_start(
    daemon, tiny_model_dir, data_dir
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=10, checkpoint_every=100)
    async with trainer_channel(daemon.address, read_credential(daemon.home)) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        job = (
            await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
        ).job
        before = []
        async for msg in jobs.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job.id)
        ):
            before.append(msg.event)
            if msg.event.HasField("training_metrics") and msg.event.training_metrics.step >= 3:
                break
    assert daemon.kill(signal.SIGTERM) == 0
    checkpoints = sorted((daemon.home / "jobs" / job.id / "checkpoints").glob("0*"))
    assert checkpoints, "SIGTERM did not leave a checkpoint"
    stopped_at = int(checkpoints[-1].name)
    assert 3 <= stopped_at < 10

    await daemon.start()
    async with trainer_channel(daemon.address, read_credential(daemon.home)) as ch:
        jobs = training_service_grpc.TrainingServiceStub(ch)
        events = await watch_all(jobs, job.id)
    assert states(events)[-1] == "JOB_STATE_SUCCEEDED"
    assert any(
        f"step {stopped_at}" in e.state_change.reason for e in events if e.HasField("state_change")
    )
    assert max(step for step, _ in losses(events)) == 10
