"""`tunewire watch` survives a dropped connection: the gateway is killed (SIGKILL)
in the middle of a live job and started again; the watch reconnects by itself
with the last sequence it printed and ends with every event exactly once."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time

import pytest

from .services import CLI, stop

pytestmark = pytest.mark.timeout(240)


def read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def wait_for_lines(lines: queue.Queue, got: list[str], count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < count:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"the watch ended early after {len(got)} lines")
        got.append(line)


def test_watch_reconnects_after_the_gateway_is_killed_and_misses_nothing(services, tiny_model_dir):
    with services.client() as client:
        job = client.create_job(
            model=str(tiny_model_dir),
            dataset={"path": str(services.root / "alpaca_example.json")},
            hyperparameters={
                "max_steps": 100_000,
                "batch_size": 2,
                "max_seq_length": 64,
                "learning_rate": 1e-3,
            },
            report_interval_steps=1,
            checkpointing={"interval_steps": 100_000},
        )
    watch = subprocess.Popen(
        [*CLI, "watch", job.id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=services.env(),
        cwd=services.root,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(watch.stdout, lines), daemon=True).start()
    got: list[str] = []
    try:
        # Queued, starting, (logs), running, then a few steps: the job is live.
        wait_for_lines(lines, got, 8)
        stop(services.gateway, signal.SIGKILL)
        seen_at_kill = len(got)
        time.sleep(1.0)  # the watch finds nobody there and retries
        services.start_gateway()
        wait_for_lines(lines, got, seen_at_kill + 5)  # events again, through the new gateway
        with services.client() as client:
            client.cancel_job(job.id)
            final = client.get_job(job.id)
        assert watch.wait(timeout=120) == 1  # cancelled: not a success
    finally:
        if watch.poll() is None:
            watch.kill()
    while (line := lines.get(timeout=10)) is not None:
        got.append(line)

    events = [json.loads(line) for line in got]
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == list(range(1, len(events) + 1)), "every event exactly once, in order"
    assert events[-1]["state_change"]["state"] == "JOB_STATE_CANCELLED"
    with services.client() as client:
        assert client.get_job(job.id).last_event_sequence == sequences[-1]
    assert final.id == job.id
    stderr = watch.stderr.read()
    assert "reconnecting after event" in stderr and "Traceback" not in stderr
