"""The dataset library's public API in one place: `from tunewire.datasets.api import ...`.

Validate a file or bytes, normalize a file to canonical JSONL with a
train/validation split, read canonical records back, compute the loss mask of
a conversation, and convert reports to `tunewire.v1` messages (report_proto,
imported on its own as it needs protobuf).
"""

from tunewire.datasets.canonical import iter_canonical
from tunewire.datasets.issues import Issue, Severity
from tunewire.datasets.masking import MODES, render_marked, trained_token_mask
from tunewire.datasets.normalize import TRAIN_FILE, VALIDATION_FILE, NormalizeResult, normalize_file
from tunewire.datasets.report import DatasetFormat, RecordPreview, Statistics, ValidationReport
from tunewire.datasets.source import Layout
from tunewire.datasets.tokens import load_tokenizer
from tunewire.datasets.validate import ValidationOptions, validate_bytes, validate_file

__all__ = [
    "MODES",
    "TRAIN_FILE",
    "VALIDATION_FILE",
    "DatasetFormat",
    "Issue",
    "Layout",
    "NormalizeResult",
    "RecordPreview",
    "Severity",
    "Statistics",
    "ValidationOptions",
    "ValidationReport",
    "iter_canonical",
    "load_tokenizer",
    "normalize_file",
    "render_marked",
    "trained_token_mask",
    "validate_bytes",
    "validate_file",
]
