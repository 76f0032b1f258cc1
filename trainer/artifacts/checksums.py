"""SHA-256 of files, computed once per version of a file (path, size, mtime) and
remembered, so a resumed or repeated download does not read a model twice."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from pathlib import Path

from tunewire.trainer.artifacts.byte_source import ByteSource

_CACHE: OrderedDict[tuple, str] = OrderedDict()
_CACHE_SIZE = 4096
READ_BYTES = 4 << 20


def _key(paths: list[Path], extra: str) -> tuple:
    return (extra, *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths))


def _remember(key: tuple, value: str) -> str:
    _CACHE[key] = value
    _CACHE.move_to_end(key)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_BYTES):
            digest.update(data)
    return digest.hexdigest()


async def file_sha256(path: Path) -> str:
    key = _key([path], "file")
    if key in _CACHE:
        return _CACHE[key]
    return _remember(key, await asyncio.to_thread(_file_sha256, path))


async def source_sha256(source: ByteSource, files: list[Path]) -> str:
    """The SHA-256 of a source built from `files` (an archive of them)."""
    key = _key(files, f"source:{source.name}:{source.size}")
    if key in _CACHE:
        return _CACHE[key]
    return _remember(key, await asyncio.to_thread(source.sha256))
