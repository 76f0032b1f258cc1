"""Real services for the CLI tests: `tunewire trainer` and `tunewire gateway` as
separate processes on free ports (so the gateway can be killed and restarted
under a live watch), and the CLI run the way a user runs it, as a process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunewire.client import Client, TunewireError

CLI = [sys.executable, "-m", "tunewire.cli.main"]
API_KEY = "tw_test_cli_key_0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(address: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with Client(address, api_key="") as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"{process.args} exited with {process.returncode}:\n{log.read_text()}"
                )
            try:
                if client.health() == "SERVING":
                    return
            except TunewireError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{address} not serving after {timeout} s:\n{log.read_text()}")
            time.sleep(0.1)


def stop(
    process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 60.0
) -> int | None:
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class Services:
    root: Path
    model_root: Path | None = None  # where the tests' model lives (the tiny model's folder)
    trainer_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    trainer: subprocess.Popen | None = None
    gateway: subprocess.Popen | None = None
    gateway_starts: int = 0

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TUNEWIRE_", "MLX_TRAINING_"))
        }
        env.update(
            TUNEWIRE_HOME=str(self.home),
            TUNEWIRE_ADDRESS=self.address,
            TUNEWIRE_API_KEY=API_KEY,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start_trainer(self) -> None:
        log = self.root / "trainer.log"
        self.trainer = subprocess.Popen(
            [
                *CLI,
                "trainer",
                "--home",
                str(self.home),
                "--listen",
                f"127.0.0.1:{self.trainer_port}",
                "--data-root",
                str(self.root),
                *(["--model-root", str(self.model_root)] if self.model_root else []),
                "--cancel-grace",
                "10",
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.root,
        )
        wait_serving(f"127.0.0.1:{self.trainer_port}", self.trainer, log)

    def start_gateway(self) -> None:
        self.gateway_starts += 1
        log = self.root / f"gateway-{self.gateway_starts}.log"
        self.gateway = subprocess.Popen(
            [
                *CLI,
                "gateway",
                "--trainer",
                f"127.0.0.1:{self.trainer_port}",
                "--grpc-listen",
                self.address,
                "--http-listen",
                f"127.0.0.1:{self.http_port}",
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.root,
        )
        wait_serving(self.address, self.gateway, log)

    def close(self) -> None:
        stop(self.gateway)
        stop(self.trainer)

    def cli(self, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
        """`tunewire ARGS...` as a user runs it; output as text."""
        return subprocess.run(
            [*CLI, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(**env),
            cwd=self.root,
        )

    def client(self) -> Client:
        return Client(self.address, API_KEY)


def write_config(path: Path, model: Path, **overrides) -> Path:
    """An mlx_lm.lora-style config (plus one native key) for a tiny, quick LoRA job."""
    values = {
        "model": str(model),
        "data": "alpaca_example.json",
        "fine_tune_type": "lora",
        "lora_parameters": "{rank: 4, scale: 2.0, dropout: 0.0}",
        "batch_size": 2,
        "iters": 12,
        "learning_rate": "2e-3",
        "max_seq_length": 256,
        "steps_per_report": 2,
        "steps_per_eval": 6,
        "save_every": 6,
        "seed": 2,
        "validation_fraction": 0.2,
    }
    values.update(overrides)
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items() if v is not None))
    return path
