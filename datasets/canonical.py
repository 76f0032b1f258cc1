"""The canonical JSONL line.

    {"messages": [{"role", "content", "trainable"}], "tools"?: [...], "line": N}

orjson writes it (UTF-8, no spaces), several times faster than the standard
library; a line it cannot write (text with lone surrogates, which only the
standard library's parser lets in) and a line with tools (which may hold NaN
or integers past 64 bits, which orjson would change) are written by the
standard library, escaped to ASCII. Either way the line reads back the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from os import PathLike

import orjson

from tunewire.datasets.turns import Message


def canonical_line(messages: Sequence[Message], tools: list | None, line: int) -> bytes:
    """The canonical JSONL line of a conversation, newline included."""
    record: dict = {"messages": [{"role": r, "content": c, "trainable": t} for r, c, t in messages]}
    if not tools:
        record["line"] = line
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            return _stdlib_line(record)
    record["tools"] = tools
    record["line"] = line
    return _stdlib_line(record)


def _stdlib_line(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def as_dict(messages: Sequence[Message], tools: list | None, line: int) -> dict:
    record = {
        "messages": [{"role": r, "content": c, "trainable": t} for r, c, t in messages],
        "line": line,
    }
    if tools:
        record["tools"] = tools
    return record


def iter_canonical(path: str | PathLike) -> Iterator[dict]:
    """Records of a canonical JSONL file written by `normalize_file`, as dicts."""
    with open(path, encoding="utf-8") as f:
        for text in f:
            if text.strip():
                yield json.loads(text)
