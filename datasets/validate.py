"""Validating a dataset in one streaming pass: every problem, with its line, in bounded memory.

`scan` reads records from a JSONL or JSON-array source, detects the format
from the first record that has one, checks each record against it, and
collects issues, statistics, duplicates and a preview. Normalization is the
same pass with an `emit` callback that receives each valid record's canonical
JSONL line (see normalize.py).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from tunewire.datasets import alpaca, chat, sharegpt
from tunewire.datasets import issues as codes
from tunewire.datasets.canonical import as_dict, encode_line, encode_messages, is_plain
from tunewire.datasets.dedupe import SeenRecords
from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.json_array import read_json_array
from tunewire.datasets.jsonl import FILE_LEVEL, not_an_object, read_jsonl
from tunewire.datasets.masking import MODES
from tunewire.datasets.report import DatasetFormat, ValidationReport
from tunewire.datasets.source import Layout, SourceError, open_source
from tunewire.datasets.turns import RecordContext

_FORMATS = {
    DatasetFormat.ALPACA: alpaca,
    DatasetFormat.SHAREGPT: sharegpt,
    DatasetFormat.MESSAGES: chat,
}


@dataclass(frozen=True)
class ValidationOptions:
    max_issues: int = 100  # errors and warnings listed in the report; counts cover the whole file
    preview_records: int = 3  # normalized records in `sample_preview`
    tokenizer: Any = None  # model directory (or hub id) or a loaded tokenizer: token counts, preview
    max_tokens: int = 0  # TOO_MANY_TOKENS above this many tokens (needs `tokenizer`); 0: off
    max_line_bytes: int = 16 * 1024 * 1024  # longer lines (array records) are LINE_TOO_LONG, skipped
    short_output_chars: int = 3  # SHORT_OUTPUT for trained text shorter than this, whitespace aside
    max_tracked_records: int = 4_000_000  # distinct records remembered for DUPLICATE_RECORD
    loss_masking: str = "all_assistant"  # which spans the preview marks as trained (see masking.py)

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_issues", 0, 1_000_000),
            ("preview_records", 0, 10_000),
            ("max_tokens", 0, 1 << 31),
            ("max_line_bytes", 1, 1 << 31),
            ("short_output_chars", 0, 1 << 20),
            ("max_tracked_records", 0, 1 << 32),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.loss_masking not in MODES:
            raise ValueError(f"loss_masking must be one of {', '.join(MODES)}, got {self.loss_masking!r}")
        if self.max_tokens and self.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer to count tokens with")


def validate_file(path: str | os.PathLike, options: ValidationOptions = ValidationOptions()) -> ValidationReport:
    """Validates a dataset file. Raises OSError when it cannot be opened."""
    with open(path, "rb") as raw:
        return scan(raw, options)


def validate_bytes(data: bytes, options: ValidationOptions = ValidationOptions()) -> ValidationReport:
    """Validates a dataset held in memory (an inline upload)."""
    return scan(io.BytesIO(data), options)


class _Counting:
    """Counts the bytes read through it (the report's `size_bytes`)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


def _detect(record: dict) -> DatasetFormat | None:
    if "messages" in record:
        return DatasetFormat.MESSAGES
    if "conversations" in record:
        return DatasetFormat.SHAREGPT
    if "instruction" in record or "output" in record:
        return DatasetFormat.ALPACA
    return None


def scan(
    raw: BinaryIO, options: ValidationOptions, emit: Callable[[str], None] | None = None
) -> ValidationReport:
    """One pass over a binary stream; `emit` gets the canonical JSONL line of each valid record."""
    from tunewire.datasets.tokens import count_tokens, load_tokenizer, preview

    tokenizer = load_tokenizer(options.tokenizer) if options.tokenizer is not None else None
    counting = _Counting(raw)
    report = ValidationReport()
    log = IssueLog(options.max_issues)
    stats = report.statistics
    try:
        opened = open_source(counting)
    except SourceError as exc:
        log.add(Issue(exc.line, codes.INVALID_ENCODING, str(exc)))
        return _finish(report, log, counting, [], tokenizer, options)
    report.layout = opened.layout
    if opened.layout is None:
        log.add(Issue(1, codes.EMPTY_FILE, "the file is empty: no records"))
        return _finish(report, log, counting, [], tokenizer, options)
    if opened.layout is Layout.JSONL:
        records = read_jsonl(opened.chunks, opened.first_line, options.max_line_bytes)
    else:
        records = read_json_array(opened.chunks, opened.first_line, options.max_line_bytes)

    ctx = RecordContext()
    seen = SeenRecords(options.max_tracked_records)
    previews: list[dict] = []
    first_lines: dict[DatasetFormat, int] = {}
    file_format = check = fields = None
    short = options.short_output_chars
    short_scan = short + 16  # only text this short can be short once whitespace is stripped
    total = valid = turns = characters = tokens = 0
    for line, value, issue, raw in records:
        if issue is not None:
            log.add(issue)
            total += value is not FILE_LEVEL
            continue
        total += 1
        if type(value) is not dict:
            log.add(not_an_object(line, value))
            continue
        found = _detect(value)
        if found is not file_format:
            if found is None:
                log.add(_unknown_format(line, value))
                continue
            first_lines.setdefault(found, line)
            if file_format is not None:
                log.add(_mixed_formats(line, found, file_format, first_lines))
                continue
            file_format = found
            check, fields, name = _FORMATS[found].check, _FORMATS[found].FIELDS, _FORMATS[found].NAME
        result = check(value, line, ctx)
        if not fields.issuperset(value):
            for key in value:
                if key not in fields:
                    ctx.unknown_field(line, key, key, name)
        if ctx.issues:
            log.extend(ctx.issues)
            ctx.issues.clear()
        if result is None:
            continue
        messages, tools = result

        record_characters = 0
        short_at = -1
        for i, (role, content, trainable) in enumerate(messages):
            size = len(content)
            record_characters += size
            if trainable and size < short_scan and short_at < 0 and len(content.strip()) < short:
                short_at = i
        if tokenizer is not None:
            try:
                record_tokens = count_tokens(tokenizer, as_dict(messages, None, line)["messages"], tools)
            except Exception as exc:  # a template may raise anything; the record cannot train
                log.add(Issue(line, codes.TEMPLATE_ERROR, f"the tokenizer's chat template failed: {exc}"))
                continue
            tokens += record_tokens
            if options.max_tokens and record_tokens > options.max_tokens:
                log.add(
                    Issue(
                        line,
                        codes.TOO_MANY_TOKENS,
                        f"{record_tokens:,} tokens after the chat template, over max_tokens "
                        f"{options.max_tokens:,}; training truncates it",
                    )
                )
        if short_at >= 0:
            log.add(_short_output(line, file_format, value, messages, short_at, short))
        key = hash(tuple(messages)) if not tools else hash((tuple(messages), json.dumps(tools)))
        earlier = seen.first_line(key, line)
        if earlier:
            log.add(Issue(line, codes.DUPLICATE_RECORD, f"the same conversation as line {earlier}"))
        valid += 1
        turns += len(messages)
        characters += record_characters
        if len(previews) < options.preview_records:
            previews.append(as_dict(messages, tools, line))
        if emit is not None:
            body = encode_messages(messages, raw is not None and is_plain(raw))
            emit(encode_line(body, tools, line))

    report.format = file_format
    report.total_samples, report.valid_samples = total, valid
    stats.records, stats.turns, stats.characters, stats.tokens = valid, turns, characters, tokens
    if total == 0:
        log.add(Issue(opened.first_line, codes.NO_RECORDS, "the file holds no records"))
    return _finish(report, log, counting, previews, tokenizer, options, preview)


def _finish(report, log, counting, previews, tokenizer, options, preview=None) -> ValidationReport:
    report.errors, report.warnings = log.errors, log.warnings
    report.error_count, report.warning_count = log.error_count, log.warning_count
    report.issue_counts = dict(log.counts)
    report.valid = log.error_count == 0 and report.valid_samples > 0
    report.size_bytes = counting.count
    if previews:
        report.sample_preview = [preview(tokenizer, record, options.loss_masking) for record in previews]
    return report


def _unknown_format(line: int, record: dict) -> Issue:
    keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
    return Issue(
        line,
        codes.UNKNOWN_FORMAT,
        "the record matches no known format: Alpaca needs 'instruction' and 'output', ShareGPT "
        f"'conversations', chat 'messages'; its keys are {keys}",
    )


def _mixed_formats(line: int, found: DatasetFormat, file_format: DatasetFormat, first: dict) -> Issue:
    return Issue(
        line,
        codes.MIXED_FORMATS,
        f"this record is {found.title} but the file is {file_format.title} (first {file_format.title} "
        f"record: line {first[file_format]}; first {found.title} record: line {first[found]}); "
        "a file must use one format",
    )


def _short_output(line, file_format, record, messages, index, short) -> Issue:
    size = len(messages[index][1].strip())
    if file_format is DatasetFormat.ALPACA:
        offset = 1 if messages[0][0] == "system" else 0
        field = "output" if index == len(messages) - 1 else f"history[{(index - offset) // 2}][1]"
    elif file_format is DatasetFormat.SHAREGPT:
        offset = 1 if messages[0][0] == "system" and record.get("system") else 0
        field = f"conversations[{index - offset}].value"
    else:
        field = f"messages[{index}].content"
    return Issue(
        line,
        codes.SHORT_OUTPUT,
        f"the trained text is only {size} character{'s' if size != 1 else ''} "
        f"(under short_output_chars, {short})",
        field,
    )
