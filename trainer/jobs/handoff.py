"""The hand-off from daemon to worker: the worker's config, built from the stored job.

`worker_config(job)` builds the worker's dataclass straight from the job's
resolved spec: every field of `WorkerConfig` takes the spec's field of the same
name (enums as the proto's words), and what the spec does not hold comes from
the job (resolved model and data paths, ranks' hosts, id, directory). The runner
writes it to JOB_DIR/worker_config.json once per start (`write_config`); the
file is never read back by the daemon, and nothing but the runner (and tests
and benchmarks, through these same functions) writes it. Resuming is an argument
of the worker's command line, not part of the file.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from tunewire import enum_words
from tunewire.trainer.jobs import spec as job_spec
from tunewire.trainer.paths import ANYWHERE
from tunewire.trainer.protocol import config as worker
from tunewire.trainer.protocol import job_layout
from tunewire.trainer.protocol.codec import PROTOCOL_VERSION
from tunewire.v1 import training_job_pb2 as training_job_pb

CONFIG_FILE = job_layout.CONFIG_FILE


class StaleJob(ValueError):
    """A job stored by an older trainer, without the resolved inputs a worker needs."""


def worker_config(job: training_job_pb.TrainingJob) -> worker.WorkerConfig:
    """The config the worker of `job` runs with."""
    inputs = job.resolved
    if not inputs.model_path or not inputs.train_path:
        raise StaleJob(
            f"job {job.id} was created by an older trainer and lacks its resolved model and "
            "data; create it again"
        )
    overrides: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "job_id": job.id,
        "job_dir": job.artifacts.output_dir,
        "model": inputs.model_path,
        "train_path": inputs.train_path,
        "validation_path": inputs.validation_path or None,
        "initial_adapter_file": inputs.initial_adapter_path or None,
        "distributed": {
            "world_size": job.distributed.world_size,
            "hosts": list(job.distributed.hosts),
        },
    }
    config: worker.WorkerConfig = _from_message(worker.WorkerConfig, job.spec, overrides)
    return config


def _from_message(cls: type[Any], message: Message, overrides: dict[str, Any]) -> Any:
    """A `cls` record from the same-named fields of `message` (and `overrides`)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        given = overrides.get(f.name)
        if f.name in overrides and not isinstance(given, dict):
            values[f.name] = given
            continue
        fd = message.DESCRIPTOR.fields_by_name[f.name]
        value = getattr(message, f.name)
        if fd.message_type is not None and not fd.is_repeated:
            optional = type(None) in typing.get_args(hints[f.name])
            if optional and not message.HasField(f.name):
                values[f.name] = None  # a section the method does not use (LoRA for FULL)
            else:
                values[f.name] = _from_message(_record_type(hints[f.name]), value, given or {})
        elif fd.enum_type is not None:
            values[f.name] = enum_words.word(typing.cast(EnumDescriptor, fd.enum_type), value)
        elif fd.is_repeated:
            values[f.name] = list(value)
        else:
            values[f.name] = value
    return cls(**values)


def _record_type(hint: Any) -> type[Any]:
    """The record type of `X` or `X | None`."""
    options = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    (record,) = options
    return typing.cast(type[Any], record)


def write_config(job_dir: str | os.PathLike[str], config: worker.WorkerConfig) -> Path:
    """Writes JOB_DIR/worker_config.json atomically; returns its path."""
    path = Path(job_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(worker.encode(config), encoding="utf-8")
    os.replace(tmp, path)
    return path


def config_from_spec(
    spec: training_job_pb.TrainingJobSpec,
    *,
    job_id: str,
    job_dir: Path,
    train_path: Path,
    validation_path: Path | None = None,
    wandb_online_allowed: bool = False,
) -> worker.WorkerConfig:
    """The worker config a daemon would hand a job of `spec` whose data is already normalized
    (benchmarks and tests start workers this way); ValueError lists the spec's violations."""
    resolved = job_spec.resolve(
        spec, job_id=job_id, wandb_online_allowed=wandb_online_allowed, model_roots=ANYWHERE
    )
    if resolved.violations:
        raise ValueError("; ".join(f"{v.field}: {v.description}" for v in resolved.violations))
    job = job_spec.new_job(
        resolved,
        job_id=job_id,
        job_dir=job_dir,
        train_path=train_path,
        validation_path=validation_path,
    )
    return worker_config(job)
