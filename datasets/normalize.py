"""Normalizing a dataset: every valid record as a canonical conversation, split train/validation.

Written in the same streaming pass as validation. Files appear atomically
(written to a temporary name in the output directory, then renamed), so a
reader never sees half a file. The split is decided per record by a stable
hash of (seed, index of the valid record): reproducible, streaming, and the
same on every platform and Python version.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tunewire.datasets.report import Statistics, ValidationReport
from tunewire.datasets.validate import ValidationOptions, scan

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "valid.jsonl"  # mlx-lm's name for it
_MASK64 = (1 << 64) - 1
_WRITE_BATCH = 256  # lines joined per write() call


@dataclass
class NormalizeResult:
    train_path: Path
    validation_path: Path | None  # None when validation_fraction is 0
    report: ValidationReport
    statistics: Statistics


def _mix64(value: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit hash of an integer."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class _AtomicFile:
    """A text file written under a temporary name and renamed into place on success."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, self._temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.file: TextIO = os.fdopen(fd, "w", encoding="ascii", newline="\n", buffering=1 << 20)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self._temp, self.path)

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass


def normalize_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    validation_fraction: float = 0.0,
    seed: int = 0,
    options: ValidationOptions = ValidationOptions(),
) -> NormalizeResult:
    """Validates `path` and writes its valid records to `out_dir`/train.jsonl (and valid.jsonl).

    Records with errors are left out; whether an invalid file should be used
    at all is the caller's decision (`result.report.valid`).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as raw:
        train = _AtomicFile(out / TRAIN_FILE)
        held_out = _AtomicFile(out / VALIDATION_FILE) if validation_fraction > 0 else None
        try:
            report, counts = _normalize(raw, options, train, held_out, validation_fraction, seed)
        except BaseException:
            train.discard()
            if held_out is not None:
                held_out.discard()
            raise
        train.commit()
        if held_out is not None:
            held_out.commit()
    report.statistics.train_records, report.statistics.validation_records = counts
    return NormalizeResult(
        train.path, held_out.path if held_out else None, report, report.statistics
    )


def _normalize(raw, options, train: _AtomicFile, held_out, fraction: float, seed: int):
    threshold = int(fraction * (1 << 64))
    seed_mix = _mix64(seed & _MASK64)
    pending: dict[bool, list[str]] = {False: [], True: []}
    files = {False: train.file, True: held_out.file if held_out else None}
    counts = [0, 0]

    def emit(line: str) -> None:
        to_validation = threshold > 0 and _mix64((seed_mix + counts[0] + counts[1]) & _MASK64) < threshold
        counts[to_validation] += 1
        batch = pending[to_validation]
        batch.append(line)
        if len(batch) >= _WRITE_BATCH:
            files[to_validation].write("".join(batch))
            batch.clear()

    report = scan(raw, options, emit)
    for to_validation, batch in pending.items():
        if batch:
            files[to_validation].write("".join(batch))
    return report, (counts[0], counts[1])
