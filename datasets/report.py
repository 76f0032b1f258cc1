"""What validation returns: the report, its statistics and the record previews.

Plain dataclasses that mirror `tunewire.v1.ValidationReport` (see
report_proto.py for the conversion), so the library needs no protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tunewire.datasets.issues import Issue
from tunewire.datasets.source import Layout


class DatasetFormat(str, Enum):
    ALPACA = "alpaca"
    SHAREGPT = "sharegpt"
    MESSAGES = "messages"
    OPENAI_PREFERENCE = "openai_preference"
    CHOSEN_REJECTED = "chosen_rejected"

    @property
    def title(self) -> str:
        return _TITLES[self.value]

    @property
    def is_preference(self) -> bool:
        """Records are pairs of replies to one prompt (what DPO and ORPO train on)."""
        return self in (DatasetFormat.OPENAI_PREFERENCE, DatasetFormat.CHOSEN_REJECTED)


_TITLES = {
    "alpaca": "Alpaca",
    "sharegpt": "ShareGPT",
    "messages": "chat messages",
    "openai_preference": "OpenAI preference pairs",
    "chosen_rejected": "prompt/chosen/rejected pairs",
}


@dataclass
class Statistics:
    """Size of the valid part of a dataset (and of its split, after normalization)."""

    records: int = 0
    turns: int = 0
    characters: int = 0
    tokens: int = 0  # after the chat template; 0 without a tokenizer
    train_records: int = 0
    validation_records: int = 0


@dataclass
class RecordPreview:
    """A normalized record as the model will see it."""

    conversation: (
        dict  # {"messages": [{"role", "content", "trainable"}], "line": N, "tools"?: [...]}
    )
    rendered: str = (
        ""  # chat-template text, trained spans between "<<<" and ">>>"; "" without tokenizer
    )
    tokens: int = 0
    trained_tokens: int = 0


@dataclass
class ValidationReport:
    valid: bool = False  # no error (warnings allowed) and at least one record: the file trains
    format: DatasetFormat | None = None
    layout: Layout | None = None
    total_samples: int = 0  # records read, valid or not
    valid_samples: int = 0
    error_count: int = 0
    warning_count: int = 0
    errors: list[Issue] = field(default_factory=list)  # the first `max_issues`
    warnings: list[Issue] = field(default_factory=list)  # the first `max_issues`
    issue_counts: dict[str, int] = field(default_factory=dict)  # per code, whole file
    sample_preview: list[RecordPreview] = field(default_factory=list)
    statistics: Statistics = field(default_factory=Statistics)
    size_bytes: int = 0  # bytes read from the file (compressed size for .gz)
