"""Validating a dataset: every problem, with its line, in one streaming pass and bounded memory.

`validate_file` and `validate_bytes` are the entry points; `scan` is the pass
itself over any binary stream (optionally writing canonical records, see
normalize.py). A large plain JSONL file is split into byte ranges checked by
worker processes in parallel (parallel.py); the report is the same either way.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.json_array import read_json_array
from tunewire.datasets.jsonl import read_jsonl
from tunewire.datasets.masking import MODES
from tunewire.datasets.output import SplitWriter
from tunewire.datasets.report import Statistics, ValidationReport
from tunewire.datasets.scanner import Partial, RecordScanner
from tunewire.datasets.source import Layout, SourceError, open_source


@dataclass(frozen=True)
class ValidationOptions:
    max_issues: int = 100  # errors and warnings listed in the report; counts cover the whole file
    preview_records: int = 3  # normalized records in `sample_preview`
    tokenizer: Any = (
        None  # model directory (or hub id) or a loaded tokenizer: token counts, preview
    )
    max_tokens: int = 0  # TOO_MANY_TOKENS above this many tokens (needs `tokenizer`); 0: off
    max_line_bytes: int = (
        16 * 1024 * 1024
    )  # longer lines (array records) are LINE_TOO_LONG, skipped
    short_output_chars: int = 3  # SHORT_OUTPUT for trained text shorter than this, whitespace aside
    max_tracked_records: int = 4_000_000  # distinct records remembered for DUPLICATE_RECORD
    loss_masking: str = "all_assistant"  # which spans the preview marks as trained (see masking.py)
    workers: int = 0  # processes for a large plain JSONL file; 0: one per CPU (at most 8); 1: none
    parallel_min_bytes: int = 64 * 1024 * 1024  # smaller files are read by this process alone

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_issues", 0, 1_000_000),
            ("preview_records", 0, 10_000),
            ("max_tokens", 0, 1 << 31),
            ("max_line_bytes", 1, 1 << 31),
            ("short_output_chars", 0, 1 << 20),
            ("max_tracked_records", 0, 1 << 32),
            ("workers", 0, 256),
            ("parallel_min_bytes", 0, 1 << 62),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.loss_masking not in MODES:
            raise ValueError(
                f"loss_masking must be one of {', '.join(MODES)}, got {self.loss_masking!r}"
            )
        if self.max_tokens and self.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer to count tokens with")


def validate_file(
    path: str | os.PathLike, options: ValidationOptions | None = None
) -> ValidationReport:
    """Validates a dataset file. Raises OSError when it cannot be read."""
    from tunewire.datasets import parallel

    options = options or ValidationOptions()
    plan = parallel.plan(path, options)
    if plan is not None:
        return parallel.run(plan, options)
    with open(path, "rb") as raw:
        return scan(raw, options)


def validate_bytes(data: bytes, options: ValidationOptions | None = None) -> ValidationReport:
    """Validates a dataset held in memory (an inline upload)."""
    return scan(io.BytesIO(data), options or ValidationOptions())


class _Counting:
    """Counts the bytes read through it (the report's `size_bytes`)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


def scan(
    raw: BinaryIO, options: ValidationOptions, writer: SplitWriter | None = None
) -> ValidationReport:
    """One pass over a binary stream in this process; `writer` gets each valid record's line."""
    from tunewire.datasets.tokens import load_tokenizer

    tokenizer = load_tokenizer(options.tokenizer) if options.tokenizer is not None else None
    counting = _Counting(raw)
    try:
        opened = open_source(counting)
    except SourceError as exc:
        return _file_problem(
            Issue(exc.line, codes.INVALID_ENCODING, str(exc)), None, counting, options
        )
    if opened.layout is None:
        issue = Issue(1, codes.EMPTY_FILE, "the file is empty: no records")
        return _file_problem(issue, None, counting, options)
    if opened.layout is Layout.JSONL:
        records = read_jsonl(opened.chunks, opened.first_line, options.max_line_bytes)
    else:
        records = read_json_array(opened.chunks, opened.first_line, options.max_line_bytes)
    scanner = RecordScanner(
        options, writer, tokenizer, records_share_lines=opened.layout is Layout.JSON_ARRAY
    )
    part = scanner.run(records)
    if part.total == 0:
        part.log.add(Issue(opened.first_line, codes.NO_RECORDS, "the file holds no records"))
    return build_report(part, opened.layout, counting.count, options, tokenizer)


def _file_problem(issue: Issue, layout, counting: _Counting, options) -> ValidationReport:
    part = Partial(IssueLog(options.max_issues))
    part.log.add(issue)
    return build_report(part, layout, counting.count, options, None)


def build_report(
    part: Partial,
    layout: Layout | None,
    size_bytes: int,
    options: ValidationOptions,
    tokenizer: Any,
) -> ValidationReport:
    from tunewire.datasets.tokens import preview

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
