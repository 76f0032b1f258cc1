"""The gateway's authentication edges (issue 13, item 3): one credential per request,
401s that say how to authenticate, keys never taken from (or logged with) a URL,
413 for a body over the limit, and a trainer that refuses the gateway is the
operator's problem (503), not the client's (401)."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from multidict import CIMultiDict

from tunewire.gateway.access_log import redact_url
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import start_stack

pytestmark = pytest.mark.timeout(120)


def reason_of(err: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def conflicting_headers(stack) -> list[CIMultiDict]:
    alice, bob = stack.keys["alice"], stack.keys["bob"]
    return [
        CIMultiDict([("X-API-Key", alice), ("Authorization", f"Bearer {bob}")]),
        CIMultiDict([("X-API-Key", alice), ("X-API-Key", bob)]),
        CIMultiDict([("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {bob}")]),
        # A wrong key does not hide behind a right one, whichever comes first.
        CIMultiDict([("Authorization", "Bearer tw_wrong"), ("X-API-Key", alice)]),
    ]


async def test_two_different_credentials_over_http_are_refused_as_conflicting(stack, http):
    for headers in conflicting_headers(stack):
        for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/info"), ("GET", "/train")):
            async with http.request(method, stack.url + path, headers=headers) as r:
                body = await r.json()
                assert r.status == 401, (path, headers)
                assert body["details"][0]["reason"] == "CONFLICTING_CREDENTIALS"
                assert r.headers["WWW-Authenticate"].startswith('Bearer realm="tunewire"')
                for key in stack.keys.values():
                    assert key not in await r.text()


async def test_the_same_key_in_both_headers_is_one_credential(stack, http):
    key = stack.keys["alice"]
    headers = CIMultiDict([("X-API-Key", key), ("Authorization", f"Bearer {key}")])
    async with http.get(f"{stack.url}/v1/jobs", headers=headers) as r:
        assert r.status == 200


async def test_two_different_credentials_over_grpc_are_refused_as_conflicting(stack):
    alice, bob = stack.keys["alice"], stack.keys["bob"]
    stub = stack.training()
    for metadata in (
        (("x-api-key", alice), ("authorization", f"Bearer {bob}")),
        (("x-api-key", alice), ("x-api-key", bob)),
        (("authorization", f"Bearer {bob}"), ("authorization", f"Bearer {alice}")),
    ):
        for call, request in (
            (stub.ListTrainingJobs, training_service_pb.ListTrainingJobsRequest()),
            (
                stub.GetServerInfo,
                training_service_pb.GetServerInfoRequest(),
            ),  # public: a key sent must still be one
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason_of(refused.value) == "CONFLICTING_CREDENTIALS"
            assert alice not in refused.value.details() and bob not in refused.value.details()


async def test_every_401_says_how_to_authenticate(stack, http):
    cases = (
        ("GET", "/v1/jobs", {}, 'Bearer realm="tunewire"'),
        ("GET", "/v1/jobs", {"X-API-Key": "tw_wrong"}, 'error="invalid_token"'),
        ("GET", "/train", {}, 'Bearer realm="tunewire"'),
        ("POST", "/train/start", {"Authorization": "Bearer tw_wrong"}, 'error="invalid_token"'),
    )
    for method, path, headers, challenge in cases:
        async with http.request(method, stack.url + path, headers=headers, json={}) as r:
            assert r.status == 401, path
            assert challenge in r.headers["WWW-Authenticate"], path
    # Not on other errors.
    async with http.get(f"{stack.url}/v1/jobs/job-000000000000", headers=stack.headers("bob")) as r:
        assert r.status == 404 and "WWW-Authenticate" not in r.headers


async def test_keys_in_the_query_string_are_refused_and_never_logged(stack, http, caplog):
    key = stack.keys["alice"]
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    urls = (
        f"/v1/jobs?api_key={key}",
        f"/v1/jobs?page_size=5&token={key}",
        f"/status?apikey={key}",
        f"/v1/info?key={key}",
        f"/health?x-api-key={key}",
        f"/v1/jobs?state=RUNNING&something={key}",  # not a key's name, but a key's shape
    )
    for url in urls:
        # Refused even with a valid key in the header: the URL already leaked one.
        headers = {"X-API-Key": key, "Referer": f"http://console.example/?api_key={key}"}
        async with http.get(stack.url + url, headers=headers) as r:
            body = await r.json()
            if "something=" in url:
                assert r.status == 400  # an unknown field, but the key is still not logged
            else:
                assert r.status == 401, url
                assert body["details"][0]["reason"] == "API_KEY_IN_QUERY"
            assert key not in await r.text()
    lines = [record.getMessage() for record in caplog.records if record.name == "aiohttp.access"]
    assert len(lines) >= len(urls)
    assert not [line for line in lines if key in line]
    assert any("api_key=REDACTED" in line and "page_size" not in line for line in lines)
    assert any("page_size=5&token=REDACTED" in line for line in lines)


def test_redaction_keeps_everything_but_the_key():
    assert (
        redact_url("/v1/jobs?page_size=5&page_token=abc") == "/v1/jobs?page_size=5&page_token=abc"
    )
    assert redact_url("/v1/jobs?API_KEY=s3cret&x=1") == "/v1/jobs?API_KEY=REDACTED&x=1"
    assert redact_url("/x?q=tw_abc#frag") == "/x?q=REDACTED#frag"
    assert redact_url("/x?access%5Ftoken=s3cret") == "/x?access%5Ftoken=REDACTED"
    assert redact_url("https://h/p?token=t#f") == "https://h/p?token=REDACTED#f"
    assert redact_url("/no-query") == "/no-query"


async def test_a_body_over_the_limit_is_413_with_the_limit(tmp_path, tiny_model_dir, http):
    stack = await start_stack(
        tmp_path, tiny_model_dir, max_message_bytes=4096, upload_chunk_bytes=1024
    )
    try:
        for path in ("/v1/jobs", "/train/start", "/datasets/validate"):
            async with http.post(
                stack.url + path, data=b" " * 10000, headers=stack.headers("alice")
            ) as r:
                body = await r.json()
                assert r.status == 413, path
                assert body["details"][0]["reason"] == "REQUEST_TOO_LARGE"
                assert body["details"][0]["metadata"] == {"limit_bytes": "4096"}
                assert "Retry-After" not in r.headers
    finally:
        await stack.close()


async def test_a_trainer_refusing_the_gateway_is_503_not_401(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir, internal_token="not-the-trainers")
    try:
        async with http.get(f"{stack.url}/v1/jobs", headers=stack.headers("alice")) as r:
            body = await r.json()
            assert r.status == 503 and "WWW-Authenticate" not in r.headers
            assert body["details"][0]["reason"] == "TRAINER_UNAVAILABLE"
            assert "not-the-trainers" not in await r.text()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.training().ListTrainingJobs(
                training_service_pb.ListTrainingJobsRequest(), metadata=stack.md("alice")
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(refused.value) == "TRAINER_UNAVAILABLE"
    finally:
        await stack.close()


async def test_openai_routes_refuse_conflicts_and_query_keys_in_openai_shape(stack, http):
    alice, bob = stack.keys["alice"], stack.keys["bob"]
    for url, headers in (
        (
            "/openai/v1/models",
            CIMultiDict([("Authorization", f"Bearer {alice}"), ("X-API-Key", bob)]),
        ),
        (f"/openai/v1/models?api_key={alice}", {"Authorization": f"Bearer {alice}"}),
        ("/openai/v1/models", {"Authorization": "Bearer tw_wrong"}),
    ):
        async with http.get(stack.url + url, headers=headers) as r:
            body = await r.json()
            assert r.status == 401, url
            assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
