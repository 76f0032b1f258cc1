"""Dataset issues: reason codes, one issue, and the log that keeps the first N and counts all.

Every problem found in a file becomes an `Issue` with the 1-based line of the
source file, a field path, a reason code and a message for a person. The log
keeps only the first `max_issues` errors and warnings (memory stays bounded on
a file full of bad lines) but counts every code over the whole file.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter


class Severity(str, Enum):
    ERROR = "error"  # the record cannot be trained on; the file is invalid
    WARNING = "warning"  # worth a look; the file stays valid


# Errors: the record (or the file) cannot be trained on.
INVALID_JSON = "INVALID_JSON"
INVALID_ENCODING = "INVALID_ENCODING"
NOT_AN_OBJECT = "NOT_AN_OBJECT"
UNKNOWN_FORMAT = "UNKNOWN_FORMAT"
MIXED_FORMATS = "MIXED_FORMATS"
MISSING_FIELD = "MISSING_FIELD"
WRONG_TYPE = "WRONG_TYPE"
EMPTY_VALUE = "EMPTY_VALUE"
UNKNOWN_ROLE = "UNKNOWN_ROLE"
NOT_ALTERNATING = "NOT_ALTERNATING"
NO_ASSISTANT_TURN = "NO_ASSISTANT_TURN"
SYSTEM_NOT_FIRST = "SYSTEM_NOT_FIRST"
LINE_TOO_LONG = "LINE_TOO_LONG"
TOO_DEEP = "TOO_DEEP"
EMPTY_FILE = "EMPTY_FILE"
NO_RECORDS = "NO_RECORDS"
# The tokenizer's chat template refused the record (only checked with a tokenizer).
TEMPLATE_ERROR = "TEMPLATE_ERROR"
# Preference pairs: the prompt does not end where the assistant answers (a user turn or tool result).
PROMPT_NOT_ENDING_ON_USER = "PROMPT_NOT_ENDING_ON_USER"
# Preference pairs: a chosen or rejected side that is not one assistant reply.
NOT_ASSISTANT_REPLY = "NOT_ASSISTANT_REPLY"

# Warnings: the file stays valid.
SHORT_OUTPUT = "SHORT_OUTPUT"
DUPLICATE_RECORD = "DUPLICATE_RECORD"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
UNKNOWN_FIELD = "UNKNOWN_FIELD"
IDENTICAL_REPLIES = "IDENTICAL_REPLIES"  # a preference pair whose chosen and rejected are the same

WARNING_CODES = frozenset(
    {SHORT_OUTPUT, DUPLICATE_RECORD, TOO_MANY_TOKENS, UNKNOWN_FIELD, IDENTICAL_REPLIES}
)
ERROR_CODES = frozenset(
    {
        INVALID_JSON,
        INVALID_ENCODING,
        NOT_AN_OBJECT,
        UNKNOWN_FORMAT,
        MIXED_FORMATS,
        MISSING_FIELD,
        WRONG_TYPE,
        EMPTY_VALUE,
        UNKNOWN_ROLE,
        NOT_ALTERNATING,
        NO_ASSISTANT_TURN,
        SYSTEM_NOT_FIRST,
        LINE_TOO_LONG,
        TOO_DEEP,
        EMPTY_FILE,
        NO_RECORDS,
        TEMPLATE_ERROR,
        PROMPT_NOT_ENDING_ON_USER,
        NOT_ASSISTANT_REPLY,
    }
)


def severity_of(code: str) -> Severity:
    return Severity.WARNING if code in WARNING_CODES else Severity.ERROR


@dataclass(frozen=True)
class Issue:
    """One problem: where (line, column, field), what (code) and why (message)."""

    line: int
    code: str
    message: str
    field: str = ""
    column: int = 0

    @property
    def severity(self) -> Severity:
        return severity_of(self.code)

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        field = f" {self.field}" if self.field else ""
        return f"{where}:{field} {self.code}: {self.message}"


class IssueLog:
    """Keeps the first `max_issues` errors and warnings; counts every code."""

    def __init__(self, max_issues: int) -> None:
        self.max_issues = max_issues
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.counts: dict[str, int] = {}
        self.error_count = 0
        self.warning_count = 0

    def add(self, issue: Issue) -> None:
        self.counts[issue.code] = self.counts.get(issue.code, 0) + 1
        if issue.code in WARNING_CODES:
            self.warning_count += 1
            if len(self.warnings) < self.max_issues:
                self.warnings.append(issue)
        else:
            self.error_count += 1
            if len(self.errors) < self.max_issues:
                self.errors.append(issue)

    def add_late(self, warnings: list[Issue]) -> None:
        """Warnings found after later lines were logged (duplicates are looked up in batches).

        Each is counted and placed in file order, after the other warnings of
        its line, so the log keeps the first `max_issues` as if added in turn.
        """
        for issue in warnings:
            self.counts[issue.code] = self.counts.get(issue.code, 0) + 1
        self.warning_count += len(warnings)
        kept = self.warnings
        for issue in warnings:
            if len(kept) >= self.max_issues and (not kept or issue.line >= kept[-1].line):
                break  # in file order, so the rest come later still
            kept.insert(bisect.bisect_right(kept, issue.line, key=_LINE), issue)
            del kept[self.max_issues :]


def describe_value(value: object, limit: int = 40) -> str:
    """A short, readable rendering of a JSON value for messages: `number 42`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        text = repr(value)
        return f"number {text[:limit]}"
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 3] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"an object with {len(value)} key{'s' if len(value) != 1 else ''}"
    return type(value).__name__


_LINE = attrgetter("line")
