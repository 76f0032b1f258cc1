"""Translation of the worker's events into job changes and API events.

Pure functions: given a record the worker sent (`tunewire.trainer.protocol.events`),
say how the stored job changes and which `TrainingEvent` (if any) the job's log
gets. The runner applies both in one store transaction. Numbers are copied as
they came, NaN and infinities included: a diverged loss shows as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from tunewire.trainer.protocol import events as protocol
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

JobChange = Callable[[training_job_pb.TrainingJob], None]

_LEVELS = {
    protocol.LogLevel.DEBUG: training_event_pb.LOG_LEVEL_DEBUG,
    protocol.LogLevel.INFO: training_event_pb.LOG_LEVEL_INFO,
    protocol.LogLevel.WARNING: training_event_pb.LOG_LEVEL_WARNING,
    protocol.LogLevel.ERROR: training_event_pb.LOG_LEVEL_ERROR,
}


@dataclass
class Translation:
    change: JobChange | None
    event: training_event_pb.TrainingEvent | None


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def log_event(
    message: str, level: int = training_event_pb.LOG_LEVEL_INFO
) -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(
        log=training_event_pb.LogLine(level=level, message=message)
    )


def artifacts_of(done: protocol.Done | None) -> Callable[[training_job_pb.TrainingJob], None]:
    """The change that records what a finished worker produced (nothing without a Done)."""

    def record(j: training_job_pb.TrainingJob) -> None:
        if done is None:
            return
        if done.artifacts.adapter_path:
            j.artifacts.adapter_path = done.artifacts.adapter_path
        if done.artifacts.model_path:
            j.artifacts.model_path = done.artifacts.model_path
        if done.artifacts.wandb_dir:
            j.artifacts.wandb_dir = done.artifacts.wandb_dir
        if done.best_checkpoint_step:
            j.artifacts.best_checkpoint_step = done.best_checkpoint_step

    return record


def training_metrics(m: protocol.Metrics) -> training_job_pb.TrainingMetrics:
    return training_job_pb.TrainingMetrics(
        step=m.step,
        epoch=m.epoch,
        loss=m.loss,
        learning_rate=m.learning_rate,
        tokens_per_second=m.tokens_per_second,
        iterations_per_second=m.iterations_per_second,
        trained_tokens=m.trained_tokens,
        peak_memory_bytes=m.peak_memory_bytes,
        rss_bytes=m.rss_bytes,
        all_reduce_seconds_per_step=m.all_reduce_seconds_per_step,
        preference=preference_metrics(m.preference),
        trained_token_share=m.trained_token_share,
    )


def preference_metrics(
    m: protocol.PreferenceMetrics | None,
) -> training_job_pb.PreferenceMetrics | None:
    if m is None:
        return None
    return training_job_pb.PreferenceMetrics(
        chosen_reward=m.chosen_reward,
        rejected_reward=m.rejected_reward,
        reward_margin=m.reward_margin,
        reward_accuracy=m.reward_accuracy,
        chosen_logps=m.chosen_logps,
        rejected_logps=m.rejected_logps,
        pairs=m.pairs,
    )


def translate(record: protocol.Event) -> Translation:
    """The job change and API event of a setup, metrics, evaluation, checkpoint or log record
    (state, done and error records steer the runner instead: no translation)."""
    when = _timestamp(record.time)
    if isinstance(record, protocol.Setup):
        return _setup(record, when)
    if isinstance(record, protocol.Metrics):
        metrics = training_metrics(record)

        def change(job: training_job_pb.TrainingJob) -> None:
            job.latest_metrics.CopyFrom(metrics)
            _advance(job, metrics.step, metrics.epoch, metrics.iterations_per_second)

        return Translation(
            change, training_event_pb.TrainingEvent(time=when, training_metrics=metrics)
        )
    if isinstance(record, protocol.Evaluation):
        evaluation = training_job_pb.EvaluationMetrics(
            step=record.step,
            validation_loss=record.validation_loss,
            perplexity=record.perplexity,
            seconds=record.seconds,
            preference=preference_metrics(record.preference),
        )
        return Translation(
            lambda job: job.latest_evaluation.CopyFrom(evaluation),
            training_event_pb.TrainingEvent(time=when, evaluation_metrics=evaluation),
        )
    if isinstance(record, protocol.Checkpoint):
        checkpoint = checkpoint_from(record, when)

        def mark_best(job: training_job_pb.TrainingJob) -> None:
            if checkpoint.best:
                job.artifacts.best_checkpoint_step = checkpoint.step

        return Translation(
            mark_best,
            training_event_pb.TrainingEvent(
                time=when, checkpoint_saved=training_event_pb.CheckpointSaved(checkpoint=checkpoint)
            ),
        )
    if isinstance(record, protocol.Log):
        event = log_event(record.message, _LEVELS[record.level])
        event.time.CopyFrom(when)
        event.log.rank = record.rank
        return Translation(None, event)
    return Translation(None, None)


def checkpoint_from(
    c: protocol.Checkpoint, when: timestamp_pb2.Timestamp
) -> training_job_pb.Checkpoint:
    checkpoint = training_job_pb.Checkpoint(
        step=c.step,
        path=c.path,
        create_time=when,
        train_loss=c.train_loss if c.train_loss is not None else float("nan"),
        best=c.best,
        size_bytes=c.size_bytes,
    )
    if c.validation_loss is not None:
        checkpoint.validation_loss = c.validation_loss
    return checkpoint


def _setup(s: protocol.Setup, when: timestamp_pb2.Timestamp) -> Translation:
    lora, data = s.lora_details, s.dataset_details

    def change(job: training_job_pb.TrainingJob) -> None:
        job.progress.total_steps = s.total_steps
        job.progress.total_epochs = s.total_epochs
        if s.resumed_from_step:
            job.progress.step = s.resumed_from_step
            job.progress.percent = (
                100.0 * s.resumed_from_step / s.total_steps if s.total_steps else 0.0
            )
        details = job.lora_details
        details.rank = lora.rank
        details.alpha = lora.alpha
        details.scale = lora.scale
        details.dropout = lora.dropout
        del details.target_modules[:]
        details.target_modules.extend(lora.target_modules)
        details.num_layers = lora.num_layers
        details.trainable_parameters = lora.trainable_parameters
        details.total_parameters = lora.total_parameters
        details.trainable_percent = lora.trainable_percent
        job.dataset_details.train_records = data.train_records or job.dataset_details.train_records
        job.dataset_details.validation_records = (
            data.validation_records or job.dataset_details.validation_records
        )
        job.dataset_details.train_tokens = data.train_tokens

    what = (
        f"rank {lora.rank}, alpha {lora.alpha:g} on {len(lora.target_modules)} module(s) "
        f"in {lora.num_layers} block(s)"
        if lora.rank
        else "all parameters"
    )
    message = (
        f"model ready: training {what}: {lora.trainable_parameters:,} of "
        f"{lora.total_parameters:,} parameters ({lora.trainable_percent:.3f}%); "
        f"{s.total_steps} steps"
        + (f" on {s.world_size} ranks" if s.world_size > 1 else "")
        + (f"; resumed at step {s.resumed_from_step}" if s.resumed_from_step else "")
    )
    event = log_event(message)
    event.time.CopyFrom(when)
    return Translation(change, event)


def _advance(
    job: training_job_pb.TrainingJob, step: int, epoch: float, steps_per_second: float
) -> None:
    progress = job.progress
    progress.step = step
    progress.epoch = epoch
    total = progress.total_steps
    progress.percent = min(100.0, 100.0 * step / total) if total else 0.0
    remaining = (total - step) / steps_per_second if steps_per_second > 0 else math.inf
    if total >= step and math.isfinite(remaining):
        progress.eta.CopyFrom(
            duration_pb2.Duration(seconds=int(remaining), nanos=int((remaining % 1) * 1e9))
        )
