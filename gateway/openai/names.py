"""Names and ids the OpenAI routes give to tunewire's objects, and back.

Jobs and files keep tunewire's ids (`job-…`, `ds-…`), so the same id works with
`tunewire jobs show` and the `/v1` API. Objects OpenAI names that tunewire keeps
inside a job get ids that carry the job: events `ftevent-{job}-{sequence}`,
checkpoints `ftckpt-{job}-{step}`, the metrics file `file-result-{job}`.
A fine-tuned model is `ft:{base}:{suffix}:{job id}`, and one of its checkpoints
`ft:{base}:{suffix}:{job id}:ckpt-step-{step}`, as OpenAI writes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunewire.v1 import training_job_pb2 as training_job_pb

JOB_PREFIX = "job-"
EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt-"
RESULT_FILE_PREFIX = "file-result-"
CHECKPOINT_MODEL = re.compile(r"ckpt-step-(\d{1,18})")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SUFFIX_CHARS = re.compile(r"[A-Za-z0-9._-]*")
MAX_SUFFIX = 64


def base_name(model: str) -> str:
    """A model's short name: the last part of a path or hub id ("tiny", "SmolLM2-135M-Instruct")."""
    last = model.rstrip("/").rsplit("/", 1)[-1]
    return _UNSAFE.sub("-", last).strip("-") or "model"


def suffix_of(job: training_job_pb.TrainingJob) -> str:
    """The job's display name as a model-name suffix; the server's default (the id) is none."""
    name = job.spec.display_name
    if not name or name == job.id:
        return ""
    return _UNSAFE.sub("-", name).strip("-")[:MAX_SUFFIX]


def fine_tuned_model(job: training_job_pb.TrainingJob) -> str:
    return f"ft:{base_name(job.spec.model)}:{suffix_of(job)}:{job.id}"


def checkpoint_model(job: training_job_pb.TrainingJob, step: int) -> str:
    return f"{fine_tuned_model(job)}:ckpt-step-{step}"


@dataclass(frozen=True)
class ModelRef:
    """What a `model` parameter names: a job's model (maybe at a checkpoint) or a base model."""

    name: str
    job_id: str = ""
    step: int = 0

    @property
    def fine_tuned(self) -> bool:
        return bool(self.job_id)


def parse_model(name: str) -> ModelRef:
    if not name.startswith("ft:"):
        return ModelRef(name)
    parts = name.split(":")
    step = 0
    match = CHECKPOINT_MODEL.fullmatch(parts[-1])
    if match and len(parts) >= 5:
        step = int(match.group(1))
        parts = parts[:-1]
    job_id = parts[-1] if len(parts) >= 4 else ""
    return ModelRef(name, job_id=job_id if job_id.startswith(JOB_PREFIX) else "", step=step)


def _inner_id(prefix: str, job_id: str, number: int) -> str:
    return f"{prefix}{job_id.removeprefix(JOB_PREFIX)}-{number}"


def event_id(job_id: str, sequence: int) -> str:
    return _inner_id(EVENT_PREFIX, job_id, sequence)


def checkpoint_id(job_id: str, step: int) -> str:
    return _inner_id(CHECKPOINT_PREFIX, job_id, step)


def number_in(object_id: str, prefix: str, job_id: str) -> int | None:
    """The sequence or step in an event or checkpoint id of `job_id`; None if it is not one."""
    head = f"{prefix}{job_id.removeprefix(JOB_PREFIX)}-"
    tail = object_id.removeprefix(head)
    if tail == object_id or not tail.isdigit() or len(tail) > 18:
        return None
    return int(tail)


def result_file_id(job_id: str) -> str:
    return f"{RESULT_FILE_PREFIX}{job_id.removeprefix(JOB_PREFIX)}"


def job_of_result_file(file_id: str) -> str | None:
    if not file_id.startswith(RESULT_FILE_PREFIX):
        return None
    return JOB_PREFIX + file_id.removeprefix(RESULT_FILE_PREFIX)
