"""What scanning some records found (`Partial`), and the report made of it.

A `RecordScanner` fills one Partial for a whole file, or one per byte range
in worker processes (parallel.py), small enough to send between processes
and merge in file order; `build_report` turns the file's Partial into its
ValidationReport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.options import ValidationOptions
from tunewire.datasets.report import DatasetFormat, Statistics, ValidationReport
from tunewire.datasets.source import Layout
from tunewire.datasets.tokens import preview


@dataclass
class Partial:
    """What scanning some records found; partials of consecutive ranges merge in order."""

    log: IssueLog
    total: int = 0
    valid: int = 0
    turns: int = 0
    characters: int = 0
    tokens: int = 0
    previews: list[dict] = field(default_factory=list)
    file_format: DatasetFormat | None = None
    format_line: int = 0  # line of the first record in the file's format
    unknown_fields: list[Issue] = field(default_factory=list)  # once per field name, kept whole
    # The first line of each format other than the file's.
    other_formats: dict[DatasetFormat, int] = field(default_factory=dict)
    # line -> earlier line, for the first duplicates (workers' are renamed when merged)
    duplicate_of: dict[int, int] = field(default_factory=dict)


def build_report(
    part: Partial,
    layout: Layout | None,
    size_bytes: int,
    options: ValidationOptions,
    tokenizer: Any,
) -> ValidationReport:
    log = part.log
    report = ValidationReport(
        valid=log.error_count == 0 and part.valid > 0,
        format=part.file_format,
        layout=layout,
        total_samples=part.total,
        valid_samples=part.valid,
        error_count=log.error_count,
        warning_count=log.warning_count,
        errors=log.errors[: options.max_issues],
        warnings=log.warnings[: options.max_issues],
        issue_counts=dict(log.counts),
        statistics=Statistics(
            records=part.valid, turns=part.turns, characters=part.characters, tokens=part.tokens
        ),
        size_bytes=size_bytes,
    )
    report.sample_preview = [
        preview(tokenizer, record, options.loss_masking)
        for record in part.previews[: options.preview_records]
    ]
    return report
