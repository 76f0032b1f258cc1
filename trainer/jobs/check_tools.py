"""What every spec check shares: a collector of field violations, and how a
client's value is shown in a message."""

from __future__ import annotations

from collections.abc import Callable

from tunewire.errors import FieldViolation

Bad = Callable[[str, str], None]
# The batch limit, here because the distributed checks test divisibility only
# of a batch the hyperparameter checks accept.
MAX_BATCH = 1024


def collector(settled: frozenset[str] = frozenset()) -> tuple[list[FieldViolation], Bad]:
    """A list of violations and the function adding to it; fields in `settled` were
    already reported (a NaN), so what their range check would add only repeats it."""
    found: list[FieldViolation] = []

    def bad(field: str, why: str) -> None:
        if field not in settled:
            found.append(FieldViolation(f"spec.{field}", why))

    return found, bad


def show(value: object, limit: int = 60) -> str:
    """repr() of a client's value, cut short: a 100,000-character value is not echoed."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def enum_ok(enum_type: object, value: int) -> bool:
    return value in enum_type.DESCRIPTOR.values_by_number  # type: ignore[attr-defined]
