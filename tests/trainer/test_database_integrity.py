"""The database is checked at start: a damaged state.db stops the trainer with one
line saying what to do, before anything listens; `tunewire admin backup` copies the
database while the trainer runs, and `tunewire admin restore` brings it back."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import ConfigError, start_trainer
from tunewire.trainer.store import integrity
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import tiny_spec

pytestmark = pytest.mark.timeout(180)

CLI = [sys.executable, "-m", "tunewire.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(home, data_dir, tiny_model_dir) -> TrainerConfig:
    return TrainerConfig(
        home=home,
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
    )


async def _job_ids(server) -> list[str]:
    async with trainer_channel(server.address, server.credential) as channel:
        jobs = training_service_grpc.TrainingServiceStub(channel)
        listed = await jobs.ListTrainingJobs(training_service_pb.ListTrainingJobsRequest())
        return sorted(j.id for j in listed.jobs)


def _damage(path, *, header: bool = False) -> None:
    """Overwrites every page but the first (or the header) with garbage."""
    data = bytearray(path.read_bytes())
    if header:
        data[:100] = os.urandom(100)
    else:
        page = int.from_bytes(data[16:18], "big") or 65536
        data[page:] = os.urandom(len(data) - page)
    path.write_bytes(bytes(data))


def _start_process(home):
    port = _free_port()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tunewire.trainer.main",
            "--home",
            str(home),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ), port


@pytest.mark.parametrize("where", ["pages", "header"])
async def test_a_damaged_database_stops_the_trainer_with_one_line_and_a_backup_restores_it(
    tmp_path, data_dir, tiny_model_dir, where
):
    home = tmp_path / "home"
    server = await start_trainer(_config(home, data_dir, tiny_model_dir))
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            for steps in (1, 2, 3):
                spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=steps)
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
        before = await _job_ids(server)
        # Online: the trainer is running (and writing) while the backup is made.
        backup = tmp_path / "backups" / "state-backup.db"
        made = subprocess.run(
            [*CLI, "admin", "backup", str(backup), "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith(f"backed up {home / 'state.db'} to {backup}")
        assert "3 jobs" in made.stdout
        assert integrity.problems(backup) == []
        assert oct(backup.stat().st_mode & 0o777) == "0o600"
    finally:
        await server.stop(grace=5)
    assert not (home / "state.db-wal").exists() or (home / "state.db-wal").stat().st_size == 0

    _damage(home / "state.db", header=where == "header")
    result, port = _start_process(home)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"tunewire-trainer: the database {home / 'state.db'} is damaged")
    assert "tunewire admin restore" in lines[0] and "Traceback" not in result.stderr
    with pytest.raises(ConfigError):  # in-process too, and nothing was served meanwhile
        await start_trainer(_config(home, data_dir, tiny_model_dir))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0

    restored = subprocess.run(
        [*CLI, "admin", "restore", str(backup), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert restored.returncode == 0, restored.stderr
    server = await start_trainer(_config(home, data_dir, tiny_model_dir))
    try:
        assert await _job_ids(server) == before
    finally:
        await server.stop(grace=5)


def test_a_damaged_backup_is_not_restored(tmp_path):
    good = tmp_path / "state.db"
    conn = sqlite3.connect(good)
    conn.execute("CREATE TABLE jobs (id TEXT)")
    conn.executemany("INSERT INTO jobs VALUES (?)", [(str(i),) for i in range(2000)])
    conn.commit()
    conn.close()
    bad = tmp_path / "bad-backup.db"
    bad.write_bytes(good.read_bytes())
    _damage(bad)
    target = tmp_path / "home" / "state.db"
    with pytest.raises(integrity.DatabaseCorrupt):
        integrity.restore(bad, target)
    assert not target.exists()
    assert integrity.restore(good, target).jobs == 2000
