"""The dataset library's one public door: `from tunewire.datasets.api import ...`.

Code outside `datasets/` (the trainer, the worker, the CLI, benchmarks)
imports from here only, so the modules behind it can be rearranged freely
(a test checks it). Validate a file or bytes; normalize a file to canonical
JSONL with a train/validation split, or split a canonical file again; read
canonical records back; compute the loss mask of a conversation (and the two
sequences of a preference pair); and convert
reports to `tunewire.v1` messages. Those conversions need protobuf and load
on first use, so the library (and the training worker) imports without it.
"""

from typing import Any

from tunewire.datasets.canonical import iter_canonical
from tunewire.datasets.issues import Issue, Severity
from tunewire.datasets.masking import MODES, render_marked, trained_token_mask
from tunewire.datasets.normalize import TRAIN_FILE, VALIDATION_FILE, NormalizeResult, normalize_file
from tunewire.datasets.options import ValidationOptions
from tunewire.datasets.pair_tokens import PairTokens, is_pair, pair_tokens
from tunewire.datasets.parallel import processes_for
from tunewire.datasets.report import DatasetFormat, RecordPreview, Statistics, ValidationReport
from tunewire.datasets.source import Layout
from tunewire.datasets.split import SplitResult, split_canonical
from tunewire.datasets.tokens import load_tokenizer
from tunewire.datasets.validate import validate_bytes, validate_file

# From report_proto.py, loaded when first asked for (module __getattr__, PEP 562).
_PROTO_NAMES = ("conversation_to_proto", "report_to_proto", "statistics_to_proto")

__all__ = [
    "MODES",
    "TRAIN_FILE",
    "VALIDATION_FILE",
    "DatasetFormat",
    "Issue",
    "Layout",
    "NormalizeResult",
    "PairTokens",
    "RecordPreview",
    "Severity",
    "SplitResult",
    "Statistics",
    "ValidationOptions",
    "ValidationReport",
    "is_pair",
    "iter_canonical",
    "load_tokenizer",
    "normalize_file",
    "pair_tokens",
    "processes_for",
    "render_marked",
    "split_canonical",
    "trained_token_mask",
    "validate_bytes",
    "validate_file",
    *_PROTO_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _PROTO_NAMES:
        from tunewire.datasets import report_proto

        return getattr(report_proto, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
