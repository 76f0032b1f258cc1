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

# Per (role, trainable): the bytes before a message's text and after it (with a comma).
_AROUND = {
    (role, trainable): (
        b'{"role":"%s","content":"' % role.encode(),
        b'","trainable":%s},' % (b"true" if trainable else b"false"),
    )
    for role in ("system", "user", "assistant", "tool")
    for trainable in (True, False)
}
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


_NULL = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*null")


def raw_object_values(raw: bytes, record: dict) -> dict[str, bytes] | None:
    """The raw JSON text of each string value of a flat object (strings and nulls), by key.

    Walks the keys in order (json.loads keeps it), so each value is found once;
    None if anything differs from that shape (escaped keys, nested values,
    duplicate keys), for the caller to escape the text again instead.
    """
    find = raw.find
    values = {}
    pos = find(b"{") + 1
    for key, value in record.items():
        at = find(b'"', pos) + 1
        name = key.encode()
        after = at + len(name)
        if raw[at:after] != name or raw[after : after + 1] != b'"':
            return None
        after += 1
        if value is None:
            match = _NULL.match(raw, after)
            if match is None:
                return None
            pos = match.end()
            continue
        if type(value) is not str:
            return None
        if raw[after : after + 3] == b': "':
            begin = after + 3
        else:
            match = _COLON.match(raw, after)
            if match is None:
                return None
            begin = match.end()
        end = find(b'"', begin)
        while end > 0 and raw[end - 1] == _BACKSLASH:  # as in raw_values
            first = end - 1
            while raw[first - 1] == _BACKSLASH:
                first -= 1
            if (end - first) % 2 == 0:
                break
            end = find(b'"', end + 1)
        if end < 0:
            return None
        values[key] = raw[begin:end]
        pos = end + 1
    return values if raw[pos:].strip() == b"}" else None


def line_from_texts(
    messages: Sequence[Message], texts: Sequence[bytes], tools: list | None, line: int
) -> bytes:
    """The canonical JSONL line, given each message's text as JSON string content."""
    pieces = [b'{"messages":[']
    for message, text in zip(messages, texts):
        before, after = _AROUND[message[0], message[2]]
        pieces += (before, text, after)
    pieces[-1] = pieces[-1][:-1]  # no comma after the last message
    if tools:
        pieces.append(b'],"tools":' + json.dumps(tools).encode() + b',"line":%d}\n' % line)
    else:
        pieces.append(b'],"line":%d}\n' % line)
    return b"".join(pieces)


def escaped_texts(messages: Sequence[Message]) -> list[bytes]:
    """Each message's text escaped for a JSON string (ASCII), without the quotes."""
    escape = encode_basestring_ascii
    return [escape(m[1])[1:-1].encode() for m in messages]


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
