"""Reading JSONL: one record per line, parsed with orjson, the standard library's json behind it.

This is the hot loop of validation. Lines are split from large binary chunks
(no per-line I/O calls) and parsed by orjson, about twice as fast as the
standard library on long text. Any line orjson refuses is read again the
standard library's way, which decides what the line is and, when it cannot
be read, the issue (with its column, TOO_DEEP, the UTF-8 error) exactly as
before orjson; it also accepts what orjson refuses (NaN, integers past 64
bits, lone surrogates). Reading goes on after a bad line. A line longer than
the limit is skipped without ever being held whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import Issue, describe_value
from tunewire.datasets.source import SourceError

# A record from a reader: (line, parsed value, None, raw line (a view) or None) or
# (line, None, issue, None); an issue of the file rather than of a record comes
# as (line, FILE_LEVEL, issue, None). The raw line comes with a value orjson
# read: orjson reads integers past 64 bits as floats and nests 1,024 levels
# deep where the standard library stops near 1,000, so a record that needs
# a closer look than the checks' fast path is read again with `read_line`.
Record = tuple[int, object, "Issue | None", "memoryview | None"]
FILE_LEVEL = object()


def read_jsonl(chunks: Iterator[bytes], first_line: int, max_line_bytes: int) -> Iterator[Record]:
    line = first_line - 1  # number of the last line handed out
    pending: list[bytes] = []  # start of a line that continues in the next chunk
    pending_bytes = 0
    skipping = 0  # > 0: inside an over-long line, this many bytes seen so far
    loads = orjson.loads
    try:
        for chunk in chunks:
            if skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    skipping += len(chunk)
                    continue
                line += 1
                yield line, None, _too_long(line, skipping + end, max_line_bytes), None
                skipping = 0
                chunk = chunk[end + 1 :]
            last = chunk.rfind(b"\n")  # from the end: a newline is usually near it
            if last < 0:
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes > max_line_bytes:
                    skipping, pending, pending_bytes = pending_bytes, [], 0
                continue
            check_length = pending_bytes + len(chunk) > max_line_bytes
            # Lines are read in place, as views of the chunk: no copies. A line begun
            # in the previous chunk is joined into a piece of its own.
            pieces: list[tuple[bytes, int]] = [(chunk, 0)]
            if pending:
                first = chunk.find(b"\n") + 1
                pending.append(chunk[:first])
                pieces = [(b"".join(pending), 0), (chunk, first)]
            tail = chunk[last + 1 :]
            pending, pending_bytes = ([tail], len(tail)) if tail else ([], 0)
            for data, start in pieces:
                find = data.find
                view = memoryview(data)
                while (end := find(b"\n", start)) >= 0:
                    raw = view[start:end]
                    start = end + 1
                    line += 1
                    if check_length and len(raw) > max_line_bytes:
                        yield line, None, _too_long(line, len(raw), max_line_bytes), None
                        continue
                    try:
                        value = loads(raw)
                    except orjson.JSONDecodeError:
                        value, issue = read_line(raw, line)
                        if issue is not None:
                            yield line, None, issue, None
                        elif value is not BLANK:
                            yield line, value, None, None
                        continue
                    yield line, value, None, raw
            if pending_bytes > max_line_bytes:
                skipping, pending, pending_bytes = pending_bytes, [], 0
        if skipping:
            line += 1
            yield line, None, _too_long(line, skipping, max_line_bytes), None
        elif pending:
            raw = b"".join(pending)
            line += 1
            value, issue = parse_line(raw, line)
            if issue is not None:
                yield line, None, issue, None
            elif value is not BLANK:
                yield line, value, None, None
    except SourceError as exc:
        yield line + 1, FILE_LEVEL, Issue(line + 1, codes.INVALID_ENCODING, str(exc)), None


BLANK = object()  # parse_line's value for a blank line (skipped, but counted as a line)
_SCAN = json.JSONDecoder().scan_once  # the C scanner: a value at an index, and where it ends


def read_line(raw: bytes | memoryview, line: int) -> tuple[object, Issue | None]:
    """A line's value the way this reader takes it without orjson, or the issue.

    The C scanner first, which lets trailing whitespace of any kind pass
    (`str.isspace`); `parse_line` for anything it does not take.
    """
    raw = bytes(raw)
    try:
        text = raw.decode()
        value, end = _SCAN(text, 0)
        if end == len(text) or text[end:].isspace():
            return value, None
    except (ValueError, StopIteration, RecursionError):
        pass
    return parse_line(raw, line)


def parse_line(raw: bytes | memoryview, line: int) -> tuple[object, Issue | None]:
    """A line's value as the standard library reads it, or the issue saying why it cannot be read."""
    raw = bytes(raw)
    if not raw or raw.isspace():
        return BLANK, None
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        return None, Issue(
            line,
            codes.INVALID_ENCODING,
            f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
            "is not valid UTF-8; save the file as UTF-8",
            column=exc.start + 1,
        )
    try:
        return json.loads(text), None
    except RecursionError:
        return None, Issue(line, codes.TOO_DEEP, too_deep_message())
    except json.JSONDecodeError as exc:
        return None, json_error_issue(exc, line)
    except ValueError as exc:  # an integer past Python's 4,300 digits: the file's fault
        return None, Issue(line, codes.INVALID_JSON, f"not valid JSON: {str(exc).split(';')[0]}")


def json_error_issue(exc: json.JSONDecodeError, line: int, record_line: int = 0) -> Issue:
    """INVALID_JSON at the error's own line and column; `line` is where `exc.doc` starts."""
    at = line + exc.lineno - 1
    where = (
        f" (in the record that starts at line {record_line})"
        if record_line and record_line != at
        else ""
    )
    hint = ""
    if exc.msg.startswith("Invalid control character"):
        bad = exc.doc[exc.pos] if exc.pos < len(exc.doc) else ""
        hint = f" ({_control_name(bad)} inside a string must be escaped)"
    elif exc.pos >= len(exc.doc.rstrip()) and exc.msg != "Extra data":
        hint = " (the record is cut off)"
    return Issue(
        at,
        codes.INVALID_JSON,
        f"invalid JSON at column {exc.colno}: {exc.msg}{hint}{where}",
        column=exc.colno,
    )


def too_deep_message() -> str:
    return "JSON nested too deeply to parse (Python's parser stops at about 1,000 levels)"


def _control_name(char: str) -> str:
    if char == "\x00":
        return "a NUL byte"
    if char:
        return f"control character U+{ord(char):04X}"
    return "a control character"


def _too_long(line: int, size: int, limit: int) -> Issue:
    return Issue(
        line,
        codes.LINE_TOO_LONG,
        f"line is {size:,} bytes, over the limit of {limit:,} (max_line_bytes); skipped",
    )


def not_an_object(line: int, value: object) -> Issue:
    return Issue(
        line, codes.NOT_AN_OBJECT, f"a record must be a JSON object, got {describe_value(value)}"
    )
