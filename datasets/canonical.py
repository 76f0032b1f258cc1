"""The canonical JSONL line.

    {"messages": [{"role", "content", "trainable"}], "tools"?: [...], "line": N}

Escaping text for JSON costs more than parsing it in the standard library,
and the text is already escaped in the source line. So when a record has the
plain shape of its format (the checks' fast path, no unknown fields), each
content string is copied from the source line as raw JSON text, found with
byte searches; otherwise it is escaped again. Lines are UTF-8 bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from json.encoder import encode_basestring_ascii
from os import PathLike

from tunewire.datasets.turns import Message

_OPEN = {
    role: b'{"role":"%s","content":"' % role.encode()
    for role in ("system", "user", "assistant", "tool")
}
_CLOSE = {True: b'","trainable":true}', False: b'","trainable":false}'}
_COLON = re.compile(rb'[ \t\r\n]*:[ \t\r\n]*"')
_BACKSLASH = 92


def raw_values(raw: bytes, key: bytes, count: int) -> list[bytes] | None:
    """The raw JSON text of the string values of the `count` keys `key` (quoted) in `raw`, in order.

    None unless there are exactly `count` such keys: the caller knows the
    record has that many, and a duplicate key would otherwise be taken for
    the value json.loads kept. One loop, inlined, as it runs for every turn.
    """
    find = raw.find
    size = len(key)
    values = []
    start = 0
    while True:
        at = find(key, start)
        if at < 0:
            return values if len(values) == count else None
        after = at + size
        if raw[after : after + 3] == b': "':
            begin = after + 3
        elif raw[after : after + 2] == b':"':
            begin = after + 2
        else:
            match = _COLON.match(raw, after)
            if match is None:
                start = after  # the same text as a string value, not as a key
                continue
            begin = match.end()
        if len(values) == count:
            return None
        end = find(b'"', begin)
        while (
            end > 0 and raw[end - 1] == _BACKSLASH
        ):  # an escaped quote, unless the backslashes pair up
            first = end - 1
            while raw[first - 1] == _BACKSLASH:
                first -= 1
            if (end - first) % 2 == 0:
                break
            end = find(b'"', end + 1)
        if end < 0:
            return None
        values.append(raw[begin:end])
        start = end + 1


def body_from_raw(messages: Sequence[Message], texts: Sequence[bytes]) -> bytes:
    """`{"messages":[...]` (unclosed) from each message's raw JSON text."""
    return (
        b'{"messages":['
        + b",".join([_OPEN[m[0]] + text + _CLOSE[m[2]] for m, text in zip(messages, texts)])
        + b"]"
    )


def encode_messages(messages: Sequence[Message]) -> bytes:
    """`{"messages":[...]` (unclosed), escaping every string."""
    escape = encode_basestring_ascii
    return body_from_raw(messages, [escape(m[1])[1:-1].encode() for m in messages])


def encode_line(body: bytes, tools: list | None, line: int) -> bytes:
    """The whole JSONL line from a body."""
    if tools:
        return b'%s,"tools":%s,"line":%d}\n' % (body, json.dumps(tools).encode(), line)
    return b'%s,"line":%d}\n' % (body, line)


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
