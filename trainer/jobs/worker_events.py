"""Translation of the worker's JSON-line events into job changes and API events.

Pure functions: given the event a worker wrote, say how the stored job changes
and which `TrainingEvent` (if any) the job's log gets. The runner applies both
in one store transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from tunewire.v1 import training_event_pb2 as event_pb
from tunewire.v1 import training_job_pb2 as job_pb

JobChange = Callable[[job_pb.TrainingJob], None]

_LEVELS = {
    "DEBUG": event_pb.LOG_LEVEL_DEBUG,
    "INFO": event_pb.LOG_LEVEL_INFO,
    "WARNING": event_pb.LOG_LEVEL_WARNING,
    "ERROR": event_pb.LOG_LEVEL_ERROR,
}


@dataclass
class Translation:
    change: JobChange | None
    event: event_pb.TrainingEvent | None


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds:
        ts.FromNanoseconds(int(seconds * 1e9))
    else:
        ts.GetCurrentTime()
    return ts


def _num(d: dict, key: str, default: float = 0.0) -> float:
    value = d.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return default


def _int(d: dict, key: str) -> int:
    return int(_num(d, key))


def log_event(message: str, level: int = event_pb.LOG_LEVEL_INFO) -> event_pb.TrainingEvent:
    return event_pb.TrainingEvent(log=event_pb.LogLine(level=level, message=message))


def training_metrics(d: dict) -> job_pb.TrainingMetrics:
    return job_pb.TrainingMetrics(
        step=_int(d, "step"),
        epoch=_num(d, "epoch"),
        loss=_num(d, "loss", float("nan")),
        learning_rate=_num(d, "learning_rate"),
        tokens_per_second=_num(d, "tokens_per_second"),
        iterations_per_second=_num(d, "iterations_per_second"),
        trained_tokens=_int(d, "trained_tokens"),
        peak_memory_bytes=_int(d, "peak_memory_bytes"),
        rss_bytes=_int(d, "rss_bytes"),
        all_reduce_seconds_per_step=_num(d, "all_reduce_seconds_per_step"),
    )


def translate(d: dict) -> Translation:
    kind = d.get("type")
    when = _timestamp(d.get("time"))
    if kind == "setup":
        return _setup(d, when)
    if kind == "metrics":
        metrics = training_metrics(d)

        def change(job: job_pb.TrainingJob) -> None:
            job.latest_metrics.CopyFrom(metrics)
            _advance(job, metrics.step, metrics.epoch, metrics.iterations_per_second)

        return Translation(change, event_pb.TrainingEvent(time=when, training_metrics=metrics))
    if kind == "eval":
        evaluation = job_pb.EvaluationMetrics(
            step=_int(d, "step"),
            validation_loss=_num(d, "validation_loss", float("nan")),
            perplexity=_num(d, "perplexity", float("nan")),
            seconds=_num(d, "seconds"),
        )
        return Translation(
            lambda job: job.latest_evaluation.CopyFrom(evaluation),
            event_pb.TrainingEvent(time=when, evaluation_metrics=evaluation),
        )
    if kind == "checkpoint":
        checkpoint = checkpoint_from(d, when)

        def change(job: job_pb.TrainingJob) -> None:
            if checkpoint.best:
                job.artifacts.best_checkpoint_step = checkpoint.step

        return Translation(
            change,
            event_pb.TrainingEvent(
                time=when, checkpoint_saved=event_pb.CheckpointSaved(checkpoint=checkpoint)
            ),
        )
    if kind == "log":
        level = _LEVELS.get(str(d.get("level", "INFO")).upper(), event_pb.LOG_LEVEL_INFO)
        event = log_event(str(d.get("message", "")), level)
        event.time.CopyFrom(when)
        event.log.rank = _int(d, "rank")
        return Translation(None, event)
    return Translation(None, None)


def checkpoint_from(d: dict, when: timestamp_pb2.Timestamp) -> job_pb.Checkpoint:
    checkpoint = job_pb.Checkpoint(
        step=_int(d, "step"),
        path=str(d.get("path", "")),
        create_time=when,
        train_loss=_num(d, "train_loss", float("nan")),
        best=bool(d.get("best")),
        size_bytes=_int(d, "size_bytes"),
    )
    if isinstance(d.get("validation_loss"), (int, float)):
        checkpoint.validation_loss = float(d["validation_loss"])
    return checkpoint


def _setup(d: dict, when: timestamp_pb2.Timestamp) -> Translation:
    lora = d.get("lora_details") or {}
    data = d.get("dataset_details") or {}
    total_steps = _int(d, "total_steps")
    total_epochs = _num(d, "total_epochs")
    resumed = _int(d, "resumed_from_step")

    def change(job: job_pb.TrainingJob) -> None:
        job.progress.total_steps = total_steps
        job.progress.total_epochs = total_epochs
        if resumed:
            job.progress.step = resumed
            job.progress.percent = 100.0 * resumed / total_steps if total_steps else 0.0
        details = job.lora_details
        details.rank = _int(lora, "rank")
        details.alpha = _num(lora, "alpha")
        details.scale = _num(lora, "scale")
        details.dropout = _num(lora, "dropout")
        del details.target_modules[:]
        details.target_modules.extend(str(m) for m in lora.get("target_modules") or [])
        details.num_layers = _int(lora, "num_layers")
        details.trainable_parameters = _int(lora, "trainable_parameters")
        details.total_parameters = _int(lora, "total_parameters")
        details.trainable_percent = _num(lora, "trainable_percent")
        job.dataset_details.train_records = (
            _int(data, "train_records") or job.dataset_details.train_records
        )
        job.dataset_details.validation_records = (
            _int(data, "validation_records") or job.dataset_details.validation_records
        )
        job.dataset_details.train_tokens = _int(data, "train_tokens")

    trainable = _int(lora, "trainable_parameters")
    total = _int(lora, "total_parameters")
    what = (
        f"rank {_int(lora, 'rank')}, alpha {_num(lora, 'alpha'):g} on "
        f"{len(lora.get('target_modules') or [])} module(s) in {_int(lora, 'num_layers')} block(s)"
        if _int(lora, "rank")
        else "all parameters"
    )
    message = (
        f"model ready: training {what}: {trainable:,} of {total:,} parameters "
        f"({_num(lora, 'trainable_percent'):.3f}%); {total_steps} steps"
        + (f" on {_int(d, 'world_size')} ranks" if _int(d, "world_size") > 1 else "")
        + (f"; resumed at step {resumed}" if resumed else "")
    )
    event = log_event(message)
    event.time.CopyFrom(when)
    return Translation(change, event)


def _advance(job: job_pb.TrainingJob, step: int, epoch: float, steps_per_second: float) -> None:
    progress = job.progress
    progress.step = step
    progress.epoch = epoch
    total = progress.total_steps
    progress.percent = min(100.0, 100.0 * step / total) if total else 0.0
    if steps_per_second > 0 and total >= step:
        remaining = (total - step) / steps_per_second
        progress.eta.CopyFrom(
            duration_pb2.Duration(seconds=int(remaining), nanos=int((remaining % 1) * 1e9))
        )
