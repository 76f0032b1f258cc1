"""trainer/blas.py: the worker's environment preloads OpenBLAS, and mlx then uses it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunewire.trainer.processes.blas import blas_in_use, find_openblas, worker_env

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's"),
]

# A matmul through mlx, checked against numpy (numpy has its own BLAS), and the
# BLAS the process reports.
MATMUL_PROBE = """
import json
import numpy as np
import mlx.core as mx
from tunewire.trainer.processes.blas import blas_in_use
rng = np.random.default_rng(0)
a, b = rng.standard_normal((256, 384), dtype=np.float32), rng.standard_normal((384, 128), dtype=np.float32)
product = np.array(mx.matmul(mx.array(a), mx.array(b)))
print(json.dumps({"blas": blas_in_use(), "max_error": float(np.abs(product - a @ b).max())}))
"""


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNEWIRE_OPENBLAS")}
    return {**env, **extra}


def run_probe(env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MATMUL_PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def require_openblas() -> Path:
    library = find_openblas(clean_env())
    if library is None:
        pytest.skip(
            "no OpenBLAS on this machine (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
        )
    return library


def test_worker_env_makes_mlx_use_openblas():
    library = require_openblas()
    env = worker_env(clean_env())
    assert env["LD_PRELOAD"] == str(library)
    report = run_probe(env)
    assert report["blas"] == "openblas"
    assert report["max_error"] < 1e-3  # the preloaded BLAS computes the right product


def test_without_openblas_mlx_keeps_its_reference_blas():
    env = worker_env(clean_env(TUNEWIRE_OPENBLAS="0"))
    assert "LD_PRELOAD" not in env
    report = run_probe(env)
    assert report["blas"] == "reference"
    assert report["max_error"] < 1e-3


def test_blas_in_use_reads_another_process():
    require_openblas()
    # The child says it is running (its libraries are loaded), then waits for
    # its stdin to close, so it is alive while we look.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=worker_env(clean_env()),
    )
    try:
        assert child.stdout.readline() == "ready\n"
        assert blas_in_use(child.pid) == "openblas"
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()
    preloaded_here = "libopenblas" in os.environ.get("LD_PRELOAD", "")
    assert blas_in_use() == ("openblas" if preloaded_here else "reference")


def test_override_names_the_library_or_disables_it(tmp_path):
    library = tmp_path / "libopenblas.so.0"
    library.write_bytes(b"\x7fELF")
    assert find_openblas({"TUNEWIRE_OPENBLAS": str(library)}) == library
    assert find_openblas({"TUNEWIRE_OPENBLAS": "0"}) is None
    missing = tmp_path / "nowhere" / "libopenblas.so.0"
    with pytest.raises(ValueError, match=f"TUNEWIRE_OPENBLAS='{missing}': no such file"):
        find_openblas({"TUNEWIRE_OPENBLAS": str(missing)})


def test_worker_env_keeps_other_preloads_and_sets_threads_when_asked(tmp_path):
    library = tmp_path / "libopenblas.so.0"
    library.write_bytes(b"\x7fELF")
    base = {"TUNEWIRE_OPENBLAS": str(library), "LD_PRELOAD": "/opt/profiler.so", "PATH": "/bin"}
    env = worker_env(base)
    assert env["LD_PRELOAD"] == f"{library}:/opt/profiler.so"
    assert "OPENBLAS_NUM_THREADS" not in env  # OpenBLAS's default: the CPUs we may use
    assert worker_env(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # never preloaded twice
    assert base["LD_PRELOAD"] == "/opt/profiler.so"  # the caller's mapping is not changed
    assert worker_env(base, threads=2)["OPENBLAS_NUM_THREADS"] == "2"
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        worker_env(base, threads=0)
