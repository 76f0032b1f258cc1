"""Commands on stdin: cancel saves what there is; EOF (the daemon died) ends the worker at once."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tunewire.trainer.worker.events import DAEMON_GONE_EXIT

pytestmark = pytest.mark.timeout(90)

LONG_JOB = {"hyperparameters": {"max_steps": 10_000, "batch_size": 2}}


def test_cancel_finishes_the_step_checkpoints_and_saves_the_adapter(make_config, start_worker):
    worker = start_worker(make_config(**LONG_JOB))
    worker.wait_for(lambda e: e.kind == "metrics" and e.step == 2)
    worker.send("cancel")
    assert worker.finish() == 0, worker.log()
    done = worker.done()
    assert done.outcome == "cancelled" and 2 <= done.step < 10_000
    adapter_dir = Path(done.artifacts.adapter_path)
    assert (adapter_dir / "adapters.safetensors").stat().st_size > 0
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["fine_tune_type"] == "lora"
    (checkpoint,) = worker.of_type("checkpoint")
    assert checkpoint.step == done.step
    assert Path(checkpoint.path, "state.json").exists()
    assert worker.events[-1].kind == "done"


def test_stdin_eof_means_the_daemon_died_and_the_worker_exits_at_once(make_config, start_worker):
    worker = start_worker(make_config(**LONG_JOB))
    worker.wait_for(lambda e: e.kind == "metrics" and e.step == 1)
    worker.proc.stdin.close()
    tic = time.monotonic()
    try:
        code = worker.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker kept running after its stdin closed")
    assert time.monotonic() - tic < 5
    assert code == DAEMON_GONE_EXIT
    remaining = []
    while (event := worker.next_event(5)) is not None:
        remaining.append(event.kind)
    assert "done" not in remaining and "error" not in remaining
    # Nothing half-written is left behind.
    job_dir = Path(worker.job_dir)
    assert not (job_dir / "adapters").exists()
    assert not list(job_dir.glob("checkpoints/.tmp*"))


def test_eof_while_loading_also_ends_the_worker(make_config, start_worker):
    worker = start_worker(make_config(**LONG_JOB))
    worker.wait_for(lambda e: e.kind == "state" and e.state == "STARTING")
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=10) == DAEMON_GONE_EXIT
