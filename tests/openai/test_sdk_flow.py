"""The official `openai` Python SDK drives tunewire's OpenAI-compatible API end to
end, as a script written for OpenAI's fine-tuning API would, with only `base_url`
and `api_key` changed."""

from __future__ import annotations

import base64
import hashlib

import httpx
import openai
import pytest

from .conftest import EXAMPLES, wait_done

pytestmark = pytest.mark.timeout(240)


def test_upload_train_and_chat(openai_stack):
    client = openai_stack.client()
    with open(EXAMPLES / "alpaca_example.json", "rb") as f:
        training = client.files.create(file=f, purpose="fine-tune")
    assert training.object == "file" and training.purpose == "fine-tune"
    assert training.filename == "alpaca_example.json" and training.bytes > 0
    assert client.files.retrieve(training.id).id == training.id
    assert training.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model=str(openai_stack.model_dir),
        training_file=training.id,
        suffix="capitals",
        seed=7,
        metadata={"team": "research"},
        extra_body={
            "tunewire": {"checkpointing": {"interval_steps": 25}, "report_interval_steps": 1}
        },
    )
    assert job.object == "fine_tuning.job" and job.status in ("queued", "running")
    assert job.seed == 7 and job.metadata == {"team": "research"}
    # "auto" resolved and echoed as OpenAI resolves it: 5 records → 20 epochs of batch 1.
    assert job.hyperparameters.n_epochs == 20
    assert job.hyperparameters.batch_size == 1
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    assert job.method.type == "supervised"
    assert job.fine_tuned_model is None

    done = wait_done(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:capitals:{job.id}"
    assert done.finished_at >= done.created_at and done.trained_tokens > 0
    assert next(j.id for j in client.fine_tuning.jobs.list(limit=10)) == job.id

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=3))  # pages of 3
    sequences = [int(e.tunewire["sequence"]) for e in events]
    assert sequences == sorted(sequences, reverse=True) and sequences[-1] == 1
    assert len(set(e.id for e in events)) == len(events)
    assert events[0].message.startswith("The job has successfully completed")
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and {"step", "train_loss", "total_steps"} <= set(metrics[0].data)

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=2))
    steps = [c.step_number for c in checkpoints]
    assert steps == sorted(steps, reverse=True) and len(steps) >= 3
    assert all(c.metrics.train_loss > 0 for c in checkpoints)
    assert (
        checkpoints[0].fine_tuned_model_checkpoint
        == f"{done.fine_tuned_model}:ckpt-step-{steps[0]}"
    )

    result = client.files.content(done.result_files[0])
    csv = base64.b64decode(result.read()).decode()
    header, first, *_ = csv.splitlines()
    assert header == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert first.split(",")[0] == "1"

    reply = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is LoRA?"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.object == "chat.completion" and reply.model == done.fine_tuned_model
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens > 0
    assert reply.choices[0].finish_reason in ("stop", "length")

    streamed = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is LoRA?"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in streamed:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == reply.choices[0].message.content
    # Both chats ran on the resident worker: the base was loaded once, not per request.
    inference = httpx.get(f"{openai_stack.http_url}/v1/info").json()["inference"]
    assert inference["model_loads"] == "1" and int(inference["requests"]) >= 2
    assert (
        usage.completion_tokens == reply.usage.completion_tokens
        and finish == reply.choices[0].finish_reason
    )

    models = [m.id for m in client.models.list()]
    assert done.fine_tuned_model in models

    # The adapter comes out through tunewire's route, with the same key as bearer token.
    adapter = httpx.get(
        f"{openai_stack.http_url}/v1/jobs/{job.id}/artifact?file=adapters.safetensors",
        headers={"Authorization": f"Bearer {openai_stack.keys['alice']}"},
    )
    assert adapter.status_code == 200
    assert hashlib.sha256(adapter.content).hexdigest() == adapter.headers["X-Checksum-Sha256"]


def test_errors_in_openai_shape(openai_stack):
    client = openai_stack.client()
    with pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.retrieve("job-000000000000")
    assert err.value.status_code == 404 and err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=str(openai_stack.model_dir), training_file="ds-nope")
    assert err.value.param == "training_file"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=openai_stack.base_url, api_key="wrong").models.list()
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="ft:tiny::job-000000000000", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.code == "model_not_found"
