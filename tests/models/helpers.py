"""Helpers of the real-model tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tunewire.trainer.processes.blas import worker_env

PROBE = Path(__file__).with_name("probe.py")


def probe(*args: str, timeout: float = 240) -> dict:
    """Run probe.py (mlx) in a subprocess with OpenBLAS, as the worker runs; its JSON result."""
    done = subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**worker_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
