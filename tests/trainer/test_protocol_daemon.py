"""The protocol through a real daemon: a scripted worker (the real EventWriter, no mlx)
sends NaN and infinities, which arrive as such in the job; a worker speaking another
protocol version fails its job with both versions named."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.errors import reason_of
from tunewire.reasons import Reason
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.protocol import codec
from tunewire.trainer.server import start_trainer
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import tiny_spec, watch_all

pytestmark = pytest.mark.timeout(120)

# Started by the daemon in place of `python -m tunewire.trainer.worker ...`: it reads only
# --events-fd and speaks through the worker's own EventWriter.
SCRIPTED_WORKER = textwrap.dedent(
    """
    import math, os, sys
    from tunewire.trainer.protocol import events as p
    from tunewire.trainer.worker.events import EventWriter

    fd = int(sys.argv[sys.argv.index("--events-fd") + 1])
    if sys.argv[1] == "mismatch":
        os.write(fd, b'{"tunewire_worker_protocol": 99}\\n')
        sys.stdin.read()  # until the daemon gives up on us
        sys.exit(0)
    w = EventWriter(fd)
    w.emit(p.State(state=p.WorkerState.RUNNING, reason="scripted"))
    if sys.argv[1] == "crash":  # dies with a traceback in its log and nothing on the pipe
        for i in range(300):
            print(f"step {i} going fine")
        def deep(): raise RuntimeError("something broke deep inside")
        deep()
    w.emit(p.Evaluation(step=1, validation_loss=2.5, perplexity=math.inf, seconds=0.0))
    w.emit(p.Checkpoint(step=1, path="/nowhere", train_loss=math.nan, validation_loss=math.inf,
                        best=False, size_bytes=0, removed=[]))
    loss = math.inf if sys.argv[1] == "inf-done" else math.nan
    w.emit(p.Metrics(step=2, epoch=0.5, loss=loss, learning_rate=math.inf,
                     tokens_per_second=-math.inf, iterations_per_second=1.0, trained_tokens=1,
                     peak_memory_bytes=1, rss_bytes=1, all_reduce_seconds_per_step=0.0))
    if sys.argv[1] == "inf-done":  # finishing "successfully" after the loss went infinite
        w.emit(p.Done(outcome=p.Outcome.SUCCEEDED, step=2,
                      artifacts=p.Artifacts(adapter_path=None, model_path=None, wandb_dir=None),
                      best_checkpoint_step=0))
        sys.exit(0)
    sys.stdin.read()  # training on past a NaN: until the daemon stops us
    """
)


def scripted_python(tmp_path: Path, mode: str) -> str:
    """An executable the daemon runs as its worker's Python."""
    script = tmp_path / "scripted_worker.py"
    script.write_text(SCRIPTED_WORKER)
    wrapper = tmp_path / f"python-{mode}"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} {mode} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


async def run_job(tmp_path, data_dir, tiny_model_dir, mode: str):
    config = TrainerConfig(
        home=tmp_path / f"home-{mode}",
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
        python=scripted_python(tmp_path, mode),
        cancel_grace_seconds=5,
    )
    server = await start_trainer(config)
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
            job = (
                await jobs.CreateTrainingJob(
                    training_service_pb.CreateTrainingJobRequest(spec=spec)
                )
            ).job
            events = await watch_all(jobs, job.id, timeout=60)
            final = (
                await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))
            ).job
            return final, events
    finally:
        await server.stop(grace=5)


async def test_nan_and_infinities_reach_the_job_and_a_nan_loss_fails_it_as_diverged(
    tmp_path, data_dir, tiny_model_dir
):
    job, events = await run_job(tmp_path, data_dir, tiny_model_dir, "nan")
    assert job.state == training_job_pb.JOB_STATE_FAILED
    assert reason_of(job.error) == Reason.DIVERGED
    assert job.error.message.startswith("training diverged: the training loss became nan at step 2")
    metrics = job.latest_metrics
    assert math.isnan(metrics.loss)
    assert metrics.learning_rate == math.inf and metrics.tokens_per_second == -math.inf
    assert job.latest_evaluation.perplexity == math.inf
    (streamed,) = [e.training_metrics for e in events if e.HasField("training_metrics")]
    assert math.isnan(streamed.loss) and streamed.learning_rate == math.inf
    (saved,) = [e.checkpoint_saved.checkpoint for e in events if e.HasField("checkpoint_saved")]
    assert math.isnan(saved.train_loss) and saved.validation_loss == math.inf
    (last,) = [e.state_change for e in events if e.HasField("state_change")][-1:]
    assert last.state == training_job_pb.JOB_STATE_FAILED and "step 2" in last.reason


async def test_a_job_whose_loss_went_infinite_never_succeeds(tmp_path, data_dir, tiny_model_dir):
    job, _ = await run_job(tmp_path, data_dir, tiny_model_dir, "inf-done")
    assert job.state == training_job_pb.JOB_STATE_FAILED
    assert reason_of(job.error) == Reason.DIVERGED
    assert "became inf at step 2" in job.error.message


async def test_a_worker_speaking_another_version_fails_the_job_naming_both(
    tmp_path, data_dir, tiny_model_dir
):
    job, _ = await run_job(tmp_path, data_dir, tiny_model_dir, "mismatch")
    assert job.state == training_job_pb.JOB_STATE_FAILED
    assert "protocol version 99" in job.error.message
    assert f"this trainer speaks version {codec.PROTOCOL_VERSION}" in job.error.message
