"""The gateway's grpc.health.v1: SERVING only while the trainer is.

A background task watches the trainer's own health service. When the trainer
goes away (or says NOT_SERVING while it shuts down) every service here turns
NOT_SERVING, and the task keeps trying until the trainer is back.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class TrainerHealth:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        servicer: health.aio.HealthServicer,
        services: tuple[str, ...],
        retry_seconds: float,
    ):
        self._stub = health_pb2_grpc.HealthStub(channel)
        self._servicer = servicer
        self._services = ("", *services)
        self._retry = retry_seconds
        self._task: asyncio.Task | None = None
        self.serving: bool | None = None  # None until the first answer

    async def start(self) -> None:
        await self._set(False)
        self._task = asyncio.ensure_future(self._watch_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _watch_forever(self) -> None:
        while True:
            try:
                async for answer in self._stub.Watch(health_pb2.HealthCheckRequest(service="")):
                    await self._set(answer.status == SERVING)
            except grpc.aio.AioRpcError as err:
                if self.serving:
                    log.warning("trainer unreachable (%s); reporting NOT_SERVING", err.code().name)
            await self._set(False)
            await asyncio.sleep(self._retry)

    async def _set(self, serving: bool) -> None:
        if serving == self.serving:
            return
        if serving:
            log.info("trainer is serving")
        self.serving = serving
        for name in self._services:
            await self._servicer.set(name, SERVING if serving else NOT_SERVING)
