"""The processes the trainer benchmarks start and watch: the training worker and the trainer daemon.

`WorkerProcess` starts `python -m tunewire.trainer.worker` the way the daemon
does (events on a pipe, commands on stdin, output to the job's log) and keeps
the kernel's rusage of it; `Daemon` runs `tunewire-trainer` in its own
process. Both are started from `bench.common`'s configs and environment.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

from bench.common import PYTHON, WORK
from tunewire.trainer.processes.launch import with_events_fd, worker_argv
from tunewire.trainer.protocol import events as protocol


class WorkerProcess:
    """A worker (rank 0) started like the daemon starts it: events on a pipe, commands on stdin."""

    def __init__(self, argv: list[str], env: dict, job_dir: Path, log_name: str = "train.log"):
        read_fd, write_fd = os.pipe()
        self.log_path = Path(job_dir) / log_name
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                with_events_fd(argv, write_fd),
                cwd=job_dir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        self._fd, self._buffer = read_fd, b""
        self._reader = protocol.Reader()
        self.events: list[protocol.Event] = []
        self.rusage = None

    @classmethod
    def start(cls, config, env: dict) -> WorkerProcess:
        """The worker of `config` (a `WorkerConfig` that `bench.common.worker_config` wrote)."""
        from tunewire.trainer.jobs.handoff import CONFIG_FILE

        job_dir = Path(config.job_dir)
        return cls(worker_argv(job_dir / CONFIG_FILE, python=PYTHON), env, job_dir)

    def next_event(self, timeout: float) -> protocol.Event | None:
        """The next event; None when the worker closed the pipe (it exited)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise TimeoutError(
                    f"no worker event within {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}"
                )
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event = self._reader.feed(line)
        if event is None:  # the protocol header
            return self.next_event(timeout)
        self.events.append(event)
        if isinstance(event, protocol.Error):
            raise RuntimeError(f"the worker failed: {event.reason.value}: {event.message}")
        return event

    def metrics_until(self, step: int, timeout: float) -> list[protocol.Metrics]:
        """Metrics events up to the one for `step` (or the end of the run)."""
        while (event := self.next_event(timeout)) is not None:
            if isinstance(event, protocol.Metrics) and event.step >= step:
                break
        return self.metrics()

    def metrics(self) -> list[protocol.Metrics]:
        return [e for e in self.events if isinstance(e, protocol.Metrics)]

    def setup(self) -> protocol.Setup:
        return next(e for e in self.events if isinstance(e, protocol.Setup))

    def finish(self, timeout: float = 600) -> int:
        while self.next_event(timeout) is not None:
            pass
        return self._reap(timeout)

    def kill(self) -> int:
        """SIGKILL now (nothing saved); the exit status, with the process's rusage kept."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self._reap(60)

    def _reap(self, timeout: float) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        if self.rusage is None:
            deadline = time.monotonic() + timeout
            while True:
                pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                    self.rusage = rusage
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {self.proc.pid} did not exit")
                time.sleep(0.05)
        try:
            os.close(self._fd)
        except OSError:
            pass
        return self.proc.returncode

    @property
    def peak_rss_bytes(self) -> int:
        """Peak resident set size over the process's life (Linux reports KiB)."""
        return self.rusage.ru_maxrss * 1024 if self.rusage else 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`tunewire-trainer` in its own process, as in production."""

    def __init__(self, home: Path, data_root: Path, env: dict | None = None):
        self.home = home
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if env is None else env, TUNEWIRE_HOME=str(home), HF_HUB_OFFLINE="1")
        self._log = open(home / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "tunewire.trainer.main",
                "--home",
                str(home),
                "--listen",
                self.address,
                "--data-root",
                str(data_root),
                "--model-root",
                str(WORK / "models"),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout: float = 120) -> None:
        """SERVING, and the capability probe (a one-off mlx import) finished."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from tunewire.v1 import training_service_pb2 as training_service_pb
        from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the trainer exited; see {self.home / 'daemon.log'}")
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the trainer at {self.address} did not start within {timeout} s"
                    )
                await asyncio.sleep(0.2)
        async with self.channel() as channel:
            await training_service_grpc.TrainingServiceStub(channel).GetServerInfo(
                training_service_pb.GetServerInfoRequest(), timeout=timeout
            )

    def channel(self):
        """An async channel that presents the trainer's credential (its home's
        internal-token file, made at start) on every call."""
        from tunewire.client.trainer_channel import trainer_channel
        from tunewire.identity import read_credential

        return trainer_channel(self.address, read_credential(self.home))

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event_seconds(event) -> float:
    """A TrainingEvent's `time` in unix seconds."""
    return event.time.seconds + event.time.nanos / 1e9
