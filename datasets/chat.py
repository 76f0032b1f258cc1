"""Chat records: `messages` of `{role, content}` (OpenAI, mlx-lm), optional `tools`.

Roles are already canonical (system, user, assistant, tool). A message may
carry `trainable` (a boolean) to override the default (assistant turns are
trained), which is also how tunewire's own canonical files read back.
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
    parse_tools,
    text_problem,
    transition_tables,
)

FIELDS = frozenset({"messages", "tools"})
NAME = "chat records"
ROLES: dict[str, bool] = {SYSTEM: False, USER: False, ASSISTANT: True, TOOL: False}
_STEPS = transition_tables({role: (role, trainable) for role, trainable in ROLES.items()})
_MESSAGE_FIELDS = ("role", "content", "trainable")


def check(
    record: dict, line: int, ctx: RecordContext
) -> tuple[list[Message], list | None, bool] | None:
    """(messages, tools, plain) of a valid record; None after adding its errors to `ctx`.

    `plain`: the record has the simple shape `raw_texts` can copy text from.
    """
    items = record.get("messages")
    if type(items) is list and items and record.get("tools") is None:
        # The common case, checked in one pass; anything unusual gets the detailed checks.
        messages: list[Message] = []
        steps = _STEPS[None]
        try:
            for item in items:
                if type(item) is not dict or len(item) != 2:
                    break
                content = item.get("content")
                step = steps.get(item.get("role"))
                if step is None or type(content) is not str or not content or content.isspace():
                    break
                messages.append((step[0], content, step[1]))
                steps = step[2]
            else:
                if len(messages) - (messages[0][0] == SYSTEM) >= 2:
                    return messages, None, True
        except TypeError:
            pass  # an unhashable role (a list or an object): the detailed checks name it
    return _check_slowly(record, line, ctx)


def _check_slowly(record: dict, line: int, ctx: RecordContext):
    before = ctx.error_count
    tools = parse_tools(record.get("tools"), line, ctx)
    items = record.get("messages")
    if type(items) is not list:
        if items is None and "messages" not in record:
            ctx.error(line, codes.MISSING_FIELD, "'messages' is missing", "messages")
        else:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                "'messages' must be a list of {role, content} objects, "
                f"got {describe_value(items)}",
                "messages",
            )
        return None
    if not items:
        ctx.error(line, codes.EMPTY_VALUE, "'messages' is empty", "messages")
        return None
    messages: list[Message] = []
    for i, item in enumerate(items):
        field = f"messages[{i}]"
        if type(item) is not dict:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"{field!r} must be a {{role, content}} object, got {describe_value(item)}",
                field,
            )
            continue
        for key in item:
            if key not in _MESSAGE_FIELDS:
                ctx.unknown_field(line, f"messages[].{key}", "chat messages")
        role = item.get("role")
        trainable = None
        if type(role) is str:
            trainable = ROLES.get(role)
            if trainable is None:
                hint = (
                    " (ShareGPT's names? use the `conversations` format)"
                    if role in ("human", "gpt")
                    else ""
                )
                ctx.error(
                    line,
                    codes.UNKNOWN_ROLE,
                    f"role {role!r} is not one of system, user, assistant, tool{hint}",
                    f"{field}.role",
                )
        elif role is None and "role" not in item:
            ctx.error(line, codes.MISSING_FIELD, f"'{field}.role' is missing", f"{field}.role")
        else:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"'{field}.role' must be a string, got {describe_value(role)}",
                f"{field}.role",
            )
        content = item.get("content")
        if content is None and "tool_calls" in item:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"'{field}.content' is null: assistant `tool_calls` are not supported; "
                "put the call as JSON text in `content`",
                f"{field}.content",
            )
            bad_content = True
        else:
            bad_content = text_problem(content, f"{field}.content", line, ctx, "content" in item)
        flag = item.get("trainable")
        if flag is not None and type(flag) is not bool:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"'{field}.trainable' must be true or false, got {describe_value(flag)}",
                f"{field}.trainable",
            )
        elif trainable is not None and not bad_content:
            messages.append((role, content, trainable if flag is None else flag))
    if ctx.error_count > before:
        return None
    check_order(
        [m[0] for m in messages],
        [m[0] for m in messages],
        line,
        lambda i: f"messages[{i}].role",
        ctx,
        "assistant",
    )
    if ctx.error_count > before:
        return None
    return messages, tools, False


def raw_texts(raw: bytes, record: dict, messages: list[Message]) -> list[bytes] | None:
    """Each message's text as raw JSON from the source line (see canonical.py); None if unsure."""
    return raw_values(raw, b'"content"', len(messages))
