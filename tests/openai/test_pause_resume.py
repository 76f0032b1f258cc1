"""Pause and resume through the openai SDK (`jobs.pause`, `jobs.resume`): a running
job checkpoints and stops (status "paused"), resumes from that checkpoint and
finishes; a job in the wrong state is refused in OpenAI's error shape."""

from __future__ import annotations

import time

import openai
import pytest

from .conftest import EXAMPLES, wait_done

pytestmark = pytest.mark.timeout(300)


def wait_status(client, job_id: str, status: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status != status:
        assert job.status not in ("succeeded", "failed", "cancelled"), job
        assert time.monotonic() < deadline, f"still {job.status}, never {status}"
        time.sleep(0.2)
    return job


def test_pause_checkpoints_resume_continues(openai_stack):
    client = openai_stack.client()
    with open(EXAMPLES / "alpaca_example.json", "rb") as f:
        training = client.files.create(file=f, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=str(openai_stack.model_dir),
        training_file=training.id,
        hyperparameters={"n_epochs": 60, "batch_size": 1},  # 300 steps: time to pause
        extra_body={"tunewire": {"checkpointing": {"interval_steps": 2}}},
    )
    wait_status(client, job.id, "running")
    deadline = time.monotonic() + 120
    while not client.fine_tuning.jobs.retrieve(job.id).tunewire["progress"].get("step"):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    client.fine_tuning.jobs.pause(job.id)
    paused = wait_status(client, job.id, "paused")
    assert paused.tunewire["state"] == "JOB_STATE_PAUSED" and paused.estimated_finish is None
    step = int(paused.tunewire["progress"]["step"])
    assert 0 < step < 300
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"  # pausing again: no change
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any(m.startswith("The job was paused") for m in messages)

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status in ("queued", "running")
    done = wait_done(client, job.id, timeout=240)
    assert done.status == "succeeded" and done.tunewire["resume_count"] == 1
    assert int(done.tunewire["progress"]["step"]) == 300
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=100))
    assert max(c.step_number for c in checkpoints) == 300

    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.resume(job.id)
    assert err.value.code == "job_state_conflict" and "SUCCEEDED" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert "cannot be paused" in err.value.message
    with pytest.raises(openai.NotFoundError):
        openai_stack.client("bob").fine_tuning.jobs.pause(job.id)
