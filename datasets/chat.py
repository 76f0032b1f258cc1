"""Chat records: `messages` of `{role, content}` (OpenAI, mlx-lm), optional `tools`.

Roles are already canonical (system, user, assistant, tool). A message may
carry `trainable` (a boolean) to override the default (assistant turns are
trained), which is also how tunewire's own canonical files read back.
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
    parse_tools,
    text_problem,
    turn_list,
)

FIELDS = frozenset({"messages", "tools"})
NAME = "chat records"
KEY = "messages"
HINT = "chat: 'messages'"
ROLES: dict[str, bool] = {SYSTEM: False, USER: False, ASSISTANT: True, TOOL: False}
_SEQUENCES = RoleSequences({role: (role, trainable) for role, trainable in ROLES.items()})
_KNOWN = _SEQUENCES.known[False]
_MESSAGE_FIELDS = ("role", "content", "trainable")
_ROLE, _CONTENT = itemgetter("role"), itemgetter("content")


def detects(record: dict) -> bool:
    return "messages" in record


def trained_field(record: dict, messages: list[Message], index: int) -> str:
    return f"messages[{index}].content"


def fast(record: dict) -> list[Message] | None:
    """The messages of a record of the common shape, checked with C-level passes; else None.

    The common shape: no tools, each message exactly {role, content} with
    non-blank text, roles in a valid order. Anything else (None) goes to
    `check`, which names each problem. (A record with `messages` is a chat
    record whatever else it has: formats.detect.)
    """
    items = record.get("messages")
    if type(items) is not list or record.get("tools") is not None:
        return None
    try:
        # KeyError: a message without role or content; TypeError: a message that is not
        # an object, an unhashable role, or content that is not text (str.isspace refuses it).
        names = tuple(map(_ROLE, items))
        shape = _KNOWN.get(names) or _SEQUENCES.get(names)
        contents = list(map(_CONTENT, items))
        if any(map(str.isspace, contents)):
            return None
    except (KeyError, TypeError):
        return None
    if shape is None or not all(contents) or sum(map(len, items)) != 2 * len(items):
        return None
    return list(zip(shape[0], contents, shape[1]))


def check(record: dict, line: int, ctx: RecordContext) -> tuple[list[Message], dict | None] | None:
    """(messages, {"tools": ...} or None) of a valid record; None after adding its errors to `ctx`."""
    before = ctx.error_count
    tools = parse_tools(record.get("tools"), line, ctx)
    items = turn_list(record, "messages", "{role, content} objects", line, ctx)
    if items is None:
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
    return messages, {"tools": tools} if tools else None
