"""The canonical JSONL line.

    {"messages": [{"role", "content", "trainable"}], "tools"?: [...], "rejected"?: {...}, "line": N}

A preference pair is the conversation that ends with the chosen reply (the
only trainable message) and, in `rejected`, the other assistant reply to the
same prompt: so a preference file also trains supervised, on its chosen replies.

orjson writes records (UTF-8, no spaces), several times faster than the
standard library, a batch per Python call. A record orjson cannot write (text
with lone surrogates, which only the standard library's parser lets in) and
a record with tools (which may hold NaN or integers past 64 bits, which
orjson would change) are written by the standard library, escaped to ASCII.
Either way the line reads back the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import partial
from os import PathLike

import orjson

from tunewire.datasets.turns import Message


def record_of(messages: Sequence[Message], line: int) -> dict:
    """A conversation without tools as the canonical record, for `render`."""
    return {
        "messages": [{"role": r, "content": c, "trainable": t} for r, c, t in messages],
        "line": line,
    }


def canonical_line(messages: Sequence[Message], extra: dict | None, line: int) -> bytes:
    """The canonical JSONL line of any conversation, newline included, by the standard library.

    `extra`: the record's other canonical fields (`tools`, `rejected`).
    """
    record: dict = {"messages": [{"role": r, "content": c, "trainable": t} for r, c, t in messages]}
    if extra:
        record.update(extra)
    record["line"] = line
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def render(records: list) -> list[bytes]:
    """The JSONL lines of a batch of records: dicts from `record_of`, lines from `canonical_line`.

    All orjson can, in one C-level pass; a batch with anything else (a line
    already made, a lone surrogate) record by record.
    """
    try:
        return list(map(_ORJSON_LINE, records))
    except orjson.JSONEncodeError:
        return [record if type(record) is bytes else _line(record) for record in records]


_ORJSON_LINE = partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


def _line(record: dict) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def as_dict(messages: Sequence[Message], extra: dict | None, line: int) -> dict:
    record = {
        "messages": [{"role": r, "content": c, "trainable": t} for r, c, t in messages],
        "line": line,
    }
    if extra:
        record.update(extra)
    return record


def iter_canonical(path: str | PathLike) -> Iterator[dict]:
    """Records of a canonical JSONL file written by `normalize_file`, as dicts."""
    with open(path, encoding="utf-8") as f:
        for text in f:
            if text.strip():
                yield json.loads(text)
