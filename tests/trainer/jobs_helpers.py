"""Spec builders and stream readers shared by the trainer's service tests."""

from __future__ import annotations

import asyncio

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

TERMINAL = {
    training_job_pb.JOB_STATE_SUCCEEDED,
    training_job_pb.JOB_STATE_FAILED,
    training_job_pb.JOB_STATE_CANCELLED,
}


def tiny_spec(model_dir, data_path, **overrides) -> training_job_pb.TrainingJobSpec:
    spec = training_job_pb.TrainingJobSpec(
        model=str(model_dir),
        dataset=training_job_pb.DatasetSource(path=str(data_path)),
        method=overrides.pop("method", training_job_pb.TRAINING_METHOD_LORA),
        lora=training_job_pb.LoraConfig(rank=4, alpha=8),
        hyperparameters=training_job_pb.Hyperparameters(
            max_steps=overrides.pop("max_steps", 6),
            batch_size=overrides.pop("batch_size", 2),
            learning_rate=1e-3,
            max_seq_length=64,
            seed=overrides.pop("seed", 0),
        ),
        checkpointing=training_job_pb.CheckpointConfig(
            interval_steps=overrides.pop("checkpoint_every", 3)
        ),
        report_interval_steps=1,
    )
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


async def watch_all(jobs_stub, job_id, after=0, metadata=None, timeout=240):
    """Every event of a job until its stream ends."""
    events = []

    async def read():
        async for msg in jobs_stub.WatchTrainingJob(
            training_service_pb.WatchTrainingJobRequest(job_id=job_id, after_sequence=after),
            metadata=metadata,
        ):
            events.append(msg.event)

    await asyncio.wait_for(read(), timeout)
    return events


def losses(events):
    return [
        (e.training_metrics.step, e.training_metrics.loss)
        for e in events
        if e.HasField("training_metrics")
    ]


def states(events):
    return [
        training_job_pb.JobState.Name(e.state_change.state)
        for e in events
        if e.HasField("state_change")
    ]
