"""tunewire's TrainingJob as OpenAI's `fine_tuning.job` object, field for field.

The fields are those of openai-python's `types/fine_tuning/fine_tuning_job.py`.
Hyperparameters are echoed as the job really runs them (defaults resolved);
everything tunewire knows beyond OpenAI's fields is under `tunewire`.
"""

from __future__ import annotations

import math
import time

from google.protobuf import json_format

from tunewire.gateway.openai import names
from tunewire.gateway.openai.errors import details
from tunewire.spec_defaults import default_learning_rate
from tunewire.v1 import training_job_pb2 as training_job_pb

# OpenAI's status words. A job being cancelled is "cancelled" at once, as
# OpenAI answers a cancel; `tunewire.state` still says CANCELLING.
STATUS = {
    training_job_pb.JOB_STATE_QUEUED: "queued",
    training_job_pb.JOB_STATE_STARTING: "running",
    training_job_pb.JOB_STATE_RUNNING: "running",
    training_job_pb.JOB_STATE_CANCELLING: "cancelled",
    training_job_pb.JOB_STATE_SUCCEEDED: "succeeded",
    training_job_pb.JOB_STATE_FAILED: "failed",
    training_job_pb.JOB_STATE_CANCELLED: "cancelled",
    training_job_pb.JOB_STATE_PAUSED: "paused",
}
# tunewire's spec fields in a trainer error, as the OpenAI parameter that set them.
PARAMS = (
    ("spec.model", "model"),
    ("spec.initial_adapter", "model"),
    ("spec.dataset", "training_file"),
    ("spec.validation_dataset", "validation_file"),
    ("spec.hyperparameters.epochs", "hyperparameters.n_epochs"),
    ("spec.hyperparameters.batch_size", "hyperparameters.batch_size"),
    ("spec.hyperparameters.learning_rate", "hyperparameters.learning_rate_multiplier"),
    ("spec.hyperparameters.seed", "seed"),
    ("spec.display_name", "suffix"),
    ("spec.metadata", "metadata"),
    ("spec.wandb", "integrations"),
)


def openai_param(field: str) -> str:
    """The OpenAI parameter for a spec field path; tunewire's own fields under `tunewire.`."""
    for prefix, param in PARAMS:
        if field == prefix or field.startswith(prefix + ".") or field.startswith(prefix + "["):
            return param
    return "tunewire." + field.removeprefix("spec.") if field else None


def _seconds(ts) -> int | None:
    return ts.seconds if ts.seconds or ts.nanos else None


def hyperparameters(job: training_job_pb.TrainingJob) -> dict:
    hp = job.spec.hyperparameters
    if hp.HasField("epochs") and not hp.max_steps:
        epochs = hp.epochs
    else:  # a step budget (a tunewire extra): the epochs it makes, once known
        epochs = math.ceil(job.progress.total_epochs) if job.progress.total_epochs else None
    multiplier = hp.learning_rate / default_learning_rate(job.spec.method)
    return {
        "batch_size": hp.batch_size,
        "learning_rate_multiplier": float(f"{multiplier:.6g}"),
        "n_epochs": epochs,
    }


def _error(job: training_job_pb.TrainingJob) -> dict | None:
    if job.state != training_job_pb.JOB_STATE_FAILED or not job.HasField("error"):
        return None
    reason, violations = details(job.error)
    field = violations[0]["field"] if violations else ""
    return {
        "code": (reason or "failed").lower(),
        "message": job.error.message.splitlines()[0] if job.error.message else "the job failed",
        "param": openai_param(field) if field else None,
    }


def _integrations(job: training_job_pb.TrainingJob) -> list[dict] | None:
    w = job.spec.wandb
    if not w.project:
        return None
    return [
        {
            "type": "wandb",
            "wandb": {
                "project": w.project,
                "entity": w.entity or None,
                "name": w.name or None,
                "tags": list(w.tags),
            },
        }
    ]


def _estimated_finish(job: training_job_pb.TrainingJob) -> int | None:
    if STATUS.get(job.state) != "running" or not job.progress.HasField("eta"):
        return None
    return int(time.time() + job.progress.eta.seconds)


def _method(job: training_job_pb.TrainingJob, hp: dict) -> dict:
    if job.spec.preference.method == training_job_pb.PREFERENCE_METHOD_DPO:
        dpo = {**hp, "beta": job.spec.preference.beta}
        return {"type": "dpo", "dpo": {"hyperparameters": dpo}}
    return {"type": "supervised", "supervised": {"hyperparameters": hp}}


def tunewire_extras(job: training_job_pb.TrainingJob) -> dict:
    """What a tunewire client wants beyond OpenAI's fields (proto JSON names)."""

    def js(message) -> dict:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    return {
        "state": training_job_pb.JobState.Name(job.state),
        "queue_position": job.queue_position,
        "spec": js(job.spec),
        "progress": js(job.progress),
        "latest_metrics": js(job.latest_metrics),
        "latest_evaluation": js(job.latest_evaluation),
        "lora_details": js(job.lora_details),
        "dataset_details": js(job.dataset_details),
        "resume_count": job.resume_count,
        "last_event_sequence": job.last_event_sequence,
    }


def job_object(job: training_job_pb.TrainingJob) -> dict:
    succeeded = job.state == training_job_pb.JOB_STATE_SUCCEEDED
    hp = hyperparameters(job)
    training_file = (
        job.spec.dataset.dataset_id or job.dataset_details.dataset_id or (job.spec.dataset.path)
    )
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": _seconds(job.create_time) or 0,
        "error": _error(job),
        "fine_tuned_model": names.fine_tuned_model(job) if succeeded else None,
        "finished_at": _seconds(job.end_time),
        "hyperparameters": hp,
        "model": job.spec.model,
        "organization_id": job.owner,
        "result_files": [names.result_file_id(job.id)] if succeeded else [],
        "seed": job.spec.hyperparameters.seed,
        "status": STATUS.get(job.state, "queued"),
        "trained_tokens": job.latest_metrics.trained_tokens if succeeded else None,
        "training_file": training_file,
        "validation_file": job.spec.validation_dataset.dataset_id
        or job.spec.validation_dataset.path
        or None,
        "estimated_finish": _estimated_finish(job),
        "integrations": _integrations(job),
        "metadata": dict(job.spec.metadata) or None,
        "method": _method(job, hp),
        "user_provided_suffix": names.suffix_of(job) or None,
        "tunewire": tunewire_extras(job),
    }
