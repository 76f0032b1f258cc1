"""A request's `tunewire.v1.ValidationOptions` as the library's options: the one conversion.

The proto documents each field's range; an unset field (0 in proto3) is left
out, so the library's own default applies (datasets/options.py owns them).
Every bad field is reported at once, as INVALID_ARGUMENT naming it.
"""

from __future__ import annotations

from tunewire.datasets.api import ValidationOptions
from tunewire.errors import FieldViolation, invalid_argument
from tunewire.trainer.model_inspect import ModelUnusable, resolve_model_dir
from tunewire.trainer.paths import Roots
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb

# The ranges the proto documents for requests (the library accepts wider ones).
MAX_ISSUES = 10_000
MAX_PREVIEW_RECORDS = 100


def validation_options(
    message: dataset_service_pb.ValidationOptions | None,
    model_roots: Roots,
    field: str = "options",
) -> ValidationOptions:
    """Library options from a request's options (None: all defaults)."""
    if message is None:
        return ValidationOptions()
    violations = []
    chosen: dict = {}
    for name, high in (("max_issues", MAX_ISSUES), ("preview_records", MAX_PREVIEW_RECORDS)):
        value = getattr(message, name)
        if not 0 <= value <= high:
            violations.append(
                FieldViolation(f"{field}.{name}", f"must be between 0 and {high:,}, got {value}")
            )
        elif value:
            chosen[name] = value
    if message.max_tokens < 0:
        violations.append(
            FieldViolation(
                f"{field}.max_tokens", f"must be 0 (off) or positive, got {message.max_tokens}"
            )
        )
    elif message.max_tokens:
        chosen["max_tokens"] = message.max_tokens
        if not message.tokenizer:
            violations.append(
                FieldViolation(f"{field}.max_tokens", f"needs {field}.tokenizer to count tokens")
            )
    if message.tokenizer:
        try:
            chosen["tokenizer"] = str(
                resolve_model_dir(message.tokenizer, model_roots, f"{field}.tokenizer")
            )
        except ModelUnusable as exc:
            violations.append(FieldViolation(f"{field}.tokenizer", str(exc)))
    if violations:
        raise invalid_argument(violations)
    return ValidationOptions(**chosen)
