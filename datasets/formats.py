"""The record formats the library knows, in the order a record is tested against them.

Each format is a module with the same few names:

- `KEY`: the key that shows a record is in this format (MIXED_FORMATS names it as the field);
- `detects(record) -> bool`: whether a record is written in it, from its keys alone;
- `HINT`: what the format needs, for UNKNOWN_FORMAT ("Alpaca needs 'instruction' and 'output'");
- `FIELDS` (its top-level keys) and `NAME` (for UNKNOWN_FIELD: "Alpaca records");
- `fast(record)`: the messages of a record of the plain shape, else None;
- `check(record, line, ctx)`: (messages, extra) of a valid record, else None with its errors;
  `extra` holds the canonical fields besides messages (`tools`; a preference pair's `rejected`) or is None;
- `trained_field(record, messages, index)`: the field path of trained message `index`.

Adding a format: write its module, add a member to `report.DatasetFormat` and
the proto's `DatasetFormat` (same name after `DATASET_FORMAT_`), and place it
in `FORMATS` below: a format whose key another format's record may also carry
goes first (a chat record may have `conversations`; Alpaca's keys are the
most common).
"""

from __future__ import annotations

from types import ModuleType

from tunewire.datasets import alpaca, chat, preference_openai, preference_pairs, sharegpt
from tunewire.datasets.report import DatasetFormat

FORMATS: dict[DatasetFormat, ModuleType] = {
    # A pair's keys are its own; first, so a pair that also has `messages` is still a pair.
    DatasetFormat.OPENAI_PREFERENCE: preference_openai,
    DatasetFormat.CHOSEN_REJECTED: preference_pairs,
    DatasetFormat.MESSAGES: chat,
    DatasetFormat.SHAREGPT: sharegpt,
    DatasetFormat.ALPACA: alpaca,
}
assert set(FORMATS) == set(DatasetFormat), "every DatasetFormat needs its module here"

_DETECTORS = tuple((found, module.detects) for found, module in FORMATS.items())


def detect(record: dict) -> DatasetFormat | None:
    """The format a record is written in, from its keys alone."""
    for found, detects in _DETECTORS:
        if detects(record):
            return found
    return None


def format_of_key(key: str) -> DatasetFormat:
    """The format whose `KEY` is `key` (the field of a MIXED_FORMATS issue)."""
    return next(found for found, module in FORMATS.items() if module.KEY == key)


def hints() -> str:
    """What each format needs, for UNKNOWN_FORMAT."""
    return "; ".join(module.HINT for module in reversed(FORMATS.values()))
