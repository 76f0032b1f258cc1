"""The canonical conversation and the rules every format's turns must follow.

A canonical message is a tuple (role, content, trainable) inside the hot loop
(tuples are cheap) and a dict {"role", "content", "trainable"} in files and
previews. Roles are system, user, assistant and tool. The turn order rules are
the ones chat templates enforce: an optional system turn first, then user and
assistant alternate; tool results follow an assistant turn (several in a row
for parallel calls) and are answered by the assistant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from tunewire.datasets import issues as codes
from tunewire.datasets.issues import Issue, describe_value

SYSTEM, USER, ASSISTANT, TOOL = "system", "user", "assistant", "tool"
Message = tuple[str, str, bool]

# Which role may follow which (None: the start of the conversation).
NEXT_ROLES: dict[str | None, frozenset[str]] = {
    None: frozenset({SYSTEM, USER}),
    SYSTEM: frozenset({USER}),
    USER: frozenset({ASSISTANT}),
    ASSISTANT: frozenset({USER, TOOL}),
    TOOL: frozenset({TOOL, ASSISTANT}),
}


def transition_tables(roles: dict[str, tuple[str, bool]]) -> dict[str | None, dict]:
    """For each previous canonical role, the source role names allowed next, as
    name -> (canonical role, trainable, table for the turn after).

    RoleSequences walks a conversation with one dict lookup per turn that maps
    the role and checks the order at once.
    """
    tables: dict[str | None, dict] = {previous: {} for previous in NEXT_ROLES}
    for previous, table in tables.items():
        for name, (role, trainable) in roles.items():
            if role in NEXT_ROLES[previous]:
                table[name] = (role, trainable, tables[role])
    return tables


class RoleSequences:
    """The role names of conversations that follow the order rules, remembered as they are met.

    The checks' fast path looks a whole conversation's role names up at once
    (datasets repeat a few shapes) instead of walking it turn by turn in Python.
    A conversation is accepted when every name is a role, the order is right,
    and it has an assistant turn: from a user turn, alternation brings one once
    there are two turns past the system prompt. At most `limit` shapes are kept.
    """

    def __init__(self, roles: dict[str, tuple[str, bool]], limit: int = 4096) -> None:
        self._steps = transition_tables(roles)
        # Shapes met so far, from the start and after a system prompt: a caller in a hurry
        # looks here first (a dict lookup costs less than a call to `get`).
        self.known: tuple[dict, dict] = ({}, {})
        self._limit = limit

    def get(self, names: tuple, after_system: bool = False) -> tuple[tuple, tuple] | None:
        """(canonical roles, trainable flags) for valid names, else None; TypeError if unhashable."""
        known = self.known[after_system]
        found = known.get(names)
        if found is None:
            found = self._walk(names, after_system)
            if found is not None and len(known) < self._limit:
                known[names] = found
        return found

    def _walk(self, names: tuple, after_system: bool) -> tuple[tuple, tuple] | None:
        steps = self._steps[SYSTEM if after_system else None]
        roles, flags = [], []
        for name in names:
            step = steps.get(name)
            if step is None:
                return None
            roles.append(step[0])
            flags.append(step[1])
            steps = step[2]
        if len(roles) - (roles[:1] == [SYSTEM]) < 2:
            return None
        return tuple(roles), tuple(flags)


class RecordContext:
    """What a format check reports into: the record's issues, and file-wide memory.

    UNKNOWN_FIELD is reported once per field name (`messages[].name`), not per
    record; those issues are also kept in `unknown_fields` (for merging ranges).
    """

    def __init__(self, unknown_fields: list[Issue] | None = None, max_names: int = 1000) -> None:
        self.issues: list[Issue] = []
        self.error_count = 0  # errors added so far (warnings do not count)
        self.unknown_fields = [] if unknown_fields is None else unknown_fields
        self._names = {issue.field for issue in self.unknown_fields}
        self._max_names = max_names

    def error(self, line: int, code: str, message: str, field: str = "") -> None:
        self.error_count += 1
        self.issues.append(Issue(line, code, message, field))

    def unknown_field(self, line: int, field: str, where: str) -> None:
        if field in self._names or len(self._names) >= self._max_names:
            return
        self._names.add(field)
        issue = Issue(
            line,
            codes.UNKNOWN_FIELD,
            f"{field!r} is not a field of {where} and is ignored (reported once per file)",
            field,
        )
        self.unknown_fields.append(issue)
        self.issues.append(issue)


def check_order(
    roles: Sequence[str],
    names: Sequence[str],
    line: int,
    field_of: Callable[[int], str],
    ctx: RecordContext,
    assistant_names: str,
) -> None:
    """Adds the first turn-order problem of a conversation, and NO_ASSISTANT_TURN."""
    previous: str | None = None
    for i, role in enumerate(roles):
        if role in NEXT_ROLES[previous]:
            previous = role
            continue
        if role == SYSTEM:
            ctx.error(
                line,
                codes.SYSTEM_NOT_FIRST,
                "a system prompt may only be the first turn, and only one is allowed",
                field_of(i),
            )
        elif previous in (None, SYSTEM):
            ctx.error(
                line,
                codes.NOT_ALTERNATING,
                f"the conversation must start with a user turn, not {names[i]!r}",
                field_of(i),
            )
        elif previous == TOOL:
            ctx.error(
                line,
                codes.NOT_ALTERNATING,
                f"turn {i + 1} is {names[i]!r} after a tool result; "
                "the assistant answers a tool result",
                field_of(i),
            )
        elif role == TOOL:
            ctx.error(
                line,
                codes.NOT_ALTERNATING,
                f"turn {i + 1} is a tool result ({names[i]!r}) after {names[i - 1]!r}; "
                "tool results follow an assistant turn",
                field_of(i),
            )
        else:
            ctx.error(
                line,
                codes.NOT_ALTERNATING,
                f"turn {i + 1} is {names[i]!r} after {names[i - 1]!r}; "
                "user and assistant turns must alternate",
                field_of(i),
            )
        break
    if ASSISTANT not in roles:
        ctx.error(
            line,
            codes.NO_ASSISTANT_TURN,
            f"the conversation has no assistant turn ({assistant_names}): "
            "there is nothing to train on",
        )


def text_problem(value: object, field: str, line: int, ctx: RecordContext, present: bool) -> bool:
    """Adds MISSING_FIELD, WRONG_TYPE or EMPTY_VALUE for a field that must be non-blank text.

    Returns True when there was a problem.
    """
    if type(value) is str:
        if value and not value.isspace():
            return False
        ctx.error(line, codes.EMPTY_VALUE, f"{field!r} is empty", field)
        return True
    if value is None and not present:
        ctx.error(line, codes.MISSING_FIELD, f"{field!r} is missing", field)
        return True
    ctx.error(
        line, codes.WRONG_TYPE, f"{field!r} must be a string, got {describe_value(value)}", field
    )
    return True


def turn_list(record: dict, key: str, shape: str, line: int, ctx: RecordContext) -> list | None:
    """`record[key]` when it is a non-empty list; None after adding the error to `ctx`.
    `shape` says what an item looks like, for the message ("{from, value} turns")."""
    items = record.get(key)
    if type(items) is not list:
        if items is None and key not in record:
            ctx.error(line, codes.MISSING_FIELD, f"'{key}' is missing", key)
        else:
            ctx.error(
                line,
                codes.WRONG_TYPE,
                f"'{key}' must be a list of {shape}, got {describe_value(items)}",
                key,
            )
        return None
    if not items:
        ctx.error(line, codes.EMPTY_VALUE, f"'{key}' is empty", key)
        return None
    return items


def optional_text(value: object, field: str, line: int, ctx: RecordContext) -> str | None:
    """An optional text field: absent, null or blank mean none; other non-strings: WRONG_TYPE."""
    if value is None:
        return None
    if type(value) is str:
        return value if value and not value.isspace() else None
    ctx.error(
        line, codes.WRONG_TYPE, f"{field!r} must be a string, got {describe_value(value)}", field
    )
    return None


def to_dicts(messages: Sequence[Message]) -> list[dict]:
    return [{"role": r, "content": c, "trainable": t} for r, c, t in messages]


def parse_tools(value: object, line: int, ctx: RecordContext) -> list | None:
    """Tool definitions: a list of objects, or that list as JSON text (as LLaMA-Factory has it)."""
    if value is None or value == "" or value == []:
        return None
    if type(value) is str:
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            ctx.error(line, codes.WRONG_TYPE, "'tools' is a string but not valid JSON", "tools")
            return None
    if type(value) is dict:
        value = [value]
    if type(value) is not list or not all(type(tool) is dict for tool in value):
        ctx.error(
            line,
            codes.WRONG_TYPE,
            f"'tools' must be a list of tool definitions (objects), got {describe_value(value)}",
            "tools",
        )
        return None
    return value
