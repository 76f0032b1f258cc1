"""The seed's port-8200 field names ↔ tunewire's protos, as plain functions.

Old clients send `{"model_name", "lora": {"lora_r", ...}, "dataset": {...}}` and
read `{"status": "running", "metrics": {"loss", ...}}`; these functions turn one
into the other so that `legacy.py` only routes. Unknown fields are reported
back as warnings rather than refused: old clients may send things the seed
accepted and ignored.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from tunewire import enum_words
from tunewire.errors import FieldViolation, invalid_argument
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

# Old status words by state; anything not finished and not queued is "running".
OLD_STATUS = {
    training_job_pb.JOB_STATE_QUEUED: "queued",
    training_job_pb.JOB_STATE_STARTING: "running",
    training_job_pb.JOB_STATE_RUNNING: "running",
    training_job_pb.JOB_STATE_CANCELLING: "running",
    training_job_pb.JOB_STATE_SUCCEEDED: "completed",
    training_job_pb.JOB_STATE_FAILED: "failed",
    training_job_pb.JOB_STATE_CANCELLED: "cancelled",
    training_job_pb.JOB_STATE_PAUSED: "paused",
}
STATES_BY_OLD_STATUS = {
    word: [state for state, w in OLD_STATUS.items() if w == word]
    for word in dict.fromkeys(OLD_STATUS.values())
}
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


def _typed(value, kind, where: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid_argument([FieldViolation(where, "must be a list of strings")])
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise invalid_argument([FieldViolation(where, f"must be {kind.__name__}, got {value!r}")])
    return value


def _read(section: dict, table: dict, prefix: str, warnings: list[str]) -> dict:
    values = {}
    for name, value in section.items():
        where = f"{prefix}{name}"
        if name not in table:
            warnings.append(f"ignored unknown field {where!r}")
            continue
        if value is not None:
            values[name] = _typed(value, table[name][0], where)
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
    top = _read(body, _TOP, "", warnings)
    lora = _read(_typed(top.get("lora", {}), dict, "lora"), _LORA, "lora.", warnings)
    data = _read(_typed(top.get("dataset", {}), dict, "dataset"), _DATASET, "dataset.", warnings)
    missing = [
        FieldViolation(f, "is required")
        for f, present in (
            ("model_name", "model_name" in top),
            ("dataset.dataset_path", "dataset_path" in data),
        )
        if not present
    ]
    fmt = data.get("dataset_format", "auto").lower()
    if fmt not in DATASET_FORMATS:
        missing.append(
            FieldViolation(
                "dataset.dataset_format",
                f"must be one of {', '.join(DATASET_FORMATS)}, got {fmt!r}",
            )
        )
    if missing:
        raise invalid_argument(missing)

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


def _time(ts: timestamp_pb2.Timestamp) -> str | None:
    return ts.ToJsonString() if ts.seconds or ts.nanos else None


def job_status(job: training_job_pb.TrainingJob) -> dict:
    """A job as `GET /train/{job_id}/status` answered it."""
    adapter = job.spec.method != training_job_pb.TRAINING_METHOD_FULL
    m, ev, lo, p = job.latest_metrics, job.latest_evaluation, job.lora_details, job.progress
    return {
        "job_id": job.id,
        "experiment_name": job.spec.display_name,
        "status": OLD_STATUS.get(job.state, "queued"),
        "state": training_job_pb.JobState.Name(job.state),
        "model_name": job.spec.model,
        "method": enum_words.display_word(training_job_pb.TrainingMethod, job.spec.method),
        "lora_enabled": adapter,
        "queue_position": job.queue_position,
        "progress": {
            "current_step": p.step,
            "total_steps": p.total_steps,
            "epoch": p.epoch,
            "total_epochs": p.total_epochs,
            "percentage": round(p.percent, 2),
            "eta_seconds": p.eta.seconds if p.HasField("eta") else None,
        },
        "metrics": {
            "loss": m.loss if m.step else None,
            "learning_rate": m.learning_rate if m.step else None,
            "tokens_per_second": m.tokens_per_second if m.step else None,
            "iterations_per_second": m.iterations_per_second if m.step else None,
            "trained_tokens": m.trained_tokens,
            "peak_memory_mb": round(m.peak_memory_bytes / 2**20, 1)
            if m.peak_memory_bytes
            else None,
            "validation_loss": ev.validation_loss if ev.step else None,
            "perplexity": ev.perplexity if ev.step else None,
        },
        "lora_details": {
            "rank": lo.rank,
            "alpha": lo.alpha,
            "scale": lo.scale,
            "dropout": lo.dropout,
            "target_modules": list(lo.target_modules),
            "num_layers": lo.num_layers,
            "trainable_params": lo.trainable_parameters,
            "total_params": lo.total_parameters,
            "trainable_percent": round(lo.trainable_percent, 4),
        }
        if adapter
        else None,
        "dataset_details": dataset_info(job),
        "output_dir": job.artifacts.output_dir,
        "adapter_path": job.artifacts.adapter_path or None,
        "error": job.error.message if job.HasField("error") and job.error.code else None,
        "created_at": _time(job.create_time),
        "started_at": _time(job.start_time),
        "completed_at": _time(job.end_time),
    }


def format_word(fmt: int) -> str | None:
    """The seed's lower-case format word ("alpaca"); None when the format is not known."""
    if not fmt:
        return None
    return enum_words.word(dataset_pb.DatasetFormat, fmt)


def dataset_info(job: training_job_pb.TrainingJob) -> dict:
    ds = job.dataset_details
    return {
        "dataset_path": job.spec.dataset.path or None,
        "dataset_id": ds.dataset_id or job.spec.dataset.dataset_id or None,
        "format": format_word(ds.format) or "",
        "train_records": ds.train_records,
        "validation_records": ds.validation_records,
        "train_tokens": ds.train_tokens,
    }


def validation_result(report: dataset_pb.ValidationReport, file_path: str) -> dict:
    """A validation report as `POST /datasets/validate` answered it: errors and
    warnings as readable lines, and the same issues with their fields."""

    def line(issue: dataset_pb.DatasetIssue) -> str:
        field = f", field {issue.field}" if issue.field else ""
        return f"line {issue.line}{field}: {issue.code}: {issue.message}"

    def issue(i: dataset_pb.DatasetIssue) -> dict:
        return {
            "line": i.line,
            "column": i.column,
            "field": i.field,
            "code": i.code,
            "message": i.message,
        }

    return {
        "valid": report.valid,
        "file_path": file_path,
        "format": format_word(report.format),
        "total_samples": report.total_samples,
        "valid_samples": report.valid_samples,
        "error_count": report.error_count,
        "warning_count": report.warning_count,
        "errors": [line(i) for i in report.errors],
        "warnings": [line(i) for i in report.warnings],
        "error_details": [issue(i) for i in report.errors],
        "warning_details": [issue(i) for i in report.warnings],
        "sample_preview": [
            {"messages": [{"role": m.role, "content": m.content} for m in p.conversation.messages]}
            for p in report.sample_preview
        ],
        "statistics": {
            "records": report.statistics.records,
            "turns": report.statistics.turns,
            "characters": report.statistics.characters,
        },
    }


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
