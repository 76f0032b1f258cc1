"""Words for the values of a proto enum: the one place they come from.

A value's word is its name without the enum's prefix, in lower case:
`TRAINING_METHOD_QLORA` is "qlora", `LOSS_MASKING_ALL_TOKENS` is "all_tokens".
The worker's config, the CLI, the client's spec builder and the benchmarks all
use these words; none keeps a table of its own, so a value added to the proto
is known everywhere at once. `*_UNSPECIFIED` has no word: it means "not set".
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.descriptor import EnumDescriptor


class _EnumWrapper(Protocol):
    DESCRIPTOR: EnumDescriptor


EnumType = EnumDescriptor | _EnumWrapper


def _descriptor(enum: EnumType) -> EnumDescriptor:
    return enum if isinstance(enum, EnumDescriptor) else enum.DESCRIPTOR


def _prefix(enum: EnumDescriptor) -> str:
    unspecified = next((v.name for v in enum.values if v.name.endswith("_UNSPECIFIED")), "")
    return unspecified.removesuffix("UNSPECIFIED")


def words(enum: EnumType) -> tuple[str, ...]:
    """Every value's word in proto order, without UNSPECIFIED: ('lora', 'qlora', ...)."""
    d = _descriptor(enum)
    prefix = _prefix(d)
    return tuple(
        v.name.removeprefix(prefix).lower() for v in d.values if not v.name.endswith("_UNSPECIFIED")
    )


def word(enum: EnumType, number: int) -> str:
    """The word of a value ('qlora' for TRAINING_METHOD_QLORA); ValueError for UNSPECIFIED
    or a number the enum does not have."""
    d = _descriptor(enum)
    value = d.values_by_number.get(number)
    if value is None or value.name.endswith("_UNSPECIFIED"):
        raise ValueError(f"{d.name} has no word for value {number}")
    return value.name.removeprefix(_prefix(d)).lower()


def number(enum: EnumType, text: str) -> int:
    """The value a word names, in any case; a full value name (UNSPECIFIED too) works as
    well. ValueError otherwise."""
    d = _descriptor(enum)
    name = text.strip().upper()
    if name in d.values_by_name:
        return d.values_by_name[name].number
    full = _prefix(d) + name
    if full in d.values_by_name and not full.endswith("_UNSPECIFIED"):
        return d.values_by_name[full].number
    raise ValueError(f"{text!r} is not one of {', '.join(words(d))}")


def by_word(enum: EnumType) -> dict[str, int]:
    """{'lora': 1, ...}: every value by its word, UNSPECIFIED left out."""
    d = _descriptor(enum)
    return {word(d, v.number): v.number for v in d.values if not v.name.endswith("_UNSPECIFIED")}


def display_word(enum: EnumType, number_: int) -> str:
    """The word for people: 'unspecified' for 0, the number as text when the enum lacks it."""
    d = _descriptor(enum)
    value = d.values_by_number.get(number_)
    return value.name.removeprefix(_prefix(d)).lower() if value else str(number_)
