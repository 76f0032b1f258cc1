"""How to validate: the library's options, their defaults and their limits (one owner for each).

Servers and the CLI build these from their requests and flags and leave unset
what the caller did not choose, so every default lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewire.datasets.masking import MODES


@dataclass(frozen=True)
class ValidationOptions:
    max_issues: int = 100  # errors and warnings listed in the report; counts cover the whole file
    preview_records: int = 3  # normalized records in `sample_preview`
    tokenizer: Any = (
        None  # model directory (or hub id) or a loaded tokenizer: token counts, preview
    )
    max_tokens: int = 0  # TOO_MANY_TOKENS above this many tokens (needs `tokenizer`); 0: off
    max_line_bytes: int = (
        16 * 1024 * 1024
    )  # longer lines (array records) are LINE_TOO_LONG, skipped
    short_output_chars: int = 3  # SHORT_OUTPUT for trained text shorter than this, whitespace aside
    max_tracked_records: int = 4_000_000  # distinct records remembered for DUPLICATE_RECORD
    loss_masking: str = "all_assistant"  # which spans the preview marks as trained (see masking.py)
    workers: int = 0  # processes for a large plain JSONL file; 0: one per CPU (at most 8); 1: none
    parallel_min_bytes: int = 64 * 1024 * 1024  # smaller files are read by this process alone

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_issues", 0, 1_000_000),
            ("preview_records", 0, 10_000),
            ("max_tokens", 0, 1 << 31),
            ("max_line_bytes", 1, 1 << 31),
            ("short_output_chars", 0, 1 << 20),
            ("max_tracked_records", 0, 1 << 32),
            ("workers", 0, 256),
            ("parallel_min_bytes", 0, 1 << 62),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.loss_masking not in MODES:
            raise ValueError(
                f"loss_masking must be one of {', '.join(MODES)}, got {self.loss_masking!r}"
            )
        if self.max_tokens and self.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer to count tokens with")
