"""A file to send, as an ordered list of segments (bytes in memory, or a region of a
file on disk), read in chunks over any byte range: the one helper every download
RPC streams through (artifacts, archives of them, exports).

Reads happen in a worker thread, one chunk at a time, so a slow client holds
one chunk of memory and never the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileRegion:
    path: Path
    start: int
    length: int


Segment = bytes | FileRegion


@dataclass
class ByteSource:
    """The bytes of one downloadable file, described but not read."""

    name: str
    content_type: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(s) if isinstance(s, bytes) else s.length for s in self.segments)

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[Segment, int, int]]:
        """(segment, start inside it, bytes) covering [offset, offset + length)."""
        position, end = 0, offset + length
        for segment in self.segments:
            size = len(segment) if isinstance(segment, bytes) else segment.length
            lo, hi = max(offset, position), min(end, position + size)
            if lo < hi:
                yield segment, lo - position, hi - lo
            position += size
            if position >= end:
                return

    def read_blocks(self, offset: int, length: int, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes of [offset, offset + length), at most `chunk` at a time (blocking)."""
        for segment, start, size in self._pieces(offset, length):
            if isinstance(segment, bytes):
                for i in range(start, start + size, chunk):
                    yield segment[i : min(i + chunk, start + size)]
                continue
            with open(segment.path, "rb") as f:
                f.seek(segment.start + start)
                left = size
                while left:
                    data = f.read(min(chunk, left))
                    if not data:
                        raise OSError(f"{segment.path.name} shrank while being read")
                    left -= len(data)
                    yield data

    async def read(
        self, offset: int = 0, length: int | None = None, chunk: int = CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The same, each chunk read in a thread."""
        length = self.size - offset if length is None else length
        blocks = self.read_blocks(offset, length, chunk)
        done = object()
        while (data := await asyncio.to_thread(next, blocks, done)) is not done:
            yield data

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for data in self.read_blocks(0, self.size):
            digest.update(data)
        return digest.hexdigest()


def file_source(path: Path, name: str | None = None, content_type: str = "") -> ByteSource:
    size = path.stat().st_size
    return ByteSource(
        name=name or path.name,
        content_type=content_type or content_type_of(path.name),
        segments=[FileRegion(path, 0, size)] if size else [],
    )


def content_type_of(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".tar"):
        return "application/x-tar"
    if name.endswith((".jsonl", ".txt", ".csv")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"
