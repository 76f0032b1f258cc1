"""OpenAI preference records (also Together's and Fireworks'): a prompt and two replies.

{"input": {"messages": [...], "tools"?: [...]},
 "preferred_output": [{"role": "assistant", "content": ...}],
 "non_preferred_output": [{"role": "assistant", "content": ...}]}
"""

from __future__ import annotations

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import describe_value
from tunewire.datasets.preference_parts import message_list, messages_of, pair, reply, tools_of
from tunewire.datasets.turns import Message, RecordContext

FIELDS = frozenset({"input", "preferred_output", "non_preferred_output"})
NAME = "OpenAI preference records"
KEY = "preferred_output"
HINT = "OpenAI preference: 'input', 'preferred_output' and 'non_preferred_output'"
_INPUT_FIELDS = ("messages", "tools", "parallel_tool_calls")


def detects(record: dict) -> bool:
    return "preferred_output" in record or "non_preferred_output" in record


def trained_field(record: dict, messages: list[Message], index: int) -> str:
    return "preferred_output[0].content"


def fast(record: dict) -> None:
    return None  # a pair carries its rejected reply, which only `check` returns


def check(record: dict, line: int, ctx: RecordContext) -> tuple[list[Message], dict] | None:
    """(messages, {"rejected", "tools"?}) of a valid record; None after adding its errors."""
    before = ctx.error_count
    given = record.get("input")
    prompt = tools = None
    if type(given) is dict:
        for key in given:
            if key not in _INPUT_FIELDS:
                ctx.unknown_field(line, f"input.{key}", "an OpenAI preference input")
        tools = tools_of(given.get("tools"), "input.tools", line, ctx)
        items = message_list(
            given.get("messages"), "input.messages", line, ctx, "messages" in given
        )
        if items is not None:
            prompt = messages_of(items, "input.messages", line, ctx)
    elif given is None and "input" not in record:
        ctx.error(line, codes.MISSING_FIELD, "'input' is missing", "input")
    else:
        ctx.error(
            line,
            codes.WRONG_TYPE,
            f"'input' must be an object with 'messages', got {describe_value(given)}",
            "input",
        )
    sides = [
        reply(record.get(key), key, line, ctx, key in record, text_ok=False)
        for key in ("preferred_output", "non_preferred_output")
    ]
    if ctx.error_count > before or prompt is None or sides[0] is None or sides[1] is None:
        return None
    size = len(prompt)
    return pair(
        prompt,
        lambda i: f"input.messages[{i}].role" if i < size else "preferred_output[0].content",
        sides[0],
        sides[1],
        line,
        ctx,
        {"tools": tools} if tools else None,
    )
