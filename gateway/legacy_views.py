"""What the seed's port-8200 routes answer, built from tunewire's messages.

Every field the seed's API reference names is here under that name (`progress`
{`current_epoch`, ...}, `lora_details` {`enabled`, ...}, `training_jobs`, ...);
tunewire's own fields stay beside them for clients that learned those.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from tunewire import enum_words
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
# The seed's answers list at most this many errors and warnings of a file.
MAX_LISTED_ISSUES = 10
# The one provider that exists here: MLX on this machine, through the trainer.
PROVIDER = "mlx"


def _time(ts: timestamp_pb2.Timestamp) -> str | None:
    return ts.ToJsonString() if ts.seconds or ts.nanos else None


def _adapter(job: training_job_pb.TrainingJob) -> bool:
    return job.spec.method != training_job_pb.TRAINING_METHOD_FULL


def job_summary(job: training_job_pb.TrainingJob) -> dict:
    """One entry of `GET /train`'s `training_jobs`."""
    return {
        "job_id": job.id,
        "experiment_name": job.spec.display_name,
        "status": OLD_STATUS.get(job.state, "queued"),
        "state": training_job_pb.JobState.Name(job.state),
        "model": job.spec.model,
        "method": enum_words.display_word(training_job_pb.TrainingMethod, job.spec.method),
        "lora_enabled": _adapter(job),
        "created_at": _time(job.create_time),
        "started_at": _time(job.start_time),
        "completed_at": _time(job.end_time),
    }


def _lora_details(job: training_job_pb.TrainingJob) -> dict:
    lo = job.lora_details
    if not _adapter(job):
        return {"enabled": False}
    return {
        "enabled": True,
        "rank": lo.rank,
        "alpha": lo.alpha,
        "target_modules": list(lo.target_modules),
        "trainable_params": lo.trainable_parameters,
        "total_params": lo.total_parameters,
        "trainable_percentage": round(lo.trainable_percent, 4),
        "scale": lo.scale,
        "dropout": lo.dropout,
        "num_layers": lo.num_layers,
        "trainable_percent": round(lo.trainable_percent, 4),
    }


def job_status(job: training_job_pb.TrainingJob) -> dict:
    """A job as `GET /train/{job_id}/status` answers it."""
    m, ev, p = job.latest_metrics, job.latest_evaluation, job.progress
    peak_mb = round(m.peak_memory_bytes / 2**20, 1) if m.peak_memory_bytes else None
    return {
        **job_summary(job),
        "model_name": job.spec.model,
        "queue_position": job.queue_position,
        "progress": {
            "current_epoch": p.epoch,
            "total_epochs": p.total_epochs,
            "current_step": p.step,
            "total_steps": p.total_steps,
            "percentage": round(p.percent, 2),
            "epoch": p.epoch,
            "eta_seconds": p.eta.seconds if p.HasField("eta") else None,
        },
        "metrics": {
            "loss": m.loss if m.step else None,
            "learning_rate": m.learning_rate if m.step else None,
            "tokens_per_second": m.tokens_per_second if m.step else None,
            # MLX's peak memory (unified memory on Apple silicon, host memory on CPU).
            "gpu_memory_used_mb": peak_mb,
            "iterations_per_second": m.iterations_per_second if m.step else None,
            "trained_tokens": m.trained_tokens,
            "peak_memory_mb": peak_mb,
            "validation_loss": ev.validation_loss if ev.step else None,
            "perplexity": ev.perplexity if ev.step else None,
        },
        "lora_details": _lora_details(job),
        "dataset_details": dataset_info(job),
        "output_dir": job.artifacts.output_dir,
        "adapter_path": job.artifacts.adapter_path or None,
        "error": job.error.message if job.HasField("error") and job.error.code else None,
    }


def format_word(fmt: int) -> str | None:
    """The seed's lower-case format word ("alpaca"); None when the format is not known."""
    if not fmt:
        return None
    return enum_words.word(dataset_pb.DatasetFormat, fmt)


def dataset_info(job: training_job_pb.TrainingJob) -> dict:
    ds, p = job.dataset_details, job.progress
    total = ds.train_records + ds.validation_records
    # How far through its training records the job is, by its progress.
    processed = min(ds.train_records, round(ds.train_records * p.percent / 100))
    return {
        "format": format_word(ds.format) or "",
        "total_samples": total,
        "processed_samples": processed,
        "dataset_path": job.spec.dataset.path or None,
        "dataset_id": ds.dataset_id or job.spec.dataset.dataset_id or None,
        "train_records": ds.train_records,
        "validation_records": ds.validation_records,
        "train_tokens": ds.train_tokens,
    }


def validation_result(report: dataset_pb.ValidationReport, file_path: str) -> dict:
    """A validation report as `POST /datasets/validate` answers it: at most ten
    errors and warnings as readable lines, and the same issues with their fields."""

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

    errors = report.errors[:MAX_LISTED_ISSUES]
    warnings = report.warnings[:MAX_LISTED_ISSUES]
    return {
        "valid": report.valid,
        "format": format_word(report.format),
        "total_samples": report.total_samples,
        "errors": [line(i) for i in errors],
        "warnings": [line(i) for i in warnings],
        "sample_preview": [
            {"messages": [{"role": m.role, "content": m.content} for m in p.conversation.messages]}
            for p in report.sample_preview
        ],
        "file_path": file_path,
        "valid_samples": report.valid_samples,
        "error_count": report.error_count,
        "warning_count": report.warning_count,
        "error_details": [issue(i) for i in errors],
        "warning_details": [issue(i) for i in warnings],
        "statistics": {
            "records": report.statistics.records,
            "turns": report.statistics.turns,
            "characters": report.statistics.characters,
        },
    }


def providers(available: bool) -> dict:
    """`GET /providers`: the seed listed its LLM back-ends; here the local MLX one."""
    return {
        "available_providers": [PROVIDER] if available else [],
        "current_provider": {
            "active_provider": PROVIDER,
            "available_providers": [{"name": PROVIDER, "available": available}],
        },
    }
