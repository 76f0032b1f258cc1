"""Opening a dataset file: gzip by magic bytes, the UTF-8 BOM, and the layout.

A source is read in large binary chunks so memory stays bounded whatever the
file size. Compression and layout are decided from the bytes, never from the
file name: gzip is unpacked on the fly; other archive formats are named and
refused; the first non-blank character decides JSON array (`[`) or JSONL.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
# Formats people zip datasets in that we do not unpack: named so the message helps.
_OTHER_ARCHIVES = {
    b"PK\x03\x04": "zip",
    b"(\xb5/\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"7z\xbc\xaf\x27\x1c": "7z",
}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_JSON_SPACE = b" \t\r\n"


class Layout(str, Enum):
    JSON_ARRAY = "json_array"
    JSONL = "jsonl"


class SourceError(Exception):
    """The bytes cannot be read as a dataset at all (wrong encoding or archive, corrupt gzip)."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


class _Prefixed:
    """A read()-able stream that first returns bytes already sniffed from `raw`."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                head, self._head = self._head, b""
                rest = self._raw.read(-1 if size < 0 else size - len(head))
                return head + rest
            head, self._head = self._head[:size], self._head[size:]
            return head
        return self._raw.read(size)


@dataclass
class OpenedSource:
    """The decoded byte stream of a source, with what was learnt while sniffing it."""

    chunks: Iterator[bytes]  # decompressed bytes, BOM removed; chunk boundaries are arbitrary
    layout: Layout | None  # None: nothing but whitespace (an empty file)
    compressed: bool
    first_line: int = 1  # line number of the first byte of `chunks`


def _read_chunks(stream, chunk_bytes: int, compressed: bool) -> Iterator[bytes]:
    while True:
        try:
            chunk = stream.read(chunk_bytes)
        except (EOFError, OSError, zlib.error) as exc:
            # Raised mid-file for a truncated or corrupt gzip stream.
            kind = "gzip stream" if compressed else "file"
            raise SourceError(f"the {kind} is corrupt or truncated: {exc}") from exc
        if not chunk:
            return
        yield chunk


def open_source(raw: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> OpenedSource:
    """Sniffs `raw` (a binary stream) and returns its decoded chunks and layout.

    Raises SourceError for files that are not UTF-8 JSON at all (UTF-16, zip, ...).
    """
    head = raw.read(8)
    compressed = head.startswith(_GZIP_MAGIC)
    if compressed:
        stream = gzip.GzipFile(fileobj=_Prefixed(head, raw), mode="rb")
    else:
        for magic, name in _OTHER_ARCHIVES.items():
            if head.startswith(magic):
                raise SourceError(
                    f"the file is a {name} archive; tunewire reads JSON or JSONL, "
                    "plain or gzip-compressed (.gz)"
                )
        stream = _Prefixed(head, raw)
    chunks = _read_chunks(stream, chunk_bytes, compressed)

    # Find the first non-blank byte (after an optional BOM) to decide the layout.
    # Blank chunks before it are dropped: their newlines are counted as lines and
    # the blanks after the last newline kept, so columns stay right.
    skipped_lines = 0
    indent = b""
    first = True
    for chunk in chunks:
        if first:
            first = False
            if chunk.startswith(_UTF8_BOM):
                chunk = chunk[len(_UTF8_BOM) :]
            elif chunk.startswith(_UTF16_BOMS):
                raise SourceError(
                    "the file is UTF-16 encoded (it starts with a UTF-16 byte order mark); "
                    "save it as UTF-8"
                )
        stripped = chunk.lstrip(_JSON_SPACE)
        if not stripped:
            newlines = chunk.count(b"\n")
            skipped_lines += newlines
            indent = (indent + chunk if not newlines else chunk[chunk.rfind(b"\n") + 1 :])[-4096:]
            continue
        layout = Layout.JSON_ARRAY if stripped[:1] == b"[" else Layout.JSONL
        return OpenedSource(_chain(indent + chunk, chunks), layout, compressed, skipped_lines + 1)
    return OpenedSource(iter(()), None, compressed, skipped_lines + 1)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
