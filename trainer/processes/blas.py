"""Find OpenBLAS and preload it into the training worker on Linux.

mlx's Linux CPU wheel links a bundled reference BLAS that multiplies float32
matrices at a few GFLOP/s; OpenBLAS does the same work 20-40x faster (see
bench/RESULTS.md). mlx calls `cblas_sgemm` through the dynamic linker, so
putting OpenBLAS in the worker's LD_PRELOAD makes mlx use it, with no rebuild.
On macOS mlx uses Accelerate and nothing is needed.

Environment:
- `TUNEWIRE_OPENBLAS=/path/to/libopenblas.so.0`: use this library.
- `TUNEWIRE_OPENBLAS=0`: never preload (mlx's own BLAS; slow but always there).

This module never imports mlx: the trainer daemon uses it to start workers.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from tunewire.trainer.processes.allocator import find_allocator
from tunewire.trainer.processes.shared_libraries import ldconfig_libraries, same_machine

OVERRIDE_VAR = "TUNEWIRE_OPENBLAS"
DISABLED_VALUES = ("0", "off", "false", "no")


def find_openblas(env: Mapping[str, str] | None = None) -> Path | None:
    """The OpenBLAS shared library to preload, or None (not Linux, disabled, not found).

    Prefers the pthread build (what mlx's single compute thread wants); the
    OpenMP or serial builds are used when they are all there is. Raises
    ValueError when TUNEWIRE_OPENBLAS names a file that does not exist.
    """
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return None
    override = env.get(OVERRIDE_VAR, "").strip()
    if override.lower() in DISABLED_VALUES:
        return None
    if override:
        path = Path(override)
        if not path.is_file():
            raise ValueError(
                f"{OVERRIDE_VAR}={override!r}: no such file; point it at libopenblas.so.0 "
                f"or set {OVERRIDE_VAR}=0 to run without OpenBLAS"
            )
        return path
    for candidate in _candidates(env):
        if candidate.is_file() and same_machine(candidate):
            return candidate
    return None


def _candidates(env: Mapping[str, str]) -> list[Path]:
    """Likely paths, best first: distribution pthread builds, then ldconfig's cache."""
    triplet = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    paths = [
        Path(f"/usr/lib/{triplet}/openblas-pthread/libopenblas.so.0"),  # Debian, Ubuntu
        Path("/usr/lib64/libopenblasp.so.0"),  # Fedora, RHEL (pthread build)
    ]
    cached = ldconfig_libraries(lambda name: name.startswith("libopenblas") and "64_" not in name)
    paths += [p for p in cached if p.name.startswith("libopenblasp")]
    paths += [p for p in cached if p.name == "libopenblas.so.0"]
    paths += [
        Path(f"/usr/lib/{triplet}/libopenblas.so.0"),
        Path("/usr/lib64/libopenblas.so.0"),
        Path("/usr/lib/libopenblas.so.0"),  # Arch
        Path("/usr/local/lib/libopenblas.so.0"),
    ]
    if env.get("CONDA_PREFIX"):
        paths.append(Path(env["CONDA_PREFIX"]) / "lib" / "libopenblas.so.0")
    return paths


def worker_env(base_env: Mapping[str, str] | None = None, threads: int | None = None) -> dict:
    """The environment for a worker process: `base_env` plus OpenBLAS (and the allocator
    `allocator.find_allocator` picks, if any) in LD_PRELOAD.

    Unchanged (a copy) when neither is found, on macOS, or when disabled.
    OPENBLAS_NUM_THREADS is left alone unless `threads` is given: OpenBLAS
    already uses the CPUs the process may run on, which is right for one job at
    a time; a trainer running jobs side by side passes each its share.
    """
    env = dict(os.environ if base_env is None else base_env)
    library = find_openblas(env)
    _preload(env, library)
    _preload(env, find_allocator(env))  # first: its malloc wins over every other library's
    if library is None:
        return env
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def _preload(env: dict, library: Path | None) -> None:
    """Put `library` first in env's LD_PRELOAD (once)."""
    if library is None:
        return
    # glibc accepts spaces or colons between LD_PRELOAD entries.
    preloaded = [p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    if str(library) not in preloaded:
        env["LD_PRELOAD"] = ":".join([str(library), *preloaded])


def blas_in_use(pid: int | None = None) -> str:
    """Which BLAS a process (default: this one) has: "openblas", "reference" or "accelerate".

    On Linux it reads /proc/PID/maps: a preloaded OpenBLAS is mapped from the
    process's start, before mlx is imported. "reference" means mlx would use
    the BLAS bundled in its wheel. On macOS mlx always uses Accelerate. Raises
    OSError when another process's maps cannot be read (gone, not ours).
    """
    if sys.platform == "darwin":
        return "accelerate"
    if pid is None and not Path("/proc/self/maps").exists():
        return "reference"  # a Linux without /proc: nothing can be preloaded we could see
    text = Path(f"/proc/{'self' if pid is None else pid}/maps").read_text()
    for line in text.splitlines():
        name = line.rsplit("/", 1)[-1]
        # numpy's bundled `libscipy_openblas64_` / `libopenblas64_` export
        # suffixed symbols that mlx never calls, so they do not count.
        if name.startswith("libopenblas") and "64_" not in name:
            return "openblas"
    return "reference"
