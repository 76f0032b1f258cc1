"""The resident inference worker behind Generate and StreamGenerate, through a real
trainer: models stay loaded (its own load counter says so), adapters are applied
per request and taken off again, text streams as it is made, the memory budget
drops the least recently used model, training keeps priority (niceness)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import grpc
import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .jobs_helpers import tiny_spec, watch_all

pytestmark = pytest.mark.timeout(300)
PROMPT = "What is a token?"


def reference(model_dir, adapter=None, prompt=PROMPT, max_tokens=12) -> str:
    """mlx-lm's own greedy reply, loading the model afresh: what the worker must match."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(model_dir), adapter_path=adapter)
    return mlx_lm.generate(model, tokenizer, prompt, max_tokens=max_tokens)


def request(**fields) -> training_service_pb.GenerateRequest:
    fields.setdefault("prompt", PROMPT)
    fields.setdefault("max_tokens", 12)
    return training_service_pb.GenerateRequest(temperature=0.0, **fields)


async def info(jobs) -> training_service_pb.InferenceInfo:
    return (await jobs.GetServerInfo(training_service_pb.GetServerInfoRequest())).inference


async def test_base_model_stays_loaded_and_text_streams(jobs, trainer, tiny_model_dir):
    before = await info(jobs)
    assert not before.running and before.model_loads == 0

    first = await jobs.Generate(request(model=str(tiny_model_dir)))
    second = await jobs.Generate(request(model=str(tiny_model_dir)))
    assert first.model_loaded and not second.model_loaded
    assert first.text == second.text == await asyncio.to_thread(reference, tiny_model_dir)
    assert first.finish_reason == "length" and first.generated_tokens == 12

    now = await info(jobs)
    assert now.running and now.starts == 1
    assert now.model_loads == 1 and now.requests == 2
    assert [m.model for m in now.models] == [str(tiny_model_dir.resolve())]
    assert 0 < now.models[0].bytes <= now.memory_budget_bytes
    # Training workers run at niceness 0; the inference worker below them.
    assert now.nice == trainer.config.inference_nice == 10
    with open(f"/proc/{trainer.inference.pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[16]) == 10

    pieces, done = [], None
    async for message in jobs.StreamGenerate(
        training_service_pb.StreamGenerateRequest(generate=request(model=str(tiny_model_dir)))
    ):
        if message.HasField("done"):
            done = message.done
        else:
            pieces.append(message.text)
    assert len(pieces) > 1 and "".join(pieces) == done.text == first.text
    assert not done.model_loaded and done.first_token_seconds > 0
    assert (await info(jobs)).model_loads == 1

    # A stop string ends the reply before it, and says so.
    stop = first.text[3:6]
    cut = await jobs.Generate(request(model=str(tiny_model_dir), stop=[stop]))
    assert cut.text == first.text[: first.text.find(stop)] and cut.finish_reason == "stop"


async def test_adapters_apply_per_request_without_reloading_the_base(
    jobs, tiny_model_dir, data_dir
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=6)
    spec.hyperparameters.learning_rate = 2e-2  # far enough from the base to change its replies
    job = (
        await jobs.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    ).job
    await watch_all(jobs, job.id)
    done = (await jobs.GetTrainingJob(training_service_pb.GetTrainingJobRequest(job_id=job.id))).job
    assert done.state == training_job_pb.JOB_STATE_SUCCEEDED
    checkpoints = (
        await jobs.ListCheckpoints(training_service_pb.ListCheckpointsRequest(job_id=job.id))
    ).checkpoints
    early = checkpoints[0]

    base_ref = await asyncio.to_thread(reference, tiny_model_dir)
    tuned_ref = await asyncio.to_thread(reference, tiny_model_dir, done.artifacts.adapter_path)
    early_ref = await asyncio.to_thread(reference, tiny_model_dir, early.path)
    assert tuned_ref != base_ref

    base = await jobs.Generate(request(model=str(tiny_model_dir)))
    tuned = await jobs.Generate(request(job_id=job.id))
    base_again = await jobs.Generate(request(model=str(tiny_model_dir)))
    tuned_again = await jobs.Generate(request(job_id=job.id))
    at_step = await jobs.Generate(request(job_id=job.id, checkpoint_step=early.step))
    assert base.text == base_again.text == base_ref
    assert tuned.text == tuned_again.text == tuned_ref
    assert at_step.text == early_ref and at_step.adapter_path == early.path
    assert tuned.adapter_path == done.artifacts.adapter_path
    assert [r.model_loaded for r in (base, tuned, base_again, tuned_again, at_step)] == [
        True,
        False,
        False,
        False,
        False,
    ]
    now = await info(jobs)
    assert now.model_loads == 1 and now.adapter_loads == 2 and now.requests == 5

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.Generate(request(job_id=job.id, checkpoint_step=999))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no checkpoint at step 999" in err.value.details()


async def test_a_caller_that_leaves_cancels_and_a_dead_worker_is_started_again(
    jobs, trainer, tiny_model_dir
):
    call = jobs.StreamGenerate(
        training_service_pb.StreamGenerateRequest(
            generate=request(model=str(tiny_model_dir), max_tokens=2000)
        )
    )
    async for message in call:
        assert message.text is not None
        break
    call.cancel()
    # The next request runs at once, not after 2000 tokens of the one cancelled.
    reply = await asyncio.wait_for(jobs.Generate(request(model=str(tiny_model_dir))), 60)
    assert not reply.model_loaded and reply.generated_tokens == 12

    os.kill(trainer.inference.pid, signal.SIGKILL)
    for _ in range(100):
        if not trainer.inference.running:
            break
        await asyncio.sleep(0.05)
    again = await jobs.Generate(request(model=str(tiny_model_dir)))
    assert again.model_loaded and again.text == reply.text
    assert (await info(jobs)).starts == 2


@pytest.fixture
async def small_budget(tmp_path, tiny_model_dir):
    """A trainer whose inference budget holds one tiny model, and a second copy of it."""
    other = tmp_path / "models" / "tiny-copy"
    shutil.copytree(tiny_model_dir, other)
    size = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    server = await start_trainer(
        TrainerConfig(
            home=tmp_path / "home",
            listen="127.0.0.1:0",
            data_roots=(tmp_path,),
            model_roots=(tmp_path / "models", tiny_model_dir.parent),
            inference_memory_bytes=size * 3 // 2,
        )
    )
    async with trainer_channel(server.address, server.credential) as channel:
        yield training_service_grpc.TrainingServiceStub(channel), other
    await server.stop(grace=5)


async def test_the_memory_budget_drops_the_least_recently_used_model(small_budget, tiny_model_dir):
    jobs, other = small_budget
    assert (await jobs.Generate(request(model=str(tiny_model_dir)))).model_loaded
    assert (await jobs.Generate(request(model=str(other)))).model_loaded
    now = await info(jobs)
    assert [m.model for m in now.models] == [str(other.resolve())] and now.evictions == 1
    assert (await jobs.Generate(request(model=str(tiny_model_dir)))).model_loaded
    assert (await info(jobs)).model_loads == 3


async def test_a_model_larger_than_the_budget_is_refused(tmp_path, tiny_model_dir):
    server = await start_trainer(
        TrainerConfig(
            home=tmp_path / "home",
            listen="127.0.0.1:0",
            data_roots=(tmp_path,),
            model_roots=(tiny_model_dir.parent,),
            inference_memory_bytes=1 << 20,
        )
    )
    try:
        async with trainer_channel(server.address, server.credential) as channel:
            jobs = training_service_grpc.TrainingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await jobs.Generate(request(model=str(tiny_model_dir)))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "inference memory budget of 1 MiB" in err.value.details()
            assert "--inference-memory-mb" in err.value.details()
    finally:
        await server.stop(grace=5)
