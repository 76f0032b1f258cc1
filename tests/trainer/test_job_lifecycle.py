"""Real jobs on the tiny model through a real trainer: stream, replay, cancel, queue, ownership."""

import asyncio
import os
import signal
import subprocess
import sys

import grpc
import pytest

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import as_user
from .jobs_helpers import losses, states, tiny_spec, watch_all

pytestmark = pytest.mark.timeout(600)


async def test_lora_job_trains_streams_and_leaves_an_adapter_mlx_lm_loads(
    jobs, tiny_model_dir, data_dir
):
    job = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=6)
            )
        )
    ).job
    assert job.state in (training_job_pb.JOB_STATE_QUEUED, training_job_pb.JOB_STATE_STARTING)
    events = await watch_all(jobs, job.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(events)[0] == "JOB_STATE_QUEUED"
    assert states(events)[-3:] == ["JOB_STATE_STARTING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    steps = [step for step, _ in losses(events)]
    assert steps == [1, 2, 3, 4, 5, 6]
    metrics = [e.training_metrics for e in events if e.HasField("training_metrics")]
    assert all(
        m.tokens_per_second > 0 and m.peak_memory_bytes > 0 and m.rss_bytes > 0 for m in metrics
    )
    assert [e.checkpoint_saved.checkpoint.step for e in events if e.HasField("checkpoint_saved")][
        :2
    ] == [3, 6]

    done = (await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))).job
    assert done.state == training_job_pb.JOB_STATE_SUCCEEDED
    assert (
        done.progress.step == 6 and done.progress.total_steps == 6 and done.progress.percent == 100
    )
    assert done.lora_details.rank == 4 and done.lora_details.trainable_parameters > 0
    assert 0 < done.lora_details.trainable_percent < 100
    assert done.latest_metrics.step == 6
    checkpoints = (
        await jobs.ListCheckpoints(training_service_pb.ListCheckpointsRequest(job_id=job.id))
    ).checkpoints
    assert [c.step for c in checkpoints] == [3, 6]

    # mlx-lm's own loader takes the adapter (in a subprocess: mlx stays out of the test process).
    probe = (
        "import sys, mlx_lm; m, t = mlx_lm.load(sys.argv[1], adapter_path=sys.argv[2]);"
        "print(len(mlx_lm.generate(m, t, 'hello', max_tokens=4)) >= 0)"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", probe, str(tiny_model_dir), done.artifacts.adapter_path],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]

    # A late subscriber replays exactly the events after its sequence and the stream ends.
    tail = await watch_all(jobs, job.id, after=len(events) - 3)
    assert [e.sequence for e in tail] == [len(events) - 2, len(events) - 1, len(events)]

    reply = await jobs.Generate(
        training_service_pb.GenerateRequest(job_id=job.id, prompt="What is a token?", max_tokens=8)
    )
    assert reply.generated_tokens > 0 and reply.adapter_path == done.artifacts.adapter_path


async def test_a_hundred_subscribers_see_the_same_stream(jobs, tiny_model_dir, data_dir):
    job = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=4)
            )
        )
    ).job
    results = await asyncio.gather(*(watch_all(jobs, job.id) for _ in range(100)))
    first = [e.SerializeToString() for e in results[0]]
    assert states(results[0])[-1] == "JOB_STATE_SUCCEEDED"
    assert all([e.SerializeToString() for e in r] == first for r in results)


async def test_cancel_running_and_queued_jobs(jobs, tiny_model_dir, data_dir):
    running = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(
                    tiny_model_dir,
                    data_dir / "alpaca.json",
                    max_steps=100000,
                    checkpoint_every=1000,
                )
            )
        )
    ).job
    queued = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=2)
            )
        )
    ).job
    assert queued.state == training_job_pb.JOB_STATE_QUEUED and queued.queue_position == 1

    cancelled = (
        await jobs.CancelTrainingJob(training_service_pb.CancelTrainingJobRequest(job_id=queued.id))
    ).job
    assert cancelled.state == training_job_pb.JOB_STATE_CANCELLED

    async for msg in jobs.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=running.id)
    ):
        if msg.event.HasField("training_metrics") and msg.event.training_metrics.step >= 2:
            break
    reply = (
        await jobs.CancelTrainingJob(
            training_service_pb.CancelTrainingJobRequest(job_id=running.id)
        )
    ).job
    assert reply.state in (
        training_job_pb.JOB_STATE_CANCELLING,
        training_job_pb.JOB_STATE_CANCELLED,
    )
    events = await watch_all(jobs, running.id)
    assert states(events)[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    final = (
        await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=running.id))
    ).job
    assert os.path.isfile(os.path.join(final.artifacts.adapter_path, "adapters.safetensors"))
    assert any(e.HasField("checkpoint_saved") for e in events)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CancelTrainingJob(
            training_service_pb.CancelTrainingJobRequest(job_id=running.id)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_other_members_jobs_are_not_found_admins_see_all(jobs, tiny_model_dir, data_dir):
    alice, bob, root = as_user("alice"), as_user("bob"), as_user("root", admin=True)
    job = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
            ),
            metadata=alice,
        )
    ).job
    assert job.owner == "alice"
    for call, request in [
        (jobs.GetTrainingJob, training_service_pb.GetTrainingJobRequest(job_id=job.id)),
        (jobs.CancelTrainingJob, training_service_pb.CancelTrainingJobRequest(job_id=job.id)),
        (jobs.ListCheckpoints, training_service_pb.ListCheckpointsRequest(job_id=job.id)),
        (jobs.Generate, training_service_pb.GenerateRequest(job_id=job.id, prompt="hi")),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=bob)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await watch_all(jobs, job.id, metadata=bob)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await jobs.ListTrainingJobs(training_service_pb.ListTrainingJobsRequest(), metadata=bob)
    ).jobs == []
    assert [
        j.id
        for j in (
            await jobs.ListTrainingJobs(
                training_service_pb.ListTrainingJobsRequest(), metadata=root
            )
        ).jobs
    ] == [job.id]
    events = await watch_all(jobs, job.id, metadata=alice)
    assert states(events)[-1] == "JOB_STATE_SUCCEEDED"


async def test_a_killed_worker_fails_its_job_and_the_next_job_runs(
    trainer, jobs, tiny_model_dir, data_dir
):
    doomed = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(
                    tiny_model_dir,
                    data_dir / "alpaca.json",
                    max_steps=100000,
                    checkpoint_every=1000,
                )
            )
        )
    ).job
    after = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=2)
            )
        )
    ).job
    async for msg in jobs.WatchTrainingJob(
        training_service_pb.WatchTrainingJobRequest(job_id=doomed.id)
    ):
        if msg.event.HasField("training_metrics"):
            break
    os.kill(trainer.runner.worker_pids(doomed.id)[0], signal.SIGKILL)
    events = await watch_all(jobs, doomed.id)
    assert states(events)[-1] == "JOB_STATE_FAILED"
    failed = (
        await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=doomed.id))
    ).job
    assert "SIGKILL" in failed.error.message
    assert states(await watch_all(jobs, after.id))[-1] == "JOB_STATE_SUCCEEDED"
