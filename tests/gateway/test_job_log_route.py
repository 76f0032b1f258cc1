"""A job's log over HTTP (GET /v1/jobs/{job_id}/log, from the proto's annotation): its
owner reads it in pages with the proto's field names; another tenant gets 404."""

from __future__ import annotations

import pytest

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import start_stack, wait_for

pytestmark = pytest.mark.timeout(180)

TERMINAL = (
    training_job_pb.JOB_STATE_SUCCEEDED,
    training_job_pb.JOB_STATE_FAILED,
    training_job_pb.JOB_STATE_CANCELLED,
)


async def test_the_owner_reads_a_jobs_log_over_http_and_nobody_else(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir, max_running_jobs=1)
    try:
        await _read_log(stack, http)
    finally:
        await stack.close()


async def _read_log(stack, http):
    job = await stack.create_job("alice")
    training = stack.training()

    async def finished():
        reply = await training.GetTrainingJob(
            training_service_pb.GetTrainingJobRequest(job_id=job.id), metadata=stack.md("alice")
        )
        return reply.job.state in TERMINAL

    await wait_for(finished, "the job to end", timeout=150, interval=0.5)
    url = f"{stack.url}/v1/jobs/{job.id}/log"
    async with http.get(
        url, params={"tail": "true", "page_size": "3"}, headers=stack.headers("alice")
    ) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert len(body["lines"]) == 3 and body["at_end"] is True
    assert body["next_page_token"] and int(body["size_bytes"]) > 0
    async with http.get(
        url, params={"page_token": body["next_page_token"]}, headers=stack.headers("alice")
    ) as r:
        assert r.status == 200
        assert (await r.json()).get("lines", []) == []
    async with http.get(url, headers=stack.headers("bob")) as r:
        assert r.status == 404
    async with http.get(url, params={"rank": "3"}, headers=stack.headers("alice")) as r:
        assert r.status == 400
        assert "rank" in (await r.json())["message"]
