"""Validating a dataset: every problem, with its line, in one streaming pass and bounded memory.

`validate_file` and `validate_bytes` are the entry points; `scan` is the pass
itself over any binary stream (optionally writing canonical records, see
normalize.py). A large plain JSONL file is split into byte ranges checked by
worker processes in parallel (parallel.py); the report is the same either way.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from tunewire.datasets import issues as codes
from tunewire.datasets import parallel
from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.json_array import read_json_array
from tunewire.datasets.jsonl import read_jsonl
from tunewire.datasets.options import ValidationOptions
from tunewire.datasets.output import SplitWriter
from tunewire.datasets.partial import Partial, build_report
from tunewire.datasets.report import ValidationReport
from tunewire.datasets.scanner import RecordScanner
from tunewire.datasets.source import Layout, SourceError, open_source
from tunewire.datasets.tokens import load_tokenizer


def validate_file(
    path: str | os.PathLike, options: ValidationOptions | None = None
) -> ValidationReport:
    """Validates a dataset file. Raises OSError when it cannot be read."""
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
