"""HTTP/JSON from the annotations: auth on every route, JSON both ways, NDJSON and
SSE streams with resume, streamed uploads, and errors with grpc-gateway's statuses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest

from tunewire.gateway.http_rules import routes_for
from tunewire.gateway.methods import forwarded_methods

from .conftest import start_stack, wait_for

pytestmark = pytest.mark.timeout(120)

ROUTES = routes_for(forwarded_methods())


def concrete(template: str) -> str:
    return template.replace("{job_id}", "job-000000000000").replace(
        "{dataset_id}", "ds-0000000000000000"
    )


async def test_every_route_refuses_missing_and_wrong_keys(stack, http):
    for route in ROUTES:
        url = stack.url + concrete(route.template)
        for headers, reason in (
            ({}, "API_KEY_REQUIRED"),
            ({"X-API-Key": "tw_wrong"}, "INVALID_API_KEY"),
            ({"Authorization": "Bearer tw_wrong"}, "INVALID_API_KEY"),
        ):
            async with http.request(route.verb, url, headers=headers, data=b"{}") as r:
                body = await r.json()
                if route.method.public and not headers:
                    assert r.status == 200, route.template
                    continue
                assert r.status == 401, (route.template, headers)
                assert body["code"] == 16
                assert body["details"][0]["reason"] == reason
                assert "tw_wrong" not in json.dumps(body)


async def test_every_route_with_a_key_gets_the_trainers_answer(stack, http):
    for route in ROUTES:
        url = stack.url + concrete(route.template)
        async with http.request(
            route.verb,
            url,
            headers=stack.headers("alice"),
            data=b"{}" if route.body == "*" else b"",
        ) as r:
            assert r.status in (200, 400, 404), (route.template, r.status, await r.text())
            if r.status != 200:
                body = await r.json()
                assert body["message"] and isinstance(body["details"], list)


async def test_create_get_list_and_other_tenants(stack, http):
    spec = {
        "model": str(stack.model_dir),
        "dataset": {"path": str(stack.data_dir / "alpaca.json")},
        "hyperparameters": {"batch_size": 2, "max_seq_length": 64, "max_steps": 2},
        "display_name": "http job",
    }
    async with http.post(
        f"{stack.url}/v1/jobs",
        json={"spec": spec, "request_id": "r-1"},
        headers=stack.headers("alice"),
    ) as r:
        assert r.status == 200, await r.text()
        job = (await r.json())["job"]
    assert job["owner"] == "alice" and job["state"] == "JOB_STATE_QUEUED"
    assert job["spec"]["display_name"] == "http job"
    assert job["queue_position"] == 1  # fields without presence are printed
    # Idempotent on request_id.
    async with http.post(
        f"{stack.url}/v1/jobs",
        json={"spec": spec, "request_id": "r-1"},
        headers=stack.headers("alice"),
    ) as r:
        assert (await r.json())["job"]["id"] == job["id"]

    async with http.get(f"{stack.url}/v1/jobs/{job['id']}", headers=stack.headers("alice")) as r:
        assert (await r.json())["job"]["id"] == job["id"]
    async with http.get(
        f"{stack.url}/v1/jobs?states=queued&states=JOB_STATE_RUNNING&page_size=5",
        headers={"Authorization": f"Bearer {stack.keys['root']}"},
    ) as r:
        listed = await r.json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["total_size"] == 1
    async with http.get(
        f"{stack.url}/v1/jobs?states=succeeded", headers=stack.headers("alice")
    ) as r:
        assert (await r.json())["jobs"] == []

    for method, path in (
        ("GET", ""),
        ("GET", "/events"),
        ("GET", "/checkpoints"),
        ("POST", ":cancel"),
    ):
        async with http.request(
            method, f"{stack.url}/v1/jobs/{job['id']}{path}", headers=stack.headers("bob")
        ) as r:
            assert r.status == 404, path
            body = await r.json()
            assert body["code"] == 5
            assert any(d.get("resource_name") == job["id"] for d in body["details"])
    async with http.post(
        f"{stack.url}/v1/generate",
        json={"job_id": job["id"], "prompt": "hi"},
        headers=stack.headers("bob"),
    ) as r:
        assert r.status == 404
    async with http.get(f"{stack.url}/v1/jobs", headers=stack.headers("bob")) as r:
        assert (await r.json())["jobs"] == []


async def test_bad_requests_are_400_with_field_violations(stack, http):
    spec = {
        "model": str(stack.model_dir),
        "dataset": {"path": str(stack.data_dir / "alpaca.json")},
        "lora": {"rank": 0},
        "hyperparameters": {"max_seq_length": 3},
    }
    async with http.post(
        f"{stack.url}/v1/jobs", json={"spec": spec}, headers=stack.headers("alice")
    ) as r:
        assert r.status == 400
        body = await r.json()
    bad = next(
        d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    )
    fields = {v["field"] for v in bad["field_violations"]}
    assert {"spec.lora.rank", "spec.hyperparameters.max_seq_length"} <= fields

    async with http.post(
        f"{stack.url}/v1/jobs", data=b'{"spec": {"modle": 1}}', headers=stack.headers("alice")
    ) as r:
        assert r.status == 400
        assert "modle" in (await r.json())["message"]
    async with http.get(f"{stack.url}/v1/jobs?page_size=lots", headers=stack.headers("alice")) as r:
        assert r.status == 400
        body = await r.json()
        assert body["details"][-1]["field_violations"][0]["field"] == "page_size"
    async with http.get(f"{stack.url}/v1/nothing-here", headers=stack.headers("alice")) as r:
        assert r.status == 404 and (await r.json())["code"] == 5
    async with http.delete(f"{stack.url}/v1/jobs", headers=stack.headers("alice")) as r:
        assert r.status == 405 and r.headers["Allow"] == "GET, POST"
        body = await r.json()
        assert body["code"] == 12 and "not allowed" in body["message"]
    async with http.get(
        f"{stack.url}/v1/jobs", headers={**stack.headers("alice"), "grpc-timeout": "soon"}
    ) as r:
        assert r.status == 400 and "grpc-timeout" in (await r.json())["message"]


async def read_ndjson(response) -> list[dict]:
    return [json.loads(line) async for line in response.content if line.strip()]


async def test_ndjson_watch_streams_live_and_resumes_with_after_sequence(stack, http):
    job = await stack.create_job("alice")
    async with http.get(
        f"{stack.url}/v1/jobs/{job.id}/events", headers=stack.headers("alice")
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
        first = json.loads(await r.content.readline())
        assert first["result"]["event"]["sequence"] == "1"
        assert first["result"]["event"]["state_change"]["state"] == "JOB_STATE_QUEUED"
        async with http.post(
            f"{stack.url}/v1/jobs/{job.id}:cancel", headers=stack.headers("alice")
        ) as c:
            assert c.status == 200
        rest = await read_ndjson(r)
    assert rest[-1]["result"]["event"]["state_change"]["state"] == "JOB_STATE_CANCELLED"
    async with http.get(
        f"{stack.url}/v1/jobs/{job.id}/events?after_sequence=1", headers=stack.headers("alice")
    ) as r:
        replay = await read_ndjson(r)
    assert replay == rest


async def read_sse(response) -> list[dict]:
    events, current = [], {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    return events


async def test_sse_watch_uses_sequences_as_ids_and_resumes_from_last_event_id(stack, http):
    job = await stack.create_job("alice")
    headers = {**stack.headers("alice"), "Accept": "text/event-stream"}
    async with http.get(f"{stack.url}/v1/jobs/{job.id}/events", headers=headers) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert await r.content.readline() == b"id: 1\n"
        assert await r.content.readline() == b"event: state_change\n"  # the event's kind
        data = json.loads((await r.content.readline()).decode().removeprefix("data: "))
        assert data["event"]["state_change"]["state"] == "JOB_STATE_QUEUED"
        await r.content.readline()
        async with http.post(
            f"{stack.url}/v1/jobs/{job.id}:cancel", headers=stack.headers("alice")
        ) as c:
            assert c.status == 200
        rest = await read_sse(r)
    last = int(rest[-1]["id"])
    assert json.loads(rest[-1]["data"])["event"]["state_change"]["state"] == "JOB_STATE_CANCELLED"
    # EventSource reconnects with Last-Event-ID: the events after it, even if the
    # URL still asks for everything.
    async with http.get(
        f"{stack.url}/v1/jobs/{job.id}/events?after_sequence=0",
        headers={**headers, "Last-Event-ID": "1"},
    ) as r:
        resumed = await read_sse(r)
    assert resumed == rest
    # After the last event there is nothing more: 204 tells EventSource to stop.
    async with http.get(
        f"{stack.url}/v1/jobs/{job.id}/events", headers={**headers, "Last-Event-ID": str(last)}
    ) as r:
        assert r.status == 204


async def test_stream_errors_before_the_first_message_get_their_http_status(stack, http):
    headers = {**stack.headers("alice"), "Accept": "text/event-stream"}
    async with http.get(f"{stack.url}/v1/jobs/job-123456789abc/events", headers=headers) as r:
        assert r.status == 404
        assert (await r.json())["code"] == 5


async def test_a_client_leaving_an_http_stream_ends_the_trainer_subscription(stack, http):
    job = await stack.create_job("alice")
    r = await http.get(f"{stack.url}/v1/jobs/{job.id}/events", headers=stack.headers("alice"))
    await r.content.readline()
    assert stack.trainer.bus.subscriber_count(job.id) == 1
    r.close()
    await wait_for(
        lambda: stack.trainer.bus.subscriber_count(job.id) == 0, "the subscription to end"
    )
    await wait_for(lambda: stack.gateway.streams.count("alice") == 0, "the stream slot to free")


async def body_in_pieces(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


async def test_upload_streams_the_request_body(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir, upload_chunk_bytes=256)
    try:
        data = (stack.data_dir / "alpaca.json").read_bytes()
        # Chunked transfer encoding: no Content-Length, the body arrives in pieces.
        async with http.post(
            f"{stack.url}/v1/datasets:upload?metadata.display_name=mine",
            data=body_in_pieces(data, 100),
            headers=stack.headers("alice"),
        ) as r:
            assert r.status == 200, await r.text()
            dataset = (await r.json())["dataset"]
        assert dataset["sha256"] == hashlib.sha256(data).hexdigest()
        assert dataset["display_name"] == "mine" and dataset["owner"] == "alice"
        assert dataset["report"]["valid"] is True and dataset["format"] == "DATASET_FORMAT_ALPACA"
        async with http.get(
            f"{stack.url}/v1/datasets/{dataset['id']}", headers=stack.headers("alice")
        ) as r:
            assert (await r.json())["dataset"]["id"] == dataset["id"]
        async with http.get(
            f"{stack.url}/v1/datasets/{dataset['id']}", headers=stack.headers("bob")
        ) as r:
            assert r.status == 404
    finally:
        await stack.close()


async def test_uploads_over_the_limit_are_413(tmp_path, tiny_model_dir, http):
    stack = await start_stack(
        tmp_path, tiny_model_dir, max_upload_bytes=500, upload_chunk_bytes=256
    )
    try:
        data = (stack.data_dir / "alpaca.json").read_bytes()
        for body in (data, body_in_pieces(data, 100)):  # with and without Content-Length
            async with http.post(
                f"{stack.url}/v1/datasets:upload", data=body, headers=stack.headers("alice")
            ) as r:
                assert r.status == 413
                payload = await r.json()
                assert payload["details"][0]["reason"] == "UPLOAD_TOO_LARGE"
    finally:
        await stack.close()


async def test_validate_inline_content_reports_bad_lines(stack, http):
    content = (
        b'{"instruction": "a", "input": "", "output": "b"}\n{"instruction": 5, "output": "x"}\n'
    )
    async with http.post(
        f"{stack.url}/v1/datasets:validate",
        headers=stack.headers("alice"),
        json={"content": base64.b64encode(content).decode()},
    ) as r:
        report = (await r.json())["report"]
    assert report["valid"] is False
    assert report["errors"][0]["line"] == "2"


async def test_server_info_is_open(stack, http):
    async with http.get(f"{stack.url}/v1/info") as r:
        info = await r.json()
    assert r.status == 200 and "lora" in info["features"]


async def test_json_requests_may_not_exceed_the_message_limit(tmp_path, tiny_model_dir, http):
    stack = await start_stack(
        tmp_path, tiny_model_dir, max_message_bytes=4096, upload_chunk_bytes=1024
    )
    try:
        async with http.post(
            f"{stack.url}/v1/jobs", data=b" " * 10000, headers=stack.headers("alice")
        ) as r:
            assert r.status == 413
            assert "too large" in (await r.json())["message"]
    finally:
        await stack.close()


def safetensors(tensors: dict[str, list[int]]) -> bytes:
    """A float32 safetensors file of zeros with these tensors."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + b"\0" * offset


async def test_an_adapter_upload_takes_the_body_and_the_query(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir, upload_chunk_bytes=256)
    try:
        weights = safetensors({"model.layers.0.self_attn.q_proj.lora_a": [16, 4]})
        config = json.dumps({"fine_tune_type": "lora", "lora_parameters": {"rank": 4}})
        url = f"{stack.url}/v1/adapters:upload"
        query = {"metadata.display_name": "mine", "metadata.adapter_config": config}
        async with http.post(
            url, params=query, data=body_in_pieces(weights, 100), headers=stack.headers("alice")
        ) as r:
            assert r.status == 200, await r.text()
            adapter = (await r.json())["adapter"]
        assert adapter["adapter_id"].startswith("ad-") and adapter["display_name"] == "mine"
        assert adapter["sha256"] == hashlib.sha256(weights).hexdigest()
        assert (adapter["kind"], adapter["rank"], int(adapter["size_bytes"])) == (
            "lora",
            4,
            len(weights),
        )
        async with http.post(
            url, params=query, data=b"\x01" * 30, headers=stack.headers("alice")
        ) as r:
            assert r.status == 400
            assert "chunk" in await r.text()
        async with http.post(url, data=weights, headers=stack.headers("alice")) as r:
            assert r.status == 400
            assert "metadata.adapter_config" in await r.text()
    finally:
        await stack.close()
