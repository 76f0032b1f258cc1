"""Sends pending webhook deliveries: signed POSTs, retried with exponential backoff.

One asyncio task per trainer. It claims due deliveries from the store (several trainers
on one database share the work), POSTs each with a fresh signature, and records every
attempt. A 2xx answer delivers; anything else (another status, a timeout, a refused
connection, a host that now resolves to a private address) schedules the next attempt
`first_retry * 2^(attempts-1)` seconds later, at most `max_retry_delay`, until the retry
window since the job ended is spent: then the delivery is FAILED. Redirects are not
followed (the endpoint is the URL its owner registered). The task wakes when a job ends,
when the next retry is due, and at least every `POLL_SECONDS` (deliveries another
trainer queued).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

from tunewire.trainer.store.webhooks import DELIVERED, FAILED, PENDING, WebhookStore, timestamp
from tunewire.trainer.webhooks import signing, urls
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb
from tunewire.version import __version__

log = logging.getLogger(__name__)

POLL_SECONDS = 30.0
BATCH = 16
MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class RetryPolicy:
    first_retry_seconds: float
    max_retry_delay_seconds: float
    retry_window_seconds: float
    timeout_seconds: float

    def delay_after(self, attempts: int) -> float:
        return min(
            self.first_retry_seconds * 2 ** max(attempts - 1, 0), self.max_retry_delay_seconds
        )


class WebhookDispatcher:
    def __init__(self, store: WebhookStore, policy: RetryPolicy, allow_private: bool):
        self._store = store
        self._policy = policy
        self._allow_private = allow_private
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self, *_: object) -> None:
        """Something may be due now (safe from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": f"tunewire-webhooks/{__version__}"}
        )
        while True:
            try:
                claimed = self._store.claim_due(
                    time.time(), self._policy.timeout_seconds + 5, BATCH
                )
            except Exception:
                log.exception("webhooks: cannot read pending deliveries")
                claimed = []
            if claimed:
                await asyncio.gather(*(self._attempt(*c) for c in claimed))
                continue
            due = self._store.next_due()
            wait = POLL_SECONDS if due is None else min(max(due - time.time(), 0), POLL_SECONDS)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _attempt(
        self,
        delivery: webhook_service_pb.WebhookDelivery,
        body: bytes,
        webhook: webhook_service_pb.Webhook,
    ) -> None:
        now = time.time()
        delivery.attempts += 1
        delivery.last_attempt_time.CopyFrom(timestamp(now))
        error, status = "", 0
        try:
            await urls.check_reachable(webhook.url, self._allow_private)
            headers = signing.headers(webhook.secret, delivery.delivery_id, int(now), body)
            headers["Content-Type"] = "application/json"
            assert self._session is not None
            async with self._session.post(
                webhook.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._policy.timeout_seconds),
            ) as response:
                status = response.status
            if not 200 <= status < 300:
                error = f"the endpoint answered HTTP {status}"
        except urls.UrlRefused as exc:
            error = f"not sent: the URL {exc}"
        except TimeoutError:
            error = f"no answer within {self._policy.timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            error = f"cannot reach the endpoint: {type(exc).__name__}: {exc}"
        delivery.last_status_code = status
        delivery.last_error = " ".join(error.split())[:MAX_ERROR_CHARS]
        if not error:
            delivery.state = DELIVERED
            delivery.delivered_time.CopyFrom(timestamp(time.time()))
            delivery.ClearField("next_attempt_time")
        else:
            retry_at = now + self._policy.delay_after(delivery.attempts)
            ends = delivery.create_time.ToNanoseconds() / 1e9 + self._policy.retry_window_seconds
            if retry_at > ends:
                delivery.state = FAILED
                delivery.ClearField("next_attempt_time")
            else:
                delivery.state = PENDING
                delivery.next_attempt_time.CopyFrom(timestamp(retry_at))
        try:
            self._store.record(delivery)
        except Exception:
            # Left claimed: it is tried again once the claim runs out.
            log.exception("webhooks: cannot record delivery %s", delivery.delivery_id)
