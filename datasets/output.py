"""Writing canonical JSONL: atomic files, and the deterministic train/validation split.

A record goes to validation when a stable 64-bit hash of (seed, source line)
falls under the fraction: decided per record, so it streams, is the same in
every worker process and on every platform, and does not depend on which
other records were valid.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from array import array
from itertools import compress
from pathlib import Path
from typing import BinaryIO

from tunewire.datasets.canonical import render

_MASK64 = (1 << 64) - 1
_WRITEBACK_BYTES = 8 << 20
_APPEND_STEP = 16 << 20  # at most this much of a part is on disk twice while it is appended


def mix64(value: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit hash of an integer."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class _WritebackFile(io.FileIO):
    """A file that asks the kernel to start writing each 8 MiB to disk once written."""

    _written = _started = 0  # bytes written; bytes whose writing to disk was started

    def write(self, data) -> int:
        written = super().write(data)
        self._written += written
        if self._written - self._started >= _WRITEBACK_BYTES:
            start_writeback(self.fileno(), self._started, self._written - self._started)
            self._started = self._written
        return written


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Has the kernel start writing a file's dirty pages to disk, without waiting (Linux).

    Left to itself it writes a fresh file out only when it is fsync'ed (after
    half a minute, or once much memory is dirty), so the fsync before commit
    would wait for the whole file: about half a second per GB here.
    POSIX_FADV_DONTNEED starts the writing on Linux; elsewhere this does nothing.
    `length` 0: to the end of the file.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _copy_range(src: int, dst: int, src_offset: int, dst_offset: int, count: int) -> None:
    """count bytes of src from src_offset to dst at dst_offset (copy_file_range on Linux)."""
    while count > 0:
        try:
            copied = os.copy_file_range(src, dst, count, src_offset, dst_offset)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                raise
            copied = 0  # not Linux, or not between these files: copy in user space
        if copied == 0:
            data = os.pread(src, min(count, 1 << 22), src_offset)
            if not data:
                raise OSError(errno.EIO, "a part file ended early", None)
            copied = os.pwrite(dst, data, dst_offset)
        src_offset += copied
        dst_offset += copied
        count -= copied


def open_output(path: str | os.PathLike) -> BinaryIO:
    """A buffered file for canonical lines, its writing to disk started as it grows."""
    return io.BufferedWriter(_WritebackFile(path, "wb"), buffer_size=1 << 20)


class AtomicFile:
    """A file written under a temporary name in its directory and renamed into place on commit.

    Writers (this process or a worker) open `temp` themselves; `open` is
    the usual way.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.temp = Path(temp)

    def open(self) -> BinaryIO:
        return open_output(self.temp)

    def append(self, part: Path) -> None:
        """Moves a file's bytes (a worker's part) to the end of this one and removes it.

        Never both copies of a block on disk: this file is extended first
        (sparse), then filled from the part's end backwards, the part cut
        shorter after each step. Copied in the kernel where it can be.
        """
        with open(part, "r+b") as source, open(self.temp, "r+b") as out:
            src, dst = source.fileno(), out.fileno()
            size = os.fstat(src).st_size
            base = os.fstat(dst).st_size
            os.ftruncate(dst, base + size)
            end = size
            while end > 0:
                start = max(0, end - _APPEND_STEP)
                _copy_range(src, dst, start, base + start, end - start)
                os.ftruncate(src, start)
                end = start
            start_writeback(dst)
        part.unlink()

    def commit(self) -> None:
        with open(self.temp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)


class SplitWriter:
    """Writes canonical records, a batch at a time, to the training or validation file.

    A batch costs one Python call (canonical.render), and its split comes
    from decisions numpy computed for many lines ahead: per record in Python,
    the hash and the calls cost about a microsecond, a tenth of the budget.
    """

    def __init__(
        self, train: BinaryIO, validation: BinaryIO | None, fraction: float, seed: int
    ) -> None:
        self._train = train
        self._validation = validation
        self._threshold = int(fraction * (1 << 64)) if validation is not None else 0
        self._seed = mix64(seed & _MASK64)
        self._first = self._end = 0  # lines [first, end) have their decisions in _window
        self._window = b""
        self.counts = [0, 0]  # records written to training, validation

    def write_batch(self, records: list, lines: array) -> None:
        """Writes records (see canonical.render) whose source lines are `lines` (int64)."""
        if not records:
            return
        held_out = self.decisions(lines) if self._threshold else None
        if held_out is None or not any(held_out):
            train = records
        else:
            train = list(compress(records, [not held for held in held_out]))
            validation = list(compress(records, held_out))
            self.counts[1] += len(validation)
            _write(self._validation, validation)
        self.counts[0] += len(train)
        _write(self._train, train)

    def write_lines(self, block: memoryview, ends: list[int], lines: array) -> None:
        """Writes canonical lines already rendered: `block`, cut after each of `ends`.

        Consecutive lines bound for the same file are written in one call.
        """
        if not ends:
            return
        held_out = self.decisions(lines) if self._threshold else None
        if held_out is None or not any(held_out):
            self.counts[0] += len(ends)
            self._train.write(block[: ends[-1]])
            return
        start = 0
        run_start, run_held = 0, held_out[0]
        for end, held in zip(ends, held_out):
            if held != run_held:
                (self._validation if run_held else self._train).write(block[run_start:start])
                run_start, run_held = start, held
            start = end
            self.counts[1 if held else 0] += 1
        (self._validation if run_held else self._train).write(block[run_start:start])

    def held_out(self, line: int) -> bool:
        """Whether the record at `line` goes to validation: mix64(seed + line) < threshold."""
        return bool(self._threshold) and mix64((self._seed + line) & _MASK64) < self._threshold

    def decisions(self, lines: array) -> list:
        """Each line's decision (truthy: validation), from a window numpy computes ahead."""
        if not (self._first <= lines[0] and lines[-1] < self._end) and (
            self.counts[0] + self.counts[1] < _NUMPY_RECORDS or not self._decide(lines)
        ):
            return [self.held_out(line) for line in lines]  # a small file spares numpy
        first, window = self._first, self._window
        return [window[line - first] for line in lines]

    def _decide(self, lines: array) -> bool:
        """Decisions for the _WINDOW lines from lines[0]; False if they do not reach the last."""
        import numpy as np

        first = lines[0]
        # splitmix64's finalizer in uint64 arithmetic, which wraps like the masks in mix64.
        z = np.arange(first, first + _WINDOW, dtype=np.uint64)
        z += np.uint64((self._seed + 0x9E3779B97F4A7C15) & _MASK64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        self._window = (z < np.uint64(self._threshold)).tobytes()
        self._first, self._end = first, first + _WINDOW
        return lines[-1] < self._end


_NUMPY_RECORDS = 4096  # records written before the split is decided with numpy
_WINDOW = 1 << 16


def _write(out: BinaryIO, records: list) -> None:
    out.writelines(render(records))
