"""What both preference formats check: a prompt conversation, two assistant replies, the pair.

A pair's canonical form is the prompt's messages (none trainable, not even an
earlier assistant turn: preference training compares only the two replies),
then the chosen reply (trainable), and in `extra` the rejected reply. The
prompt must end where the assistant answers: a user turn or a tool result.
"""

from __future__ import annotations

from collections.abc import Callable

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import Issue, describe_value
from tunewire.datasets.turns import (
    ASSISTANT,
    SYSTEM,
    TOOL,
    USER,
    Message,
    RecordContext,
    check_order,
    text_problem,
)

_ROLES = (SYSTEM, USER, ASSISTANT, TOOL)
_MESSAGE_FIELDS = ("role", "content")


def message_list(
    value: object, field: str, line: int, ctx: RecordContext, present: bool
) -> list | None:
    """`value` when it is a non-empty list; None after adding MISSING_FIELD, WRONG_TYPE or EMPTY_VALUE."""
    if type(value) is list:
        if value:
            return value
        ctx.error(line, codes.EMPTY_VALUE, f"{field!r} is empty", field)
    elif value is None and not present:
        ctx.error(line, codes.MISSING_FIELD, f"{field!r} is missing", field)
    else:
        ctx.error(
            line,
            codes.WRONG_TYPE,
            f"{field!r} must be a list of {{role, content}} objects, got {describe_value(value)}",
            field,
        )
    return None


def messages_of(
    items: list, field: str, line: int, ctx: RecordContext
) -> list[tuple[str, str]] | None:
    """(role, content) of each `{role, content}` object; None after adding the errors."""
    before = ctx.error_count
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        path = f"{field}[{i}]"
        if type(item) is not dict:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"{path!r} must be a {{role, content}} object, got {describe_value(item)}",
                path,
            )
            continue
        for key in item:
            if key not in _MESSAGE_FIELDS:
                ctx.unknown_field(line, f"{field}[].{key}", "preference messages")
        role = item.get("role")
        if type(role) is not str:
            if role is None and "role" not in item:
                ctx.error(line, codes.MISSING_FIELD, f"'{path}.role' is missing", f"{path}.role")
            else:
                ctx.error(
                    line,
                    codes.WRONG_TYPE,
                    f"'{path}.role' must be a string, got {describe_value(role)}",
                    f"{path}.role",
                )
        elif role not in _ROLES:
            ctx.error(
                line,
                codes.UNKNOWN_ROLE,
                f"role {role!r} is not one of system, user, assistant, tool",
                f"{path}.role",
            )
        content = item.get("content")
        if (
            not text_problem(content, f"{path}.content", line, ctx, "content" in item)
            and type(role) is str
        ):
            out.append((role, content))
    return None if ctx.error_count > before else out


def reply(
    value: object, field: str, line: int, ctx: RecordContext, present: bool, text_ok: bool
) -> str | None:
    """The text of one assistant reply: a string (when `text_ok`) or a list of exactly one
    assistant message; None after adding the errors."""
    if text_ok and type(value) is str:
        return None if text_problem(value, field, line, ctx, True) else value
    if type(value) is not list and text_ok and (value is not None or present):
        ctx.error(
            line,
            codes.WRONG_TYPE,
            f"{field!r} must be a string or a list of one assistant message, "
            f"got {describe_value(value)}",
            field,
        )
        return None
    items = message_list(value, field, line, ctx, present)
    if items is None:
        return None
    messages = messages_of(items, field, line, ctx)
    if messages is None:
        return None
    if len(messages) != 1 or messages[0][0] != ASSISTANT:
        roles = ", ".join(role for role, _ in messages)
        ctx.error(
            line,
            codes.NOT_ASSISTANT_REPLY,
            f"{field!r} must be one assistant message, got {len(messages)} ({roles})",
            f"{field}[0].role" if len(messages) == 1 else field,
        )
        return None
    return messages[0][1]


def pair(
    prompt: list[tuple[str, str]],
    field_of: Callable[[int], str],
    chosen: str,
    rejected: str,
    line: int,
    ctx: RecordContext,
    extra: dict | None = None,
) -> tuple[list[Message], dict] | None:
    """The canonical pair (messages ending with the chosen reply, `rejected` in the extra
    fields), after the prompt's checks; None after adding its errors."""
    before = ctx.error_count
    roles = [role for role, _ in prompt]
    if roles and roles[-1] not in (USER, TOOL):
        ctx.error(
            line,
            codes.PROMPT_NOT_ENDING_ON_USER,
            f"the prompt's last turn is {roles[-1]!r}; it must end with a user turn "
            "(or a tool result) for the replies to answer",
            field_of(len(roles) - 1),
        )
        return None
    # The replies answer the prompt: the conversation with one of them must be in order.
    check_order([*roles, ASSISTANT], [*roles, ASSISTANT], line, field_of, ctx, "the replies")
    if ctx.error_count > before:
        return None
    if chosen.strip() == rejected.strip():
        ctx.issues.append(
            Issue(
                line,
                codes.IDENTICAL_REPLIES,
                "the chosen and rejected replies are the same text: the pair teaches nothing",
                field_of(len(roles)),
            )
        )
    messages: list[Message] = [(role, content, False) for role, content in prompt]
    messages.append((ASSISTANT, chosen, True))
    fields = dict(extra or {})
    fields["rejected"] = {"role": ASSISTANT, "content": rejected, "trainable": True}
    return messages, fields


def tools_of(value: object, field: str, line: int, ctx: RecordContext) -> list | None:
    """Tool definitions: absent, or a list of objects."""
    if value is None or value == []:
        return None
    if type(value) is not list or not all(type(tool) is dict for tool in value):
        ctx.error(
            line,
            codes.WRONG_TYPE,
            f"{field!r} must be a list of tool definitions (objects), got {describe_value(value)}",
            field,
        )
        return None
    return value
