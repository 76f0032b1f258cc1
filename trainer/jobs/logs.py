"""Pages of a job's log file: whole lines from a byte offset, or the last lines.

The log is the worker's stdout and stderr, appended to while the job runs; a
page ends at the last complete line, so a reader following it never sees half a
line and the next page starts where this one ended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LINES = 200
MAX_PAGE_BYTES = 1 << 20
MAX_LINE_BYTES = 16 << 10


@dataclass(frozen=True)
class LogPage:
    lines: list[str]
    next_offset: int  # where the next page starts
    size: int  # the file's size when read
    at_end: bool


def read_page(
    path: Path, offset: int, lines: int, *, tail: bool = False, secrets: tuple[str, ...] = ()
) -> LogPage:
    """Up to `lines` whole lines from `offset` (or, with `tail`, the last `lines`);
    the trainer's own `secrets`, should a worker print one, are blanked out."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # a job that has not started yet has no log
        return LogPage([], 0, 0, True)
    with f:
        size = os.fstat(f.fileno()).st_size
        if tail:
            offset = _tail_start(f, size, lines)
        offset = min(max(0, offset), size)
        f.seek(offset)
        data = f.read(min(MAX_PAGE_BYTES, size - offset))
    out: list[str] = []
    used = 0
    for raw in data.splitlines(keepends=True):
        if len(out) == lines:
            break
        if not raw.endswith(b"\n") and len(raw) < MAX_LINE_BYTES:
            break  # the line being written: the next page starts at it
        used += len(raw)
        out.append(_text(raw))
    # One line longer than a whole page: hand out its first part rather than stall.
    if not out and data and len(data) >= MAX_PAGE_BYTES:
        used = len(data)
        out.append(_text(data))
    next_offset = offset + used
    for secret in (s for s in secrets if len(s) >= 8):
        out = [line.replace(secret, "[redacted]") for line in out]
    return LogPage(out, next_offset, size, next_offset >= size)


def _text(raw: bytes) -> str:
    line = raw.rstrip(b"\r\n")
    cut = len(line) > MAX_LINE_BYTES
    text = line[:MAX_LINE_BYTES].decode("utf-8", "replace")
    return text + " [line cut]" if cut else text


def _tail_start(f, size: int, lines: int) -> int:
    """The offset of the `lines`-th last complete line (reading back at most a page)."""
    start = max(0, size - MAX_PAGE_BYTES)
    f.seek(start)
    data = f.read(size - start)
    end = data.rfind(b"\n") + 1  # complete lines only
    if end == 0:
        return start if start == 0 else size
    found = 0
    pos = end - 1
    while pos > 0:
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            break
        found += 1
        if found == lines:
            return start + pos + 1
    if start > 0:  # the first line of the window may be a part: skip it
        first = data.find(b"\n")
        return start + first + 1
    return 0
