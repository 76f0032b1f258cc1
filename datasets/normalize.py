"""Normalizing a dataset: every valid record as a canonical conversation, split train/validation.

Written in the same streaming pass as validation (in parallel for a large
plain JSONL file). Files appear atomically: written under a temporary name in
the output directory and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from tunewire.datasets import parallel
from tunewire.datasets.options import ValidationOptions
from tunewire.datasets.output import AtomicFile, SplitWriter
from tunewire.datasets.report import Statistics, ValidationReport
from tunewire.datasets.validate import scan

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "valid.jsonl"  # mlx-lm's name for it


@dataclass
class NormalizeResult:
    train_path: Path
    validation_path: Path | None  # None when validation_fraction is 0
    report: ValidationReport
    statistics: Statistics  # the report's, with train_records and validation_records filled


def normalize_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    validation_fraction: float = 0.0,
    seed: int = 0,
    options: ValidationOptions | None = None,
) -> NormalizeResult:
    """Validates `path` and writes its valid records to `out_dir`/train.jsonl (and valid.jsonl).

    Records with errors are left out; whether an invalid file should be used
    at all is the caller's decision (`result.report.valid`). A record goes to
    validation by a stable hash of (seed, its source line), so the split is
    reproducible. Raises OSError when the file cannot be read.
    """
    options = options or ValidationOptions()
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = parallel.plan(path, options)
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb")) if plan is None else None
        train = AtomicFile(out / TRAIN_FILE)
        held_out = AtomicFile(out / VALIDATION_FILE) if validation_fraction > 0 else None
        try:
            if plan is not None:
                report = parallel.run(plan, options, (train, held_out, validation_fraction, seed))
            else:
                report = _scan_here(raw, options, train, held_out, validation_fraction, seed)
        except BaseException:
            train.discard()
            if held_out is not None:
                held_out.discard()
            raise
    train.commit()
    if held_out is not None:
        held_out.commit()
    return NormalizeResult(
        train.path, held_out.path if held_out else None, report, report.statistics
    )


def _scan_here(
    raw, options, train: AtomicFile, held_out: AtomicFile | None, fraction: float, seed: int
):
    with contextlib.ExitStack() as stack:
        train_file = stack.enter_context(train.open())
        held_out_file = stack.enter_context(held_out.open()) if held_out else None
        writer = SplitWriter(train_file, held_out_file, fraction, seed)
        report = scan(raw, options, writer)
    report.statistics.train_records, report.statistics.validation_records = writer.counts
    return report
