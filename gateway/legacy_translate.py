"""The seed's port-8200 field names ↔ tunewire's protos, as plain functions.

Old clients send `{"model_name", "lora": {"lora_r", ...}, "dataset": {...}}` and
get field violations under those names; these functions turn one into the
other so that `legacy.py` only routes (answers are built in legacy_views.py).
Unknown fields are reported back as warnings rather than refused: old clients
may send things the seed accepted and ignored. Numbers are checked against
their field's type here (2**40 epochs is refused naming `epochs` and the
limit); what they mean is the trainer's to check.
"""

from __future__ import annotations

import math

from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2, status_pb2

from tunewire.errors import FieldViolation, clip, invalid_argument
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

DATASET_FORMATS = ("alpaca", "sharegpt", "messages", "auto")
FINE_TUNED_PREFIX = "fine-tuned/"

# Fields of the old request, their types, and where they go in TrainingJobSpec.
_TOP = {
    "experiment_name": (str, "display_name"),
    "model_name": (str, "model"),
    "epochs": (int, "hyperparameters.epochs"),
    "max_steps": (int, "hyperparameters.max_steps"),
    "learning_rate": (float, "hyperparameters.learning_rate"),
    "gradient_accumulation_steps": (int, "hyperparameters.gradient_accumulation_steps"),
    "warmup_steps": (int, "hyperparameters.warmup_steps"),
    "seed": (int, "hyperparameters.seed"),
    "save_steps": (int, "checkpointing.interval_steps"),
    "output_dir": (str, None),
    "lora": (dict, None),
    "dataset": (dict, None),
}
_LORA = {
    "use_lora": (bool, None),
    "use_qlora": (bool, None),
    "lora_r": (int, "lora.rank"),
    "lora_alpha": (float, "lora.alpha"),
    "lora_dropout": (float, "lora.dropout"),
    "lora_target_modules": (list, "lora.target_modules"),
    "num_layers": (int, "lora.num_layers"),
}
_DATASET = {
    "dataset_path": (str, "dataset.path"),
    "dataset_format": (str, None),
    "batch_size": (int, "hyperparameters.batch_size"),
    "max_seq_length": (int, "hyperparameters.max_seq_length"),
    "validation_split": (float, "validation_fraction"),
}
# Spec field paths in the trainer's errors, back to the names old clients sent.
OLD_FIELD_NAMES = {
    f"spec.{target}": (f"{section}.{name}" if section else name)
    for section, table in (("", _TOP), ("lora", _LORA), ("dataset", _DATASET))
    for name, (_, target) in table.items()
    if target
}


# Integer ranges of the spec's field types: a bigger number is refused here,
# naming the field and the limit, instead of failing in protobuf.
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38


def _spec_field(path: str) -> FieldDescriptor:
    descriptor = training_job_pb.TrainingJobSpec.DESCRIPTOR
    *parents, leaf = path.split(".")
    for name in parents:
        descriptor = descriptor.fields_by_name[name].message_type
    return descriptor.fields_by_name[leaf]


def _range_problem(value, target: str | None) -> str | None:
    """Why a well-typed number cannot go into the spec field `target` (None if it can)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        field = _spec_field(target) if target else None
        if field is not None and field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT:
            if abs(value) > _FLOAT32_MAX:
                return f"must be at most {_FLOAT32_MAX:.4g} in size, got {value!r}"
    elif isinstance(value, int) and not isinstance(value, bool) and target:
        low, high = _INT_RANGES[_spec_field(target).cpp_type]
        if not low <= value <= high:
            return f"must be from {low} to {high}, got {value}"
    return None


def _typed(value, kind, where: str, target: str | None = None):
    """`value` as `kind`, or a FieldViolation naming `where` and what it must be."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return FieldViolation(where, "must be a list of strings")
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        shown = clip(repr(value), 60)
        return FieldViolation(where, f"must be {_KIND_WORDS[kind]}, got {shown}")
    problem = _range_problem(value, target)
    return FieldViolation(where, problem) if problem else value


_KIND_WORDS = {
    int: "a whole number",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "an object",
}


def _section(body: dict, name: str) -> dict:
    """A nested object of the body ({} when absent or not an object: the top
    level's check names that)."""
    value = body.get(name)
    return value if isinstance(value, dict) else {}


def _read(
    section: dict, table: dict, prefix: str, warnings: list[str], violations: list[FieldViolation]
) -> dict:
    values = {}
    for name, value in section.items():
        where = f"{prefix}{name}"
        if name not in table:
            warnings.append(f"ignored unknown field {clip(where, 100)!r}")
            continue
        if value is None:
            continue
        kind, target = table[name]
        typed = _typed(value, kind, where, target)
        if isinstance(typed, FieldViolation):
            violations.append(typed)
        else:
            values[name] = typed
    return values


def _assign(spec: training_job_pb.TrainingJobSpec, path: str, value) -> None:
    *parents, leaf = path.split(".")
    target = spec
    for name in parents:
        target = getattr(target, name)
    if isinstance(value, list):
        getattr(target, leaf).extend(value)
    else:
        setattr(target, leaf, value)


def train_request_to_spec(body: dict) -> tuple[training_job_pb.TrainingJobSpec, dict, list[str]]:
    """(spec, old values worth reporting, warnings) for a `POST /train/start` body."""
    warnings: list[str] = []
    violations: list[FieldViolation] = []
    top = _read(body, _TOP, "", warnings, violations)
    lora = _read(_section(body, "lora"), _LORA, "lora.", warnings, violations)
    data = _read(_section(body, "dataset"), _DATASET, "dataset.", warnings, violations)
    for where, present in (
        ("model_name", body.get("model_name") is not None),
        ("dataset.dataset_path", _section(body, "dataset").get("dataset_path") is not None),
    ):
        if not present:
            violations.append(FieldViolation(where, "is required"))
    fmt = data.get("dataset_format", "auto").lower()
    if fmt not in DATASET_FORMATS:
        violations.append(
            FieldViolation(
                "dataset.dataset_format",
                f"must be one of {', '.join(DATASET_FORMATS)}, got {clip(repr(fmt), 60)}",
            )
        )
    if violations:
        raise invalid_argument(violations)

    spec = training_job_pb.TrainingJobSpec()
    for table, values in ((_TOP, top), (_LORA, lora), (_DATASET, data)):
        for name, value in values.items():
            target = table[name][1]
            if target:
                _assign(spec, target, value)
    if lora.get("use_qlora"):
        spec.method = training_job_pb.TRAINING_METHOD_QLORA
    elif lora.get("use_lora", True):
        spec.method = training_job_pb.TRAINING_METHOD_LORA
    else:
        spec.method = training_job_pb.TRAINING_METHOD_FULL
    if "experiment_name" in top:
        spec.metadata["experiment_name"] = top["experiment_name"]
    if "output_dir" in top:
        spec.metadata["requested_output_dir"] = top["output_dir"]
        warnings.append(
            "output_dir is reported but not used: the trainer keeps each job's files in its own directory"
        )
    return spec, {"dataset_format": fmt, "output_dir": top.get("output_dir")}, warnings


# Generate's numbers and the sizes their protobuf types hold.
_GENERATE_NUMBERS = {
    "max_tokens": (int, 2**31 - 1),
    "temperature": (float, _FLOAT32_MAX),
    "top_p": (float, _FLOAT32_MAX),
    "seed": (int, 2**63 - 1),
}


def generate_request(body: dict) -> training_service_pb.GenerateRequest:
    """The GenerateRequest of a `POST /generate` body (`model` is
    "fine-tuned/JOB_ID" or a base model)."""
    model = body.get("model", "")
    prompt = body.get("prompt", "")
    violations = []
    if not isinstance(model, str) or not model:
        violations.append(
            FieldViolation("model", f"is required: '{FINE_TUNED_PREFIX}JOB_ID' or a base model")
        )
    if not isinstance(prompt, str) or not prompt:
        violations.append(FieldViolation("prompt", "is required: the text to continue"))
    message = training_service_pb.GenerateRequest()
    for name, (kind, limit) in _GENERATE_NUMBERS.items():
        value = body.get(name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not isinstance(value, int)):
            word = "a whole number" if kind is int else "a number"
            violations.append(FieldViolation(name, f"must be {word}, got {clip(repr(value), 60)}"))
        elif not abs(value) <= limit:  # also NaN
            violations.append(
                FieldViolation(name, f"must be at most {limit:g} in size, got {value!r}")
            )
        else:
            setattr(message, name, value)
    if violations:
        raise invalid_argument(violations)
    message.prompt = prompt
    if model.startswith(FINE_TUNED_PREFIX):
        message.job_id = model.removeprefix(FINE_TUNED_PREFIX)
    else:
        message.model = model
    return message


def with_old_field_names(status: status_pb2.Status) -> status_pb2.Status:
    """The trainer's INVALID_ARGUMENT with field paths as old clients named them
    (`spec.lora.rank` → `lora.lora_r`); the new path stays in the description."""
    out = status_pb2.Status()
    out.CopyFrom(status)
    for detail in out.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                old = OLD_FIELD_NAMES.get(v.field)
                if old:
                    v.description = f"{v.description} ({v.field})"
                    v.field = old
            detail.Pack(bad)
    return out
