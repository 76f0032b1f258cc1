"""Reading a JSON array of records as a stream, one record at a time.

The file is never parsed whole (a 1 GB array would need several GB as Python
objects). Text is decoded chunk by chunk into a buffer; each record is parsed
in place with the C decoder (`raw_decode`), which also tells where it ends.
Only when that fails (a record cut by the end of the buffer, or a broken
record) does a structural scanner find where the record ends, so reading can
carry on after a bad record, skip one over the size limit without holding it,
and report the line where the record starts.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Iterator

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import Issue
from tunewire.datasets.jsonl import FILE_LEVEL, Record, too_deep_message
from tunewire.datasets.source import SourceError

_WS = re.compile(r"[ \t\r\n]*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_END = re.compile(r'["\\]')
_SCALAR_END = re.compile(r"[,\] \t\r\n]")
# Bytes that were not UTF-8 are decoded to these lone surrogates (surrogateescape).
_BAD_BYTE = re.compile("[\udc80-\udcff]")
_CONTAINERS = '{["'
_SCAN = json.JSONDecoder().scan_once  # the C scanner: a value at an index, and where it ends


def _split_utf8(data: bytes) -> tuple[bytes, bytes]:
    """Splits off an incomplete UTF-8 sequence at the end of a chunk, to decode with the next."""
    n = len(data)
    i = n - 1
    while i >= 0 and n - i <= 3 and data[i] & 0xC0 == 0x80:
        i -= 1
    if i < 0:
        return data, b""
    lead = data[i]
    need = (
        2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
    )
    if n - i < need:
        return data[:i], data[i:]
    return data, b""


class _Buffer:
    """Decoded text of the source with a read position, its line and the line's start."""

    def __init__(self, chunks: Iterator[bytes], first_line: int) -> None:
        self._chunks = chunks
        self._tail = b""
        self.text = ""
        self.pos = 0
        self.line = first_line
        self.line_start = 0  # index in `text` where `line` starts (negative once dropped)
        self.eof = False
        # Bytes that are not UTF-8 are decoded as lone surrogates: where they are in `text`,
        # or (when a chunk has very many) an index none lies past.
        self.bad_at: list[int] = []
        self.bad_until = -1

    def fill(self) -> bool:
        """Appends the next chunk, dropping text before `pos`; False at the end of the file."""
        if self.eof:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            self.eof = True
            if not self._tail:
                return False
            data, self._tail = self._tail, b""
        else:
            data, self._tail = _split_utf8(self._tail + chunk)
        try:
            decoded = data.decode()
            bad = False
        except UnicodeDecodeError:
            decoded = data.decode("utf-8", "surrogateescape")
            bad = True
        kept = self.pos
        self.line_start -= kept
        self.bad_until -= kept
        self.bad_at = [at - kept for at in self.bad_at if at >= kept]
        self.text = self.text[kept:] + decoded
        self.pos = 0
        if bad:
            offset = len(self.text) - len(decoded)
            found = [
                offset + m.start() for m in itertools.islice(_BAD_BYTE.finditer(decoded), 4096)
            ]
            if len(found) < 4096:
                self.bad_at += found
            else:
                self.bad_until = len(self.text)
        return True

    def has_bad_bytes(self, end: int) -> bool:
        """Whether text[pos:end] holds bytes that were not UTF-8."""
        if self.bad_until > self.pos:
            return _BAD_BYTE.search(self.text, self.pos, end) is not None
        i = bisect.bisect_left(self.bad_at, self.pos)
        return i < len(self.bad_at) and self.bad_at[i] < end

    def advance(self, end: int) -> None:
        text, pos = self.text, self.pos
        newlines = text.count("\n", pos, end)
        if newlines:
            self.line += newlines
            self.line_start = text.rfind("\n", pos, end) + 1
        self.pos = end

    def column(self, index: int | None = None) -> int:
        return (self.pos if index is None else index) - self.line_start + 1

    def skip_space(self) -> bool:
        """Moves past whitespace; True when a non-blank character is at `pos`."""
        while True:
            end = _WS.match(self.text, self.pos).end()
            self.advance(end)
            if end < len(self.text):
                return True
            if not self.fill():
                return False


def read_json_array(
    chunks: Iterator[bytes], first_line: int, max_record_chars: int
) -> Iterator[Record]:
    buf = _Buffer(chunks, first_line)
    try:
        yield from _read(buf, max_record_chars)
    except SourceError as exc:
        yield buf.line, FILE_LEVEL, Issue(buf.line, codes.INVALID_ENCODING, str(exc)), None


def _file_issue(buf: _Buffer, message: str) -> Record:
    """A problem of the array's punctuation, not of a record (not counted as a record)."""
    return (
        buf.line,
        FILE_LEVEL,
        Issue(buf.line, codes.INVALID_JSON, message, column=buf.column()),
        None,
    )


def _read(buf: _Buffer, limit: int) -> Iterator[Record]:
    buf.skip_space()
    buf.advance(buf.pos + 1)  # the opening "[" (the layout was chosen by it)
    expecting = (
        "first"  # "first" record or "]", a "value" after a comma, or a separator "after" one
    )
    while True:
        if not buf.skip_space():
            yield _file_issue(buf, "the file ends before the array is closed with ']'")
            return
        c = buf.text[buf.pos]
        if expecting == "after":
            if c == ",":
                buf.advance(buf.pos + 1)
                expecting = "value"
                continue
            if c == "]":
                break
            yield _file_issue(buf, f"expected ',' or ']' after a record, found {c!r}")
        elif c == "]":
            if expecting == "value":
                yield _file_issue(buf, "trailing comma before ']'")
            break
        elif c == ",":
            yield _file_issue(buf, "expected a record, found ','")
            buf.advance(buf.pos + 1)
            continue
        finished = yield from _record(buf, limit)
        if not finished:
            return
        expecting = "after"
    buf.advance(buf.pos + 1)  # the closing "]"
    if buf.skip_space():
        yield _file_issue(buf, "extra data after the array's closing ']'")


def _record(buf: _Buffer, limit: int):
    """Yields the record at `buf.pos` (or its issue); returns False if the file ends inside it."""
    start_line = buf.line
    start_column = buf.column()
    try:
        value, end = _SCAN(buf.text, buf.pos)
        if end < len(buf.text) or buf.eof or buf.text[buf.pos] in _CONTAINERS:
            if end - buf.pos > limit:
                yield _too_long(start_line, limit)
            elif buf.has_bad_bytes(end):
                yield _bad_bytes_issue(buf, start_line, end)
            else:
                yield start_line, value, None, None
            buf.advance(end)
            return True
    except (ValueError, StopIteration, RecursionError):
        pass
    # Cut by the end of the buffer, or broken: find the end by structure, then retry once.
    end = _find_end(buf, limit)
    if end == _TOO_LONG:
        yield _too_long(start_line, limit)
        return True
    if end == _EOF:
        yield (
            start_line,
            None,
            Issue(
                start_line,
                codes.INVALID_JSON,
                f"the record that starts at line {start_line} is cut off by the end of the file",
                column=start_column,
            ),
            None,
        )
        return False
    text = buf.text[buf.pos : end]
    if buf.has_bad_bytes(end):
        yield _bad_bytes_issue(buf, start_line, end)
        buf.advance(end)
        return True
    try:
        value = json.loads(text)
    except RecursionError:
        yield start_line, None, Issue(start_line, codes.TOO_DEEP, too_deep_message()), None
    except ValueError as exc:
        yield start_line, None, _located_json_error(exc, start_line, start_column), None
    else:
        yield start_line, value, None, None
    buf.advance(end)
    return True


def _too_long(line: int, limit: int) -> Record:
    return (
        line,
        None,
        Issue(
            line,
            codes.LINE_TOO_LONG,
            f"record is over the limit of {limit:,} characters (max_line_bytes); skipped",
        ),
        None,
    )


def _located_json_error(exc: ValueError, start_line: int, start_column: int) -> Issue:
    if not isinstance(exc, json.JSONDecodeError):
        # Python's own words up to its advice (set_int_max_str_digits is not the user's fix).
        return Issue(start_line, codes.INVALID_JSON, f"not valid JSON: {str(exc).split(';')[0]}")
    text, pos = exc.doc, exc.pos
    line = start_line + text.count("\n", 0, pos)
    line_start = text.rfind("\n", 0, pos) + 1
    column = pos - line_start + 1 + (start_column - 1 if line == start_line else 0)
    where = f" (in the record that starts at line {start_line})" if line != start_line else ""
    return Issue(
        line,
        codes.INVALID_JSON,
        f"invalid JSON at column {column}: {exc.msg}{where}",
        column=column,
    )


def _bad_bytes_issue(buf: _Buffer, start_line: int, end: int) -> Record:
    at = _BAD_BYTE.search(buf.text, buf.pos, end).start()
    line = start_line + buf.text.count("\n", buf.pos, at)
    line_start = buf.text.rfind("\n", 0, at) + 1
    column = at - line_start + 1 if line != start_line else buf.column(at)
    byte = ord(buf.text[at]) - 0xDC00
    return (
        start_line,
        None,
        Issue(
            line,
            codes.INVALID_ENCODING,
            f"byte 0x{byte:02x} at column {column} is not valid UTF-8; save the file as UTF-8",
            column=column,
        ),
        None,
    )


_EOF = -1
_TOO_LONG = -2


def _find_end(buf: _Buffer, limit: int) -> int:
    """Index just past the value at `buf.pos`, found by structure alone (brackets and strings).

    Reads more of the file as needed. A value longer than `limit` is dropped
    while it is scanned and _TOO_LONG returned once it ends; _EOF when the file
    ends inside the value.
    """
    text = buf.text
    first = text[buf.pos]
    depth = 0
    in_string = first == '"'
    scalar = first not in _CONTAINERS
    # A scalar (or stray character) ends at the next separator after its first character.
    i = buf.pos + 1 if in_string or scalar else buf.pos
    too_long = False
    while True:
        if scalar:
            m = _SCALAR_END.search(text, i)
            if m is not None:
                return _finish(buf, m.start(), too_long)
            i = len(text)
        elif in_string:
            m = _STRING_END.search(text, i)
            if m is None:
                i = len(text)
            elif m.group() == "\\":
                i = m.end() + 1  # skip the escaped character (it may be in the next chunk)
                if i <= len(text):
                    continue
            else:
                in_string = False
                i = m.end()
                if depth == 0:
                    return _finish(buf, i, too_long)
                continue
        else:
            m = _STRUCTURE.search(text, i)
            if m is None:
                i = len(text)
            else:
                ch = m.group()
                i = m.end()
                if ch == '"':
                    in_string = True
                elif ch in "[{":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        return _finish(buf, i, too_long)
                continue
        # The value goes on past the buffer: read more, dropping what was scanned once too long.
        if not too_long and len(text) - buf.pos > limit:
            too_long = True
        if too_long:
            buf.advance(min(i, len(text)))
        relative = i - buf.pos
        if not buf.fill():
            return _TOO_LONG if too_long else _EOF
        text = buf.text
        i = buf.pos + relative


def _finish(buf: _Buffer, end: int, too_long: bool) -> int:
    if too_long:
        buf.advance(end)
        return _TOO_LONG
    return end
