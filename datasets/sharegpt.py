"""ShareGPT records: `conversations` of `{from, value}`, optional top-level `system` and `tools`.

Roles (LLaMA-Factory's): system, human, gpt, function_call, observation, and
the aliases user, assistant, tool. Canonical roles: human → user, gpt and
function_call → assistant (trained: the model learns to call tools too),
observation → tool, system → system.
"""

from __future__ import annotations

from tunewire.datasets import issues as codes
from tunewire.datasets.canonical import raw_values
from tunewire.datasets.issues import describe_value
from tunewire.datasets.turns import (
    ASSISTANT,
    SYSTEM,
    TOOL,
    USER,
    Message,
    RecordContext,
    check_order,
    optional_text,
    parse_tools,
    text_problem,
    transition_tables,
)

FIELDS = frozenset({"conversations", "system", "tools"})
NAME = "ShareGPT records"
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
_STEPS = transition_tables(ROLES)
_ROLE_LIST = "system, human, gpt, function_call, observation (or user, assistant, tool)"


def check(
    record: dict, line: int, ctx: RecordContext
) -> tuple[list[Message], list | None, bool] | None:
    """(messages, tools, plain) of a valid record; None after adding its errors to `ctx`.

    `plain`: the record has the simple shape `raw_texts` can copy text from.
    """
    turns = record.get("conversations")
    system = record.get("system")
    tools = record.get("tools")
    if type(turns) is list and turns and (system is None or type(system) is str) and tools is None:
        # The common case, checked in one pass; anything unusual gets the detailed checks.
        messages: list[Message] = []
        steps = _STEPS[None]
        if system and not system.isspace():
            messages.append((SYSTEM, system, False))
            steps = _STEPS[SYSTEM]
        try:
            for turn in turns:
                if type(turn) is not dict or len(turn) != 2:
                    break
                value = turn.get("value")
                step = steps.get(turn.get("from"))
                if step is None or type(value) is not str or not value or value.isspace():
                    break
                messages.append((step[0], value, step[1]))
                steps = step[2]
            else:
                # Alternation from a user turn guarantees an assistant turn once there are two.
                if len(messages) - (messages[0][0] == SYSTEM) >= 2:
                    return messages, None, True
        except TypeError:
            pass  # an unhashable role (a list or an object): the detailed checks name it
    return _check_slowly(record, line, ctx)


def _check_slowly(record: dict, line: int, ctx: RecordContext):
    before = ctx.error_count
    system = optional_text(record.get("system"), "system", line, ctx)
    tools = parse_tools(record.get("tools"), line, ctx)
    turns = record.get("conversations")
    if type(turns) is not list:
        if turns is None and "conversations" not in record:
            ctx.error(line, codes.MISSING_FIELD, "'conversations' is missing", "conversations")
        else:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                "'conversations' must be a list of {from, value} turns, "
                f"got {describe_value(turns)}",
                "conversations",
            )
        return None
    if not turns:
        ctx.error(line, codes.EMPTY_VALUE, "'conversations' is empty", "conversations")
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
    return messages, tools, False


def raw_texts(raw: bytes, record: dict, messages: list[Message]) -> list[bytes] | None:
    """Each message's text as raw JSON from the source line (see canonical.py); None if unsure."""
    turns = len(record["conversations"])
    values = raw_values(raw, b'"value"', turns)
    if values is None or len(messages) == turns:
        return values
    system = raw_values(raw, b'"system"', 1)
    return None if system is None else system + values
