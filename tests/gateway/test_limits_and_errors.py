"""The token bucket and stream counter, and the one gRPC→HTTP table."""

from __future__ import annotations

import json

import grpc
import pytest

from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.gateway.http_errors import (
    HTTP_STATUS,
    error_response,
    http_status,
    retry_after_seconds,
)
from tunewire.gateway.limits import RateLimiter, StreamLimiter

pytestmark = pytest.mark.timeout(30)


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("alice")
    with pytest.raises(ServiceError) as info:
        limiter.check("alice")
    err = info.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.retry_after_seconds == pytest.approx(0.5)
    assert "2 requests per second" in err.message
    limiter.check("bob")  # every key has its own bucket
    clock.now += 0.5
    limiter.check("alice")  # one token refilled
    with pytest.raises(ServiceError):
        limiter.check("alice")
    clock.now += 60
    for _ in range(3):  # refills up to the burst, not beyond
        limiter.check("alice")
    with pytest.raises(ServiceError):
        limiter.check("alice")


def test_rate_zero_disables_the_limit():
    limiter = RateLimiter(rate=0, burst=1)
    for _ in range(1000):
        limiter.check("alice")


def test_stream_limiter_counts_per_key_and_releases_on_exit():
    streams = StreamLimiter(limit=2)
    with streams.open("alice"), streams.open("alice"):
        assert streams.count("alice") == 2
        with pytest.raises(ServiceError) as info, streams.open("alice"):
            pass
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.retry_after_seconds is not None
        with streams.open("bob"):
            assert streams.count("bob") == 1
    assert streams.count("alice") == 0
    with pytest.raises(RuntimeError), streams.open("alice"):
        raise RuntimeError("the stream failed")
    assert streams.count("alice") == 0


def test_http_table_is_grpc_gateways():
    expected = {
        "OK": 200,
        "CANCELLED": 499,
        "UNKNOWN": 500,
        "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403,
        "UNAUTHENTICATED": 401,
        "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400,
        "ABORTED": 409,
        "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
        "DATA_LOSS": 500,
    }
    assert {code.name: status for code, status in HTTP_STATUS.items()} == expected
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert http_status(5) == 404 and http_status(99) == 500


def test_error_json_carries_status_details_and_retry_after():
    exc = ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        reason="RATE_LIMITED",
        retry_after_seconds=1.2,
    )
    response = error_response(exc)
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"  # whole seconds, rounded up
    body = json.loads(response.text)
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert body["message"] == "slow down"
    types = [d["@type"] for d in body["details"]]
    assert "type.googleapis.com/google.rpc.RetryInfo" in types
    assert "detail" not in body
    assert retry_after_seconds(exc.to_status()) == 2


def test_bad_request_json_lists_field_violations_and_legacy_detail():
    exc = invalid_argument([FieldViolation("spec.lora.rank", "must be at least 1, got 0")])
    response = error_response(exc, legacy=True)
    assert response.status == 400
    body = json.loads(response.text)
    bad = next(d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert bad["field_violations"] == [
        {"field": "spec.lora.rank", "description": "must be at least 1, got 0"}
    ]
    assert body["detail"] == body["message"]
    assert "Retry-After" not in response.headers


def test_unexpected_errors_become_internal_without_insides():
    response = error_response(KeyError("secret internal detail"))
    assert response.status == 500
    assert "secret" not in response.text
