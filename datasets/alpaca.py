"""Alpaca records: `instruction`, `input`, `output`, optional `system` and `history`.

Canonical form: the system prompt, each history pair as an earlier user and
assistant turn, then `instruction` + blank line + `input` as the user turn and
`output` as the assistant turn (the only trainable text besides history answers).
"""

from __future__ import annotations

from tunewire.datasets import issues as codes
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
KEY = "instruction"
HINT = "Alpaca: 'instruction' and 'output'"


def detects(record: dict) -> bool:
    return "instruction" in record or "output" in record


def trained_field(record: dict, messages: list[Message], index: int) -> str:
    """`output` for the last message, else the history answer it came from."""
    if index == len(messages) - 1:
        return "output"
    offset = 1 if messages[0][0] == SYSTEM else 0
    return f"history[{(index - offset) // 2}][1]"


def fast(record: dict) -> list[Message] | None:
    """The messages of a record of the common shape, in a few tests; else None.

    The common shape: non-blank `instruction` and `output`, text or nothing
    for `input` and `system`, `history` absent or pairs of non-blank text,
    and no key of another format (formats.detect). Anything else (None) goes
    to `check`, which names each problem.
    """
    if "messages" in record or "conversations" in record:
        return None
    instruction = record.get("instruction")
    output = record.get("output")
    extra = record.get("input")
    system = record.get("system")
    if not (
        type(instruction) is str
        and type(output) is str
        and instruction
        and output
        and (extra is None or type(extra) is str)
        and (system is None or type(system) is str)
        and not instruction.isspace()
        and not output.isspace()
    ):
        return None
    messages = [(SYSTEM, system, False)] if system and not system.isspace() else []
    history = record.get("history")
    if history is not None:
        if type(history) is not list:
            return None
        for pair in history:
            if type(pair) is not list or len(pair) != 2:
                return None
            asked, answered = pair
            if not (
                type(asked) is str
                and type(answered) is str
                and asked
                and answered
                and not asked.isspace()
                and not answered.isspace()
            ):
                return None
            messages += ((USER, asked, False), (ASSISTANT, answered, True))
    user = f"{instruction}\n\n{extra}" if extra and not extra.isspace() else instruction
    messages += ((USER, user, False), (ASSISTANT, output, True))
    return messages


def check(record: dict, line: int, ctx: RecordContext) -> tuple[list[Message], None] | None:
    """(messages, None) of a valid record; None after adding its errors to `ctx`."""
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
    return messages, None


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
