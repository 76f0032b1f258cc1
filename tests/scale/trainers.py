"""Trainer daemons as real processes sharing one PostgreSQL database and one artifact root."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunewire.v1 import training_service_pb2 as training_service_pb

CREDENTIAL = "shared-queue-test-credential"
# Fast beats so a lost trainer's jobs move within seconds: a lease lasts 0.5 x 4 = 2 s.
HEARTBEAT = "0.5"
MISSED = "4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workers_of(job_dir: Path) -> list[int]:
    """Pids of live worker processes started for this job (their config lives in job_dir)."""
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


class SharedTrainer:
    """`tunewire-trainer --database postgresql://... --artifact-root ...` in its own process."""

    def __init__(
        self,
        name: str,
        root: Path,
        database: str,
        artifacts: Path,
        data_root: Path,
        model_root: Path,
        extra_args: tuple[str, ...] = (),
    ):
        self.name = name
        self.extra_args = extra_args
        self.model_root = model_root
        self.home = root / name
        self.database, self.artifacts, self.data_root = database, artifacts, data_root
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        env = dict(os.environ, TUNEWIRE_INTERNAL_TOKEN=CREDENTIAL)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "tunewire.trainer.main",
                    "--home", str(self.home), "--listen", self.address,
                    "--database", self.database, "--artifact-root", str(self.artifacts),
                    "--data-root", str(self.data_root), "--data-root", str(self.artifacts),
                    "--model-root", str(self.model_root),
                    "--heartbeat", HEARTBEAT, "--missed-heartbeats", MISSED,
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                async with grpc.aio.insecure_channel(self.address) as ch:
                    reply = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} did not start")

    @property
    def trainer_id(self) -> str:
        return (self.home / "trainer-id").read_text().strip()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def runner_of(events) -> list[str]:
    """The trainers that started the job, in order (from the STARTING events' reasons)."""
    found = []
    for e in events:
        if e.HasField("state_change"):
            match = re.search(r"on trainer (\S+) \(attempt", e.state_change.reason)
            if match:
                found.append(match.group(1))
    return found


async def create(jobs, spec, md):
    reply = await jobs.CreateTrainingJob(
        training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=md
    )
    return reply.job


async def get(jobs, job_id, md):
    reply = await jobs.GetTrainingJob(
        training_service_pb.GetTrainingJobRequest(job_id=job_id), metadata=md
    )
    return reply.job
