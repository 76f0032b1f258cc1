"""Alpaca records: `instruction`, `input`, `output`, optional `system` and `history`.

Canonical form: the system prompt, each history pair as an earlier user and
assistant turn, then `instruction` + blank line + `input` as the user turn and
`output` as the assistant turn (the only trainable text besides history answers).
"""

from __future__ import annotations

from tunewire.datasets import issues as codes
from tunewire.datasets.canonical import raw_object_values
from tunewire.datasets.issues import describe_value
from tunewire.datasets.turns import (
    ASSISTANT,
    SYSTEM,
    USER,
    Message,
    RecordContext,
    optional_text,
    text_problem,
)

FIELDS = frozenset({"instruction", "input", "output", "system", "history"})
NAME = "Alpaca records"


def check(record: dict, line: int, ctx: RecordContext) -> tuple[list[Message], None, bool] | None:
    """(messages, tools, plain) of a valid record; None after adding its errors to `ctx`.

    `plain`: the record has the simple shape `raw_texts` can copy text from.
    """
    instruction = record.get("instruction")
    output = record.get("output")
    extra = record.get("input")
    system = record.get("system")
    # The common case in one test; anything unusual goes through the detailed checks.
    if (
        type(instruction) is str
        and type(output) is str
        and instruction
        and output
        and (extra is None or type(extra) is str)
        and (system is None or type(system) is str)
        and record.get("history") is None
        and not instruction.isspace()
        and not output.isspace()
    ):
        user = instruction + "\n\n" + extra if extra and not extra.isspace() else instruction
        if system and not system.isspace():
            return (
                [(SYSTEM, system, False), (USER, user, False), (ASSISTANT, output, True)],
                None,
                True,
            )
        return [(USER, user, False), (ASSISTANT, output, True)], None, True
    return _check_slowly(record, line, ctx)


def _check_slowly(record: dict, line: int, ctx: RecordContext):
    before = ctx.error_count
    instruction = record.get("instruction")
    output = record.get("output")
    text_problem(instruction, "instruction", line, ctx, "instruction" in record)
    text_problem(output, "output", line, ctx, "output" in record)
    extra = optional_text(record.get("input"), "input", line, ctx)
    system = optional_text(record.get("system"), "system", line, ctx)
    history = _history(record.get("history"), line, ctx)
    if ctx.error_count > before:
        return None
    messages: list[Message] = [(SYSTEM, system, False)] if system else []
    for user, assistant in history:
        messages.append((USER, user, False))
        messages.append((ASSISTANT, assistant, True))
    user = instruction + "\n\n" + extra if extra else instruction
    messages.append((USER, user, False))
    messages.append((ASSISTANT, output, True))
    return messages, None, False


def raw_texts(raw: bytes, record: dict, messages: list[Message]) -> list[bytes] | None:
    """Each message's text as raw JSON from the source line (see canonical.py); None if unsure."""
    values = raw_object_values(raw, record)
    if values is None:
        return None
    user = values["instruction"]
    extra = record.get("input")
    if extra and not extra.isspace():
        user += b"\\n\\n" + values["input"]
    if messages[0][0] == SYSTEM:
        return [values["system"], user, values["output"]]
    return [user, values["output"]]


def _history(value: object, line: int, ctx: RecordContext) -> list[tuple[str, str]]:
    """`history`: a list of [user, assistant] pairs of earlier turns."""
    if value is None:
        return []
    if type(value) is not list:
        ctx.error(
            line,
            codes.WRONG_TYPE,
            f"'history' must be a list of [user, assistant] pairs, got {describe_value(value)}",
            "history",
        )
        return []
    pairs = []
    for i, pair in enumerate(value):
        field = f"history[{i}]"
        if type(pair) is not list or len(pair) != 2:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"{field!r} must be a [user, assistant] pair of strings, "
                f"got {describe_value(pair)}",
                field,
            )
            continue
        bad = text_problem(pair[0], f"{field}[0]", line, ctx, True)
        bad = text_problem(pair[1], f"{field}[1]", line, ctx, True) or bad
        if not bad:
            pairs.append((pair[0], pair[1]))
    return pairs
