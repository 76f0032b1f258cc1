"""Fine-tuning a fine-tuned model, as OpenAI allows: `model` is a job's `ft:` name
(or one of its checkpoints'); the new job trains on the same base from that
job's adapter, and answers under its own `ft:` name."""

from __future__ import annotations

import openai
import pytest

from .conftest import EXAMPLES, wait_done

pytestmark = pytest.mark.timeout(240)


def test_a_fine_tuned_model_trains_on(openai_stack, trained_job):
    client = openai_stack.client()
    with open(EXAMPLES / "alpaca_example.json", "rb") as f:
        training = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=trained_job.fine_tuned_model,
        training_file=training.id,
        suffix="again",
        hyperparameters={"n_epochs": 1, "batch_size": 1},
    )
    assert job.model == trained_job.model  # the same base
    assert job.tunewire["spec"]["initial_adapter"] == {"job_id": trained_job.id}
    done = wait_done(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:again:{job.id}"
    reply = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.usage.completion_tokens > 0

    at_step = client.fine_tuning.jobs.create(
        model=f"{trained_job.fine_tuned_model}:ckpt-step-4",
        training_file=training.id,
        hyperparameters={"n_epochs": 1, "batch_size": 1},
    )
    assert at_step.tunewire["spec"]["initial_adapter"] == {
        "job_id": trained_job.id,
        "checkpoint_step": "4",
    }
    assert wait_done(client, at_step.id).status == "succeeded"

    with pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.create(model="ft:tiny::job-000000000000", training_file=training.id)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=trained_job.fine_tuned_model,
            training_file=training.id,
            extra_body={"tunewire": {"lora": {"rank": 16}}},
        )
    assert "initial adapter's rank" in err.value.message
