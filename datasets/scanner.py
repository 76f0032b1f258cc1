"""The record loop: checks each record against the file's format and keeps what a report needs.

One `RecordScanner` consumes the records of a whole file, or of one byte
range of it in a worker process (see parallel.py); `Partial` is what it
collects, small enough to send between processes and merge in file order.
This loop is where the time goes, so it keeps locals local and the common
case short.
"""

from __future__ import annotations

import json
import operator
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tunewire.datasets import alpaca, chat, sharegpt
from tunewire.datasets import issues as codes
from tunewire.datasets.canonical import as_dict, canonical_line, record_of
from tunewire.datasets.dedupe import SeenRecords
from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.jsonl import FILE_LEVEL, Record, not_an_object, parse_line
from tunewire.datasets.output import SplitWriter
from tunewire.datasets.report import DatasetFormat
from tunewire.datasets.turns import RecordContext

FORMATS = {
    DatasetFormat.ALPACA: alpaca,
    DatasetFormat.SHAREGPT: sharegpt,
    DatasetFormat.MESSAGES: chat,
}


def detect(record: dict) -> DatasetFormat | None:
    """The format a record is written in, from its keys alone."""
    if "messages" in record:
        return DatasetFormat.MESSAGES
    if "conversations" in record:
        return DatasetFormat.SHAREGPT
    if "instruction" in record or "output" in record:
        return DatasetFormat.ALPACA
    return None


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


class RecordScanner:
    def __init__(
        self,
        options: Any,
        writer: SplitWriter | None = None,
        tokenizer: Any = None,
        file_format: DatasetFormat | None = None,
        format_line: int = 0,
        tracked_records: int | None = None,
    ) -> None:
        self.options = options
        self.writer = writer
        self.tokenizer = tokenizer
        self.result = Partial(
            IssueLog(options.max_issues), file_format=file_format, format_line=format_line
        )
        self.seen = SeenRecords(
            options.max_tracked_records if tracked_records is None else tracked_records
        )

    def run(self, records: Iterable[Record]) -> Partial:
        from tunewire.datasets.tokens import count_tokens

        out = self.result
        log, writer, tokenizer = out.log, self.writer, self.tokenizer
        add = log.add
        # Duplicates are only warnings: their hashes are looked up a batch at a time.
        keys, key_lines = array("q"), array("q")
        add_key, add_key_line = keys.append, key_lines.append
        # Canonical records go to the writer in small batches (one call for several;
        # small, so their text is still in the cache when orjson writes it).
        records_out: list = []
        record_lines = array("q")
        add_record, add_record_line = records_out.append, record_lines.append
        max_tokens = self.options.max_tokens
        previews_left = self.options.preview_records
        short = self.options.short_output_chars
        short_scan = short + 16  # only text this short can be short once whitespace is stripped
        file_format, format_line = out.file_format, out.format_line
        ctx = RecordContext(out.unknown_fields)
        issues = ctx.issues
        fast, check, fields, name = _checks(file_format)
        total = valid = turns = characters = tokens = 0

        for line, value, issue, raw in records:
            # The common case first: a record of the file's format in its plain shape.
            if issue is None and type(value) is dict and (messages := fast(value)) is not None:
                total += 1
                tools = None
                if not fields.issuperset(value):
                    if raw is not None and _nested_deep(value, fields):
                        # orjson reads 1,024 levels, the standard library about 1,000: say TOO_DEEP.
                        value, issue = parse_line(raw, line)
                        if issue is not None:
                            add(issue)
                            continue
                    for key in value:
                        if key not in fields:
                            ctx.unknown_field(line, key, name)
                    for item in issues:
                        add(item)
                    issues.clear()
            else:
                if issue is not None:
                    add(issue)
                    total += value is not FILE_LEVEL
                    continue
                total += 1
                if raw is not None:
                    # orjson read it; look closely at it as the standard library reads it.
                    value, issue = parse_line(raw, line)
                    if issue is not None:
                        add(issue)
                        continue
                if type(value) is not dict:
                    add(not_an_object(line, value))
                    continue
                found = detect(value)
                if found is None:
                    add(_unknown_format(line, value))
                    continue
                if found is not file_format:
                    if file_format is not None:
                        first = out.other_formats.setdefault(found, line)
                        add(mixed_formats(line, found, first, file_format, format_line))
                        continue
                    file_format, format_line = found, line
                    fast, check, fields, name = _checks(found)
                result = check(value, line, ctx)
                if not fields.issuperset(value):
                    for key in value:
                        if key not in fields:
                            ctx.unknown_field(line, key, name)
                for item in issues:
                    add(item)
                issues.clear()
                if result is None:
                    continue
                messages, tools = result

            lengths = list(map(len, map(_content, messages)))
            short_at = _first_short(messages, short) if min(lengths) < short_scan else -1
            if tokenizer is not None:
                try:
                    record_tokens = count_tokens(
                        tokenizer, as_dict(messages, None, line)["messages"], tools
                    )
                except Exception as exc:  # noqa: BLE001 - a template may raise anything; the record cannot train
                    add(
                        Issue(
                            line,
                            codes.TEMPLATE_ERROR,
                            f"the tokenizer's chat template failed: {exc}",
                        )
                    )
                    continue
                tokens += record_tokens
                if max_tokens and record_tokens > max_tokens:
                    add(_too_many_tokens(line, record_tokens, max_tokens))
            if short_at >= 0:
                add(_short_output(line, file_format, value, messages, short_at, short))
            add_key(
                hash(tuple(messages)) if not tools else hash((tuple(messages), json.dumps(tools)))
            )
            add_key_line(line)
            if len(keys) >= _DUPLICATE_BATCH:
                self._report_duplicates(keys, key_lines)
                del keys[:], key_lines[:]
            valid += 1
            turns += len(lengths)
            characters += sum(lengths)
            if previews_left:
                previews_left -= 1
                out.previews.append(as_dict(messages, tools, line))
            if writer is not None:
                add_record(
                    record_of(messages, line)
                    if not tools
                    else canonical_line(messages, tools, line)
                )
                add_record_line(line)
                if len(records_out) >= _WRITE_BATCH:
                    writer.write_batch(records_out, record_lines)
                    del records_out[:], record_lines[:]

        self._report_duplicates(keys, key_lines)
        if writer is not None:
            writer.write_batch(records_out, record_lines)
        out.file_format, out.format_line = file_format, format_line
        out.total += total
        out.valid += valid
        out.turns += turns
        out.characters += characters
        out.tokens += tokens
        return out

    def _report_duplicates(self, keys: array, lines: array) -> None:
        log, duplicate_of = self.result.log, self.result.duplicate_of
        found = self.seen.first_lines(keys, lines)
        if found:
            log.add_late([duplicate_issue(line, earlier) for line, earlier in found])
            for line, earlier in found[: max(0, log.max_issues - len(duplicate_of))]:
                duplicate_of[line] = earlier


_DUPLICATE_BATCH = 8192
_WRITE_BATCH = 8


def _checks(file_format: DatasetFormat | None):
    """The format's (fast path, detailed check, top-level fields, name for messages)."""
    if file_format is None:  # not known yet: the first record takes the detailed path
        return _no_fast_path, None, frozenset(), ""
    module = FORMATS[file_format]
    return module.fast, module.check, module.FIELDS, module.NAME


def _no_fast_path(record: dict) -> None:
    return None


_DEEP = 500  # nesting the standard library reads wherever it runs; orjson reads more


def _nested_deep(record: dict, fields: frozenset) -> bool:
    """Whether a value of an unknown field nests over _DEEP levels (the fast path reads no other)."""
    stack = [(value, 1) for key, value in record.items() if key not in fields]
    while stack:
        value, depth = stack.pop()
        if type(value) is dict:
            value = list(value.values())
        elif type(value) is not list:
            continue
        if depth >= _DEEP:
            return True
        stack += [(item, depth + 1) for item in value]
    return False


_content = operator.itemgetter(1)


def _first_short(messages: list, short: int) -> int:
    """Index of the first trained message under `short` characters without whitespace, or -1."""
    for i, (_, content, trainable) in enumerate(messages):
        if trainable and len(content.strip()) < short:
            return i
    return -1


def _unknown_format(line: int, record: dict) -> Issue:
    keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
    return Issue(
        line,
        codes.UNKNOWN_FORMAT,
        "the record matches no known format: Alpaca needs 'instruction' and 'output', ShareGPT "
        f"'conversations', chat 'messages'; its keys are {keys}",
    )


# The key that shows a record's format; MIXED_FORMATS names it as the issue's field.
FORMAT_KEYS = {
    DatasetFormat.MESSAGES: "messages",
    DatasetFormat.SHAREGPT: "conversations",
    DatasetFormat.ALPACA: "instruction",
}


def mixed_formats(
    line: int, found: DatasetFormat, found_line: int, file_format: DatasetFormat, format_line: int
) -> Issue:
    return Issue(
        line,
        codes.MIXED_FORMATS,
        f"this record is {found.title} but the file is {file_format.title} "
        f"(first {file_format.title} "
        f"record: line {format_line}; first {found.title} record: line {found_line}); "
        "a file must use one format",
        FORMAT_KEYS[found],
    )


def duplicate_issue(line: int, earlier: int) -> Issue:
    return Issue(
        line, codes.DUPLICATE_RECORD, f"the same conversation as the record at line {earlier}"
    )


def _too_many_tokens(line: int, count: int, limit: int) -> Issue:
    return Issue(
        line,
        codes.TOO_MANY_TOKENS,
        f"{count:,} tokens after the chat template, over max_tokens {limit:,}; "
        "training truncates it",
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
