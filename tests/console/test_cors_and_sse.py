"""Browsers on other origins: CORS only for the configured origins (none by
default), preflights answered before authentication, the headers on errors and
streams too; SSE frames named by event kind."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tunewire.gateway.config import GatewayConfig, parse_args

from ..gateway.conftest import start_stack

APP = "http://app.example:3000"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type"):
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_no_cross_origin_access_by_default(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir)
    try:
        async with http.options(f"{stack.url}/v1/jobs", headers=preflight(APP)) as r:
            assert r.status == 403
            body = await r.json()
            assert "--cors-origin" in body["message"] and APP in body["message"]
            assert body["details"][0]["reason"] == "ORIGIN_NOT_ALLOWED"
            assert "Access-Control-Allow-Origin" not in r.headers
        headers = {**stack.headers("alice"), "Origin": APP}
        async with http.get(f"{stack.url}/v1/jobs", headers=headers) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    finally:
        await stack.close()


async def test_configured_origins_get_preflights_and_headers(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir, cors_origins=(APP,))
    try:
        async with http.options(f"{stack.url}/v1/jobs", headers=preflight(APP)) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert set(r.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST"}
            assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
            assert int(r.headers["Access-Control-Max-Age"]) > 0
            assert "Access-Control-Allow-Credentials" not in r.headers  # keys, never cookies
        path = "/v1/jobs/job-123456789abc:cancel"
        async with http.options(f"{stack.url}{path}", headers=preflight(APP)) as r:
            assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]
        async with http.options(
            f"{stack.url}/v1/jobs", headers=preflight("http://evil.example")
        ) as r:
            assert r.status == 403

        headers = {**stack.headers("alice"), "Origin": APP}
        async with http.get(f"{stack.url}/v1/jobs", headers=headers) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == APP
            assert "Origin" in r.headers["Vary"]
        # Errors are readable by the page too, with the headers it needs.
        async with http.get(f"{stack.url}/v1/jobs", headers={"Origin": APP}) as r:
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == APP
            assert "WWW-Authenticate" in r.headers["Access-Control-Expose-Headers"]
        # And streams, whose headers go out before the first event.
        job = await stack.create_job("alice")
        await stack.training().CancelTrainingJob(_cancel(job.id), metadata=stack.md("alice"))
        sse = {**headers, "Accept": "text/event-stream"}
        async with http.get(f"{stack.url}/v1/jobs/{job.id}/events", headers=sse) as r:
            assert r.headers["Access-Control-Allow-Origin"] == APP
            frames = _frames((await r.read()).decode())
        async with http.get(
            f"{stack.url}/v1/jobs",
            headers={**stack.headers("alice"), "Origin": "http://evil.example"},
        ) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
    finally:
        await stack.close()
    # Every frame is named by its kind: the oneof field set in the event.
    assert [f["event"] for f in frames] == ["state_change", "state_change"]
    for frame in frames:
        event = json.loads(frame["data"])["event"]
        assert frame["event"] in event and frame["id"] == event["sequence"]


def _cancel(job_id: str):
    from tunewire.v1 import training_service_pb2 as training_service_pb

    return training_service_pb.CancelTrainingJobRequest(job_id=job_id)


def _frames(text: str) -> list[dict]:
    frames = []
    for block in text.strip().split("\n\n"):
        frame = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if frame:
            frames.append(frame)
    return frames


def test_origins_are_checked_and_taken_from_flags():
    assert parse_args(["--cors-origin", APP, "--cors-origin", "*"]).cors_origins == (APP, "*")
    assert parse_args([]).cors_origins == ()
    for bad in ("app.example", "http://app.example/console", "ftp://x", ""):
        with pytest.raises(ValueError, match="CORS origin"):
            GatewayConfig(cors_origins=(bad,))
