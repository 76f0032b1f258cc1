"""Find a faster malloc (jemalloc or tcmalloc) to preload into the training worker on Linux.

mlx frees and allocates a step's buffers through its own cache, but the Python
side, the tokenizer and the compiled graph's bookkeeping go through malloc;
glibc's malloc is slower at that churn than jemalloc or tcmalloc. Whether that
shows in a step's time was measured on the real step (bench/RESULTS.md, "Trainer:
light frozen weights, allocator and OpenBLAS threads"): two runs disagreed, so
DEFAULT_ALLOCATOR stays glibc's.
A library that is not installed is simply not preloaded: found, used; absent, fine.

Environment:
- `TUNEWIRE_MALLOC=jemalloc|tcmalloc`: preload that one (if found).
- `TUNEWIRE_MALLOC=/path/to/libjemalloc.so.2`: preload this library.
- `TUNEWIRE_MALLOC=0`: preload none (glibc's malloc).

This module never imports mlx: the trainer daemon uses it to start workers.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from tunewire.trainer.processes.shared_libraries import ldconfig_libraries, same_machine

OVERRIDE_VAR = "TUNEWIRE_MALLOC"
DISABLED_VALUES = ("0", "off", "false", "no", "none", "glibc")
# Library file names of each allocator, best first (Debian: libjemalloc2, libtcmalloc-minimal4).
LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2",),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
}
# What the worker gets when TUNEWIRE_MALLOC is unset ("" : glibc's malloc). The one owner.
DEFAULT_ALLOCATOR = ""


def find_allocator(env: Mapping[str, str] | None = None) -> Path | None:
    """The allocator library to preload, or None (not Linux, disabled, none found).

    Raises ValueError when TUNEWIRE_MALLOC names neither a known allocator nor a file.
    """
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return None
    choice = env.get(OVERRIDE_VAR, DEFAULT_ALLOCATOR).strip()
    if not choice or choice.lower() in DISABLED_VALUES:
        return None
    if choice.lower() in LIBRARIES:
        return _installed(LIBRARIES[choice.lower()])
    path = Path(choice)
    if not path.is_file():
        raise ValueError(
            f"{OVERRIDE_VAR}={choice!r}: neither {' nor '.join(LIBRARIES)} nor a file; "
            f"point it at a malloc library or set {OVERRIDE_VAR}=0 for glibc's malloc"
        )
    return path


def _installed(names: tuple[str, ...]) -> Path | None:
    triplet = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    cached = ldconfig_libraries(lambda name: name in names)
    for name in names:
        candidates = [
            Path(f"/usr/lib/{triplet}/{name}"),
            Path(f"/usr/lib64/{name}"),
            *(p for p in cached if p.name == name),
            Path(f"/usr/local/lib/{name}"),
        ]
        for candidate in candidates:
            if candidate.is_file() and same_machine(candidate):
                return candidate
    return None


def allocator_in_use(pid: int | None = None) -> str:
    """Which malloc a process (default: this one) has mapped: "jemalloc", "tcmalloc" or "glibc"."""
    maps = Path(f"/proc/{'self' if pid is None else pid}/maps")
    if not maps.exists():
        return "glibc"
    text = maps.read_text()
    for kind, names in LIBRARIES.items():
        if any(name in text for name in names):
            return kind
    return "glibc"
