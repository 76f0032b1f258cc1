"""The canonical JSONL line: `{"messages": [{"role", "content", "trainable"}], "tools"?: [...], "line": N}`.

Encoding is as costly as parsing in the standard library, so lines are built
from pieces, and a record whose source line is plain ASCII whose only escapes
are \\n, \\t and \\" skips the general escaper (its strings can only need those
three). Output is always ASCII, so any reader's encoding handles it.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from os import PathLike
from typing import Iterator, Sequence

from tunewire.datasets.turns import Message

_OPEN = {
    role: '{"role":"%s","content":' % role for role in ("system", "user", "assistant", "tool")
}
_CLOSE = {True: ',"trainable":true}', False: ',"trainable":false}'}


def is_plain(raw: bytes) -> bool:
    """True when every string in this JSON text is printable ASCII plus newline, tab and quote."""
    if not raw.isascii():
        return False
    backslashes = raw.count(b"\\")
    return not backslashes or backslashes == raw.count(b"\\n") + raw.count(b"\\t") + raw.count(b'\\"')


def _plain_string(text: str) -> str:
    if '"' in text:
        text = text.replace('"', '\\"')
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if "\t" in text:
        text = text.replace("\t", "\\t")
    return '"' + text + '"'


def encode_messages(messages: Sequence[Message], plain: bool) -> str:
    """`{"messages":[...]` (unclosed): the part of the line that identifies the conversation."""
    quote = _plain_string if plain else encode_basestring_ascii
    return '{"messages":[' + ",".join(
        [_OPEN[role] + quote(content) + _CLOSE[trainable] for role, content, trainable in messages]
    ) + "]"


def encode_line(body: str, tools: list | None, line: int) -> str:
    """The whole JSONL line from `encode_messages`' output."""
    if tools:
        return body + ',"tools":' + json.dumps(tools) + ',"line":' + str(line) + "}\n"
    return body + ',"line":' + str(line) + "}\n"


def as_dict(messages: Sequence[Message], tools: list | None, line: int) -> dict:
    record = {"messages": [{"role": r, "content": c, "trainable": t} for r, c, t in messages], "line": line}
    if tools:
        record["tools"] = tools
    return record


def iter_canonical(path: str | PathLike) -> Iterator[dict]:
    """Records of a canonical JSONL file written by `normalize_file`, as dicts."""
    with open(path, encoding="utf-8") as f:
        for text in f:
            if text.strip():
                yield json.loads(text)
