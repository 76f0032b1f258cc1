"""`tunewire e2e` against a stack this test starts: the seed's suite over the
seed's routes and /v1, with real training on the tiny model, its report
printed and written as JSON; and a report that says FAIL when a check fails."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from .conftest import start_stack
from .test_legacy_routes import EXAMPLES

pytestmark = pytest.mark.timeout(600)


async def run_e2e(log, *args: str) -> tuple[int, str]:
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tunewire.cli.main",
            "e2e",
            "--job-timeout",
            "240",
            "--timeout",
            "120",
            *args,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
        await asyncio.wait_for(process.wait(), timeout=540)
    return process.returncode, log.read_text()


async def test_e2e_command_passes_against_a_running_stack(tmp_path, tiny_model_dir):
    stack = await start_stack(tmp_path, tiny_model_dir, max_running_jobs=2, extra_roots=(EXAMPLES,))
    try:
        report_file = tmp_path / "e2e.json"
        code, out = await run_e2e(
            tmp_path / "e2e.out",
            "--url",
            stack.url,
            "--api-key",
            stack.keys["alice"],
            "--model",
            str(tiny_model_dir),
            "--report",
            str(report_file),
        )
        assert code == 0, out
        report = json.loads(report_file.read_text())
        assert report["failed"] == 0 and report["passed"] == report["total"] >= 9, report
        assert report["success_rate"] == 100.0
        assert all(report["features"].values()), report["features"]
        assert set(report["features"]) >= {"health", "dataset_validation", "lora", "qlora"}
        assert "Success rate: 100.0%" in out and "Feature checklist:" in out
        names = [t["name"] for t in report["tests"]]
        assert "auth refused without a key" in names

        # A wrong key: the checks that need one fail, and the command says so.
        code, out = await run_e2e(
            tmp_path / "wrong.out", "--url", stack.url, "--api-key", "tw_wrong", "--steps", "1"
        )
        assert code == 1
        assert "FAIL  validate alpaca example" in out and "Failed: 0" not in out
    finally:
        await stack.close()
