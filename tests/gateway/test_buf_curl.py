"""A real third-party client: `buf curl` (npm @bufbuild/buf) against the gateway,
with the schema from server reflection: list, server info, create, watch."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tunewire.v1 import training_service_pb2 as training_service_pb

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("npx") is None, reason="npx (Node.js) is not installed, so buf curl cannot run"
    ),
]


async def buf_curl(stack, *args: str, path: str = "") -> str:
    """Runs buf curl in a subprocess (without blocking the loop the servers run in)."""
    url = f"http://127.0.0.1:{stack.gateway.grpc_port}{path}"
    process = await asyncio.create_subprocess_exec(
        "npx",
        "--yes",
        "@bufbuild/buf",
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode == 0, f"buf curl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


def json_documents(text: str) -> list[dict]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


async def test_buf_curl_lists_creates_and_watches(stack):
    services = (await buf_curl(stack, "--list-services")).split()
    assert {
        "tunewire.v1.TrainingService",
        "tunewire.v1.DatasetService",
        "tunewire.v1.WebhookService",
        "grpc.health.v1.Health",
    } <= set(services)
    methods = (await buf_curl(stack, "--list-methods")).split()
    assert "tunewire.v1.TrainingService/WatchTrainingJob" in methods
    assert "tunewire.v1.DatasetService/UploadDataset" in methods

    [info] = json_documents(
        await buf_curl(stack, path="/tunewire.v1.TrainingService/GetServerInfo")
    )
    assert info["service"] == "tunewire-trainer" and "lora" in info["features"]

    auth = ("-H", f"Authorization: Bearer {stack.keys['alice']}")
    create = {
        "spec": {
            "model": str(stack.model_dir),
            "dataset": {"path": str(stack.data_dir / "alpaca.json")},
            "hyperparameters": {"batchSize": 2, "maxSeqLength": 64, "maxSteps": "2"},
        }
    }
    [created] = json_documents(
        await buf_curl(
            stack,
            *auth,
            "-d",
            json.dumps(create),
            path="/tunewire.v1.TrainingService/CreateTrainingJob",
        )
    )
    job_id = created["job"]["id"]
    assert created["job"]["owner"] == "alice" and created["job"]["state"] == "JOB_STATE_QUEUED"

    # Cancel it (this trainer never starts jobs), then watch: the whole log, ending with CANCELLED.
    await stack.training().CancelTrainingJob(
        training_service_pb.CancelTrainingJobRequest(job_id=job_id), metadata=stack.md("alice")
    )
    events = json_documents(
        await buf_curl(
            stack,
            *auth,
            "-d",
            json.dumps({"jobId": job_id}),
            path="/tunewire.v1.TrainingService/WatchTrainingJob",
        )
    )
    assert [int(e["event"]["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"]["stateChange"]["state"] == "JOB_STATE_CANCELLED"

    # Without the key buf curl gets UNAUTHENTICATED.
    process = await asyncio.create_subprocess_exec(
        "npx",
        "--yes",
        "@bufbuild/buf",
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-d",
        "{}",
        f"http://127.0.0.1:{stack.gateway.grpc_port}/tunewire.v1.TrainingService/ListTrainingJobs",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode != 0 and b"unauthenticated" in (out + err).lower()
