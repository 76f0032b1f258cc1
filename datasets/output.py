"""Writing canonical JSONL: atomic files, and the deterministic train/validation split.

A record goes to validation when a stable 64-bit hash of (seed, source line)
falls under the fraction: decided per record, so it streams, is the same in
every worker process and on every platform, and does not depend on which
other records were valid.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from array import array
from itertools import compress
from pathlib import Path
from typing import BinaryIO

from tunewire.datasets.canonical import render

_MASK64 = (1 << 64) - 1
_WRITEBACK_BYTES = 8 << 20


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
        """Appends a file's bytes (a worker's part), copied in the kernel where it can be."""
        with open(part, "rb") as source, open(self.temp, "r+b") as out:
            out.seek(0, os.SEEK_END)
            remaining = os.fstat(source.fileno()).st_size
            try:
                while remaining > 0:
                    copied = os.copy_file_range(source.fileno(), out.fileno(), remaining)
                    if copied == 0:
                        break
                    remaining -= copied
            except (AttributeError, OSError):
                pass  # not Linux, or not on this file system: copy in user space below
            if remaining > 0:
                source.seek(-remaining, os.SEEK_END)
                out.seek(0, os.SEEK_END)
                shutil.copyfileobj(source, out, 1 << 22)
                out.flush()
            start_writeback(out.fileno())

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
