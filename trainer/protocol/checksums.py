"""SHA-256 of a file, the same on both sides: the worker writes a checkpoint's
checksums with it, the daemon checks them before resuming from it. mlx-free."""

from __future__ import annotations

import hashlib
from pathlib import Path

READ_BYTES = 4 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_BYTES):
            digest.update(data)
    return digest.hexdigest()
