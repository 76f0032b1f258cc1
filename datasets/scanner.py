"""The record loop: checks each record against the file's format and keeps what a report needs.

One `RecordScanner` consumes the records of a whole file, or of one byte
range of it in a worker process (see parallel.py) into a `Partial`.
This loop is where the time goes, so it keeps locals local and the common
case short: a record of the plain shape costs one call to its format's fast
path and three appends; valid records are handled a batch at a time
(valid_records.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tunewire.datasets import issues as codes
from tunewire.datasets.dedupe import SeenRecords
from tunewire.datasets.formats import FORMATS, detect, hints
from tunewire.datasets.issues import Issue, IssueLog
from tunewire.datasets.jsonl import FILE_LEVEL, Record, not_an_object, read_line
from tunewire.datasets.output import SplitWriter
from tunewire.datasets.partial import Partial
from tunewire.datasets.report import DatasetFormat
from tunewire.datasets.turns import RecordContext
from tunewire.datasets.valid_records import ValidRecords


class RecordScanner:
    def __init__(
        self,
        options: Any,
        writer: SplitWriter | None = None,
        tokenizer: Any = None,
        file_format: DatasetFormat | None = None,
        format_line: int = 0,
        tracked_records: int | None = None,
        records_share_lines: bool = False,
    ) -> None:
        self.options = options
        self.result = Partial(
            IssueLog(options.max_issues), file_format=file_format, format_line=format_line
        )
        self.valid = ValidRecords(
            self.result,
            options,
            writer,
            tokenizer,
            options.max_tracked_records if tracked_records is None else tracked_records,
            one_at_a_time=records_share_lines,
        )

    @property
    def seen(self) -> SeenRecords:
        return self.valid.seen

    def run(self, records: Iterable[Record]) -> Partial:
        out = self.result
        add = out.log.add
        valid = self.valid
        # The batch of valid records, filled here and emptied by valid.flush.
        batch, batch_size, batch_extras = valid.messages, valid.batch_size, valid.extras
        add_messages, add_line, add_value = batch.append, valid.lines.append, valid.values.append
        file_format, format_line = out.file_format, out.format_line
        ctx = RecordContext(out.unknown_fields)
        issues = ctx.issues
        fast, check, fields, name = _checks(file_format)
        total = 0

        for line, value, issue, raw in records:
            # The common case first: a record of the file's format in its plain shape.
            if issue is None and type(value) is dict and (messages := fast(value)) is not None:
                total += 1
                if not fields.issuperset(value):
                    if raw is not None and _nested_deep(value, fields):
                        # orjson reads 1,024 levels, the standard library about 1,000: say TOO_DEEP.
                        value, issue = read_line(raw, line)
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
                    value, issue = read_line(raw, line)
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
                messages, extra = result
                if extra:
                    batch_extras[len(batch)] = extra
            add_messages(messages)
            add_line(line)
            add_value(value)
            if len(batch) >= batch_size:
                valid.flush(file_format)

        valid.finish(file_format)
        out.file_format, out.format_line = file_format, format_line
        out.total += total
        return out


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


def _unknown_format(line: int, record: dict) -> Issue:
    keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
    return Issue(
        line,
        codes.UNKNOWN_FORMAT,
        f"the record matches no known format ({hints()}); its keys are {keys}",
    )


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
        FORMATS[found].KEY,
    )
