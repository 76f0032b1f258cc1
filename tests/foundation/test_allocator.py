"""trainer/processes/allocator.py: the worker's environment preloads jemalloc or tcmalloc when
asked (or by default) and installed, nothing when absent, and mlx runs with it."""

import json
import os
import subprocess
import sys

import pytest

from tunewire.trainer.processes.allocator import (
    DEFAULT_ALLOCATOR,
    LIBRARIES,
    allocator_in_use,
    find_allocator,
)
from tunewire.trainer.processes.blas import worker_env

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's"),
]

PROBE = """
import json
import numpy as np
import mlx.core as mx
from tunewire.trainer.processes.allocator import allocator_in_use
from tunewire.trainer.processes.blas import blas_in_use
a = mx.random.normal((300, 200))
ok = bool(mx.allclose(a @ a.T, mx.array(np.array(a) @ np.array(a).T), atol=1e-3).item())
print(json.dumps({"malloc": allocator_in_use(), "blas": blas_in_use(), "ok": ok}))
"""


def clean_env(**extra) -> dict:
    drop = ("LD_PRELOAD", "TUNEWIRE_MALLOC")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def probe(env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", sorted(LIBRARIES))
def test_a_named_allocator_is_preloaded_when_installed_and_mlx_runs_with_it(kind):
    library = find_allocator(clean_env(TUNEWIRE_MALLOC=kind))
    env = worker_env(clean_env(TUNEWIRE_MALLOC=kind))
    if library is None:  # absent: fine, nothing preloaded
        assert all(n not in env.get("LD_PRELOAD", "") for n in LIBRARIES[kind])
        pytest.skip(f"{kind} is not installed (Debian: libjemalloc2, libtcmalloc-minimal4)")
    assert env["LD_PRELOAD"].split(":")[0] == str(library)  # first, so its malloc wins
    assert probe(env)["malloc"] == kind and probe(env)["ok"]


def test_off_means_glibcs_malloc_and_the_default_is_the_one_owner():
    env = worker_env(clean_env(TUNEWIRE_MALLOC="0"))
    assert all(n not in env.get("LD_PRELOAD", "") for names in LIBRARIES.values() for n in names)
    assert probe(env)["malloc"] == "glibc"
    default = find_allocator(clean_env())
    assert default == (find_allocator(clean_env(TUNEWIRE_MALLOC=DEFAULT_ALLOCATOR or "0")))


def test_a_bad_setting_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match="TUNEWIRE_MALLOC='mimalloc': neither jemalloc nor"):
        find_allocator({"TUNEWIRE_MALLOC": "mimalloc"})
    library = tmp_path / "libcustom.so"
    library.write_bytes(b"\x7fELF")
    assert find_allocator({"TUNEWIRE_MALLOC": str(library)}) == library
    assert allocator_in_use() in ("glibc", *LIBRARIES)
