"""Prompt/chosen/rejected records (TRL, mlx-lm-lora, LLaMA-Factory's ranking data).

    {"prompt": "..." or [messages], "chosen": "..." or [one assistant message],
     "rejected": likewise, "system"?: "...", "tools"?: [...]}

A text prompt is one user turn. Without `prompt`, `chosen` and `rejected` may
be whole conversations that differ only in their last message (TRL's
"implicit prompt"): the shared part is the prompt.
"""

from __future__ import annotations

from tunewire.datasets import issues as codes
from tunewire.datasets.preference_parts import message_list, messages_of, pair, reply, tools_of
from tunewire.datasets.turns import (
    SYSTEM,
    USER,
    Message,
    RecordContext,
    optional_text,
    text_problem,
)

FIELDS = frozenset({"prompt", "chosen", "rejected", "system", "tools"})
NAME = "prompt/chosen/rejected records"
KEY = "chosen"
HINT = "preference pairs: 'prompt', 'chosen' and 'rejected'"


def detects(record: dict) -> bool:
    return "chosen" in record or "rejected" in record


def trained_field(record: dict, messages: list[Message], index: int) -> str:
    chosen = record.get("chosen")
    return f"chosen[{len(chosen) - 1}].content" if type(chosen) is list else "chosen"


def fast(record: dict) -> None:
    return None  # a pair carries its rejected reply, which only `check` returns


def check(record: dict, line: int, ctx: RecordContext) -> tuple[list[Message], dict] | None:
    """(messages, {"rejected", "tools"?}) of a valid record; None after adding its errors."""
    before = ctx.error_count
    system = optional_text(record.get("system"), "system", line, ctx)
    tools = tools_of(record.get("tools"), "tools", line, ctx)
    if "prompt" not in record and _implicit(record):
        found = _split_implicit(record, line, ctx)
        if found is None:
            return None
        prompt, chosen, rejected, field_of = found
    else:
        prompt, field_of = _prompt(record, line, ctx)
        chosen, rejected = (
            reply(record.get(key), key, line, ctx, key in record, text_ok=True)
            for key in ("chosen", "rejected")
        )
    if ctx.error_count > before or prompt is None or chosen is None or rejected is None:
        return None
    if system:
        prompt = [(SYSTEM, system), *prompt]
        inner = field_of
        field_of = lambda i: "system" if i == 0 else inner(i - 1)  # noqa: E731
    return pair(prompt, field_of, chosen, rejected, line, ctx, {"tools": tools} if tools else None)


def _prompt(record: dict, line: int, ctx: RecordContext):
    value = record.get("prompt")
    if type(value) is list:
        items = message_list(value, "prompt", line, ctx, True)
        prompt = None if items is None else messages_of(items, "prompt", line, ctx)
        return prompt, lambda i: f"prompt[{i}].role" if i < len(value) else "chosen"
    if text_problem(value, "prompt", line, ctx, "prompt" in record):
        return None, None
    return [(USER, value)], lambda i: "prompt" if i < 1 else "chosen"


def _implicit(record: dict) -> bool:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    return type(chosen) is list and type(rejected) is list and len(chosen) > 1


def _split_implicit(record: dict, line: int, ctx: RecordContext):
    """(prompt, chosen, rejected, field_of) of whole conversations with a shared start."""
    before = ctx.error_count
    sides = [messages_of(record[key], key, line, ctx) for key in ("chosen", "rejected")]
    if ctx.error_count > before or sides[0] is None or sides[1] is None:
        return None
    chosen, rejected = sides
    if len(chosen) != len(rejected) or chosen[:-1] != rejected[:-1]:
        ctx.error(
            line,
            codes.MISSING_FIELD,
            "'prompt' is missing, and 'chosen' and 'rejected' do not share all but their "
            "last message, so no prompt can be taken from them",
            "prompt",
        )
        return None
    for key, side in (("chosen", chosen), ("rejected", rejected)):
        if side[-1][0] != "assistant":
            ctx.error(
                line,
                codes.NOT_ASSISTANT_REPLY,
                f"the last message of {key!r} must be an assistant reply, not {side[-1][0]!r}",
                f"{key}[{len(side) - 1}].role",
            )
    if ctx.error_count > before:
        return None
    return chosen[:-1], chosen[-1][1], rejected[-1][1], lambda i: f"chosen[{i}].role"
