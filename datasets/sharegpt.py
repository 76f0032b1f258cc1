"""ShareGPT records: `conversations` of `{from, value}`, optional top-level `system` and `tools`.

Roles (LLaMA-Factory's): system, human, gpt, function_call, observation, and
the aliases user, assistant, tool. Canonical roles: human → user, gpt and
function_call → assistant (trained: the model learns to call tools too),
observation → tool, system → system.
"""

from __future__ import annotations

from operator import itemgetter

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import describe_value
from tunewire.datasets.turns import (
    ASSISTANT,
    SYSTEM,
    TOOL,
    USER,
    Message,
    RecordContext,
    RoleSequences,
    check_order,
    optional_text,
    parse_tools,
    text_problem,
    turn_list,
)

FIELDS = frozenset({"conversations", "system", "tools"})
NAME = "ShareGPT records"
KEY = "conversations"
HINT = "ShareGPT: 'conversations'"
ROLES: dict[str, tuple[str, bool]] = {
    "system": (SYSTEM, False),
    "human": (USER, False),
    "user": (USER, False),
    "gpt": (ASSISTANT, True),
    "assistant": (ASSISTANT, True),
    "function_call": (ASSISTANT, True),
    "observation": (TOOL, False),
    "tool": (TOOL, False),
}
_SEQUENCES = RoleSequences(ROLES)
_ROLE_LIST = "system, human, gpt, function_call, observation (or user, assistant, tool)"
_FROM, _VALUE = itemgetter("from"), itemgetter("value")


def detects(record: dict) -> bool:
    return "conversations" in record


def trained_field(record: dict, messages: list[Message], index: int) -> str:
    offset = 1 if messages[0][0] == SYSTEM and record.get("system") else 0
    return f"conversations[{index - offset}].value"


def fast(record: dict) -> list[Message] | None:
    """The messages of a record of the common shape, checked with C-level passes; else None.

    The common shape: no tools, a text or no `system`, each turn exactly
    {from, value} with non-blank text, roles in a valid order. Anything else
    (None) goes to `check`, which names each problem. A record with `messages`
    is a chat record (formats.detect).
    """
    if "messages" in record:
        return None
    turns = record.get("conversations")
    system = record.get("system")
    if type(turns) is not list or record.get("tools") is not None:
        return None
    if system is not None and type(system) is not str:
        return None
    has_system = bool(system) and not system.isspace()
    try:
        # As in chat.fast: KeyError and TypeError are shapes `check` looks at closely.
        names = tuple(map(_FROM, turns))
        shape = _SEQUENCES.known[has_system].get(names) or _SEQUENCES.get(names, has_system)
        values = list(map(_VALUE, turns))
        if any(map(str.isspace, values)):
            return None
    except (KeyError, TypeError):
        return None
    if shape is None or not all(values) or sum(map(len, turns)) != 2 * len(turns):
        return None
    messages = list(zip(shape[0], values, shape[1]))
    if has_system:
        messages.insert(0, (SYSTEM, system, False))
    return messages


def check(record: dict, line: int, ctx: RecordContext) -> tuple[list[Message], dict | None] | None:
    """(messages, {"tools": ...} or None) of a valid record; None after adding its errors to `ctx`."""
    before = ctx.error_count
    system = optional_text(record.get("system"), "system", line, ctx)
    tools = parse_tools(record.get("tools"), line, ctx)
    turns = turn_list(record, "conversations", "{from, value} turns", line, ctx)
    if turns is None:
        return None
    messages: list[Message] = []
    names: list[str] = []
    for i, turn in enumerate(turns):
        field = f"conversations[{i}]"
        if type(turn) is not dict:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"{field!r} must be a {{from, value}} object, got {describe_value(turn)}",
                field,
            )
            continue
        for key in turn:
            if key not in ("from", "value"):
                ctx.unknown_field(line, f"conversations[].{key}", "ShareGPT turns")
        name = turn.get("from")
        mapped = None
        if type(name) is str:
            mapped = ROLES.get(name)
            if mapped is None:
                ctx.error(
                    line,
                    codes.UNKNOWN_ROLE,
                    f"role {name!r} is not a ShareGPT role; use one of {_ROLE_LIST}",
                    f"{field}.from",
                )
        elif name is None and "from" not in turn:
            hint = (
                " (ShareGPT turns use `from` and `value`, not `role` and `content`)"
                if "role" in turn
                else ""
            )
            ctx.error(
                line, codes.MISSING_FIELD, f"'{field}.from' is missing{hint}", f"{field}.from"
            )
        else:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"'{field}.from' must be a string, got {describe_value(name)}",
                f"{field}.from",
            )
        value = turn.get("value")
        bad_value = text_problem(value, f"{field}.value", line, ctx, "value" in turn)
        if mapped is not None and not bad_value:
            messages.append((mapped[0], value, mapped[1]))
            names.append(name)
    if ctx.error_count > before:
        return None
    if system:
        messages.insert(0, (SYSTEM, system, False))
        names.insert(0, "system")
    offset = 1 if system else 0
    check_order(
        [m[0] for m in messages],
        names,
        line,
        lambda i: f"conversations[{i - offset}].from" if i >= offset else "system",
        ctx,
        "gpt or function_call",
    )
    if ctx.error_count > before:
        return None
    return messages, {"tools": tools} if tools else None
