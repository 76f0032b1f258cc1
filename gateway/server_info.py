"""The trainer's server info, last known, refreshed in the background.

The trainer answers GetServerInfo only once its one-off probe of the worker
environment (mlx, BLAS) is done, which takes many seconds on a loaded machine.
Health checks must not wait for that: they read what is known now and a
refresh runs behind them, one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from tunewire.v1 import training_service_pb2 as training_service_pb

log = logging.getLogger(__name__)
# Server info changes slowly (job counts aside); older than this is refreshed.
MAX_AGE_SECONDS = 5.0
# A refresh in the background may wait as long as the trainer's probe can take.
REFRESH_TIMEOUT_SECONDS = 150.0

Fetch = Callable[[float], Awaitable[training_service_pb.GetServerInfoResponse]]


class ServerInfoCache:
    def __init__(self, fetch: Fetch, max_age: float = MAX_AGE_SECONDS, clock=time.monotonic):
        self._fetch = fetch
        self._max_age = max_age
        self._clock = clock
        self._refresh: asyncio.Task | None = None
        self.last: training_service_pb.GetServerInfoResponse | None = None
        self.fetched_at = 0.0
        self.error: BaseException | None = None  # of the latest refresh, if it failed

    async def get(self, wait: float) -> training_service_pb.GetServerInfoResponse | None:
        """The info, fresh if the trainer answers within `wait` seconds, else the
        last known one (None when none came yet)."""
        if self.last is not None and self._clock() - self.fetched_at < self._max_age:
            return self.last
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._run_refresh())
        try:
            await asyncio.wait_for(asyncio.shield(self._refresh), wait)
        except asyncio.TimeoutError:
            pass
        return self.last

    async def _run_refresh(self) -> None:
        try:
            info = await self._fetch(REFRESH_TIMEOUT_SECONDS)
        except Exception as exc:  # the trainer is down or slow: keep the last known
            self.error = exc
            return
        self.last, self.fetched_at, self.error = info, self._clock(), None

    def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
