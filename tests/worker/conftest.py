"""Fixtures for the training worker's tests: a tiny dataset, and the worker as a real subprocess.

`make_config(...)` builds a worker config through the daemon's own spec path;
`start_worker(config)` launches `python -m tunewire.trainer.worker` the way the
daemon does (cwd = job dir, events on an inherited pipe fd, commands on stdin,
OpenBLAS preloaded) and returns a `WorkerProcess` to read events from and send
commands to; `run_worker` runs one to its end; `start_ranks` starts every rank
of a distributed job from `launch.rank_commands`, as the daemon's supervisor does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from tunewire.client.spec import spec_from_dict
from tunewire.trainer.jobs import handoff
from tunewire.trainer.processes.blas import worker_env
from tunewire.trainer.processes.launch import rank_commands, with_events_fd, worker_argv
from tunewire.trainer.protocol import commands
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.commands import Command
from tunewire.trainer.protocol.config import WorkerConfig
from tunewire.v1 import training_job_pb2 as training_job_pb

# Four short conversations, repeated: a tiny model learns them in a few steps.
CONVERSATIONS = [
    ("What color is the sky?", "The sky is blue."),
    ("What is two plus two?", "Two plus two is four."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Say hello.", "Hello there, my friend."),
]


def conversation_record(question: str, answer: str, line: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You answer briefly.", "trainable": False},
            {"role": "user", "content": question, "trainable": False},
            {"role": "assistant", "content": answer, "trainable": True},
        ],
        "line": line,
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def train_file(tmp_path_factory) -> Path:
    pairs = CONVERSATIONS * 2
    records = [conversation_record(q, a, i + 1) for i, (q, a) in enumerate(pairs)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", records)


@pytest.fixture(scope="session")
def validation_file(tmp_path_factory) -> Path:
    records = [conversation_record(q, a, i + 1) for i, (q, a) in enumerate(CONVERSATIONS)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "validation.jsonl", records)


# The spec of a short LoRA job on the tiny model; `make_config` overrides nest.
BASE_SPEC = {
    "method": "lora",
    "lora": {"rank": 4, "alpha": 8.0, "num_layers": -1},
    "hyperparameters": {
        "max_steps": 12,
        "batch_size": 4,
        "learning_rate": 0.01,
        "max_seq_length": 64,
        "optimizer": "adam",
        "seed": 0,
    },
    "checkpointing": {"interval_steps": 100},
    "report_interval_steps": 1,
}


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and key in out else value
    return out


@pytest.fixture
def make_config(tiny_model_dir, train_file, tmp_path):
    """The worker config the daemon would hand a job of BASE_SPEC + `overrides` (the keys
    of a spec, nested as in the proto), built by the daemon's own functions. `model` and
    `train_path` replace the paths the daemon resolved: the worker then meets what the
    daemon would have refused (a missing model, too little data)."""

    def make(
        job_name: str = "job",
        *,
        validation_path: str | None = None,
        model: str | None = None,
        train_path: str | None = None,
        **overrides,
    ) -> WorkerConfig:
        job_dir = tmp_path / job_name
        job_dir.mkdir(exist_ok=True)
        spec = spec_from_dict(merged(BASE_SPEC, overrides))
        spec.model = str(tiny_model_dir)
        spec.dataset.path = str(train_file)
        if validation_path:
            spec.validation_dataset.path = validation_path
        config = handoff.config_from_spec(
            spec,
            job_id=job_name,
            job_dir=job_dir,
            train_path=Path(train_path or train_file),
            validation_path=Path(validation_path) if validation_path else None,
            wandb_online_allowed=spec.wandb.mode == training_job_pb.WANDB_MODE_ONLINE,
        )
        return dataclasses.replace(config, model=model) if model else config

    return make


class WorkerProcess:
    """One worker subprocess (rank 0): its events as they arrive (decoded by the protocol's
    reader, as the daemon decodes them), its stdin, its log."""

    def __init__(self, job_dir: Path, argv: list[str], env: dict, log_name: str = "train.log"):
        self.job_dir = Path(job_dir)
        read_fd, write_fd = os.pipe()
        self.log_path = self.job_dir / log_name
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                with_events_fd(argv, write_fd),
                cwd=self.job_dir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        self._events_fd = read_fd
        self._buffer = b""
        self._reader = protocol.Reader()
        self.events: list[protocol.Event] = []

    def next_event(self, timeout: float) -> protocol.Event | None:
        """The next event, or None at EOF (the worker closed the pipe: it exited)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._events_fd], [], [], left)[0]:
                raise TimeoutError(f"no worker event within {timeout}s; log:\n{self.log()}")
            chunk = os.read(self._events_fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event = self._reader.feed(line)
        if event is None:  # the protocol header
            return self.next_event(timeout)
        self.events.append(event)
        return event

    def wait_for(self, predicate, timeout: float = 60) -> protocol.Event:
        while (event := self.next_event(timeout)) is not None:
            if predicate(event):
                return event
        raise AssertionError(f"the worker exited without the awaited event; log:\n{self.log()}")

    def send(self, command: str) -> None:
        self.proc.stdin.write(commands.encode(Command(command)))
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120) -> int:
        """Reads every remaining event, closes stdin, and returns the exit code."""
        while self.next_event(timeout) is not None:
            pass
        os.close(self._events_fd)
        self.proc.stdin.close()
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def of_type(self, kind: str) -> list:
        return [e for e in self.events if e.kind == kind]

    def losses(self) -> dict[int, float]:
        return {e.step: e.loss for e in self.of_type("metrics")}

    def done(self) -> protocol.Done:
        (done,) = self.of_type("done")
        return done

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def subprocess_env() -> dict:
    return worker_env({**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"})


@pytest.fixture
def start_worker():
    """Starts single-process workers; any still running at the end of the test is killed."""
    started: list[WorkerProcess] = []

    def start(config: WorkerConfig, resume_from: str | None = None) -> WorkerProcess:
        argv = worker_argv(handoff.write_config(config.job_dir, config), resume_from=resume_from)
        worker = WorkerProcess(Path(config.job_dir), argv, subprocess_env())
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def start_ranks():
    """Starts every rank of a job as the daemon will, from `launch.rank_commands`.

    Returns rank 0 (events on a pipe) and the other ranks' processes (own logs,
    no events fd). Every process still running at the end of the test is killed.
    """
    processes: list = []

    def start(config: WorkerConfig) -> tuple[WorkerProcess, list[subprocess.Popen]]:
        job_dir = Path(config.job_dir)
        argv = worker_argv(handoff.write_config(job_dir, config))
        commands = rank_commands(config.distributed, job_dir, argv, base_env=subprocess_env())
        (argv0, env0), others = commands[0], commands[1:]
        rank0 = WorkerProcess(job_dir, argv0, env0)
        processes.append(rank0.proc)
        ranks = []
        for rank, (argv, env) in enumerate(others, start=1):
            with open(job_dir / f"train.rank{rank}.log", "ab") as log:
                proc = subprocess.Popen(
                    argv,
                    cwd=job_dir,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            processes.append(proc)
            ranks.append(proc)
        return rank0, ranks

    yield start
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def run_worker(start_worker):
    """Runs a worker to its end; returns it with every event read and its exit code."""

    def run(config: WorkerConfig, timeout: float = 120, resume_from: str | None = None):
        worker = start_worker(config, resume_from=resume_from)
        worker.returncode = worker.finish(timeout)
        return worker

    return run
