"""Per-key limits: a request rate (token bucket) and open streams.

Both answer RESOURCE_EXHAUSTED (HTTP 429) with a google.rpc.RetryInfo that says
when trying again can succeed. Sizes are limited where bytes arrive (gRPC's
message limit, the HTTP body limit, the upload counter in forwarding).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import grpc

from tunewire.errors import Reason, ServiceError


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill]

    def check(self, key: str) -> None:
        """Takes one token for `key`, or raises RESOURCE_EXHAUSTED with the wait."""
        if self._rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self._burst, now]
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        wait = (1.0 - tokens) / self._rate
        raise ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"rate limit of {self._rate:g} requests per second (burst {self._burst:g}) reached; "
            f"retry in {wait:.2f} s",
            reason=Reason.RATE_LIMITED,
            metadata={"limit_per_second": f"{self._rate:g}", "burst": f"{self._burst:g}"},
            retry_after_seconds=wait,
        )


class StreamLimiter:
    """Counts open streaming calls per key; `open(key)` holds a slot while it runs."""

    def __init__(self, limit: int, retry_after_seconds: float = 1.0):
        self._limit = limit
        self._retry = retry_after_seconds
        self._open: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    def total(self) -> int:
        return sum(self._open.values())

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[None]:
        current = self._open.get(key, 0)
        if current >= self._limit:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {self._limit} streams may be open per key and {current} are; "
                "close one (or wait for it to end) and retry",
                reason=Reason.TOO_MANY_STREAMS,
                metadata={"limit": str(self._limit)},
                retry_after_seconds=self._retry,
            )
        self._open[key] = current + 1
        try:
            yield
        finally:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]


def upload_too_large(limit: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"upload exceeds the limit of {limit} bytes ({limit / (1 << 20):.0f} MiB)",
        reason=Reason.UPLOAD_TOO_LARGE,
        metadata={"limit_bytes": str(limit)},
    )
