"""Several files as one deterministic tar archive (POSIX ustar), described as a
ByteSource without writing it anywhere.

Deterministic: members in the order given, times 0, owner root, mode 0644. The
same files give the same bytes, so the archive's size and SHA-256 hold across
calls and a download can resume with a byte range.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from tunewire.trainer.artifacts.byte_source import ByteSource, FileRegion

BLOCK = tarfile.BLOCKSIZE  # 512


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def tar_source(name: str, members: list[tuple[str, Path]]) -> ByteSource:
    """`members` as (name inside the archive, file on disk)."""
    segments: list = []
    for member, path in members:
        size = path.stat().st_size
        segments.append(_header(member, size))
        if size:
            segments.append(FileRegion(path, 0, size))
        padding = -size % BLOCK
        if padding:
            segments.append(bytes(padding))
    segments.append(bytes(2 * BLOCK))  # end of archive
    return ByteSource(name=name, content_type="application/x-tar", segments=segments)
