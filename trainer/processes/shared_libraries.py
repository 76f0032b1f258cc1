"""Shared libraries on this machine: the dynamic linker's cache, and which files this
interpreter can load. Used to find the libraries preloaded into the worker (OpenBLAS,
the allocator). Never imports mlx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def ldconfig_libraries(accept: Callable[[str], bool]) -> list[Path]:
    """Paths of the libraries in the dynamic linker's cache (`ldconfig -p`) whose name
    `accept` takes."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listing = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    paths = []
    for line in listing.splitlines():
        # "\tlibopenblas.so.0 (libc6,x86-64) => /lib/x86_64-linux-gnu/libopenblas.so.0"
        name, _, target = line.strip().partition(" => ")
        if target and accept(name):
            paths.append(Path(target.strip()))
    return paths


def same_machine(library: Path) -> bool:
    """True when `library` is an ELF file for this interpreter's class and CPU.

    Guards against preloading, say, an i386 library on a multiarch system:
    the dynamic linker would refuse it with a warning on every start.
    """
    try:
        with open(library, "rb") as f, open(sys.executable, "rb") as exe:
            lib_header, exe_header = f.read(20), exe.read(20)
    except OSError:
        return False
    # e_ident[0:4] magic, [4] class, [5] byte order; bytes 18-19: e_machine.
    return lib_header[:6] == exe_header[:6] and lib_header[18:20] == exe_header[18:20]
