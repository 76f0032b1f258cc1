"""OpenAI's DPO method (`method.type: "dpo"`, `beta`) onto tunewire's preference
fine-tuning: OpenAI's own preference file format uploads, trains and is echoed."""

from __future__ import annotations

import openai
import pytest

from .conftest import EXAMPLES, wait_done

pytestmark = pytest.mark.timeout(240)


def test_dpo_with_openai_preference_data(openai_stack):
    client = openai_stack.client()
    with open(EXAMPLES / "preference_example.jsonl", "rb") as f:
        pairs = client.files.create(file=f, purpose="fine-tune")
    method = {
        "type": "dpo",
        "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 1}},
    }
    job = client.fine_tuning.jobs.create(
        model=str(openai_stack.model_dir), training_file=pairs.id, method=method
    )
    assert job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.beta == 0.2
    assert job.tunewire["spec"]["preference"]["method"] == "PREFERENCE_METHOD_DPO"
    done = wait_done(client, job.id)
    assert done.status == "succeeded", done.error
    metrics = [
        e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
    ]
    assert metrics

    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=str(openai_stack.model_dir),
            training_file=pairs.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}},
        )
    assert err.value.param == "method.supervised.hyperparameters.beta"
