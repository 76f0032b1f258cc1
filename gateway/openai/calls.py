"""Typed calls of the trainer's RPCs for the OpenAI routes, over the gateway's one link.

Messages are encoded here and relayed as bytes like every other route, with the
caller's identity; the trainer decides what the caller may see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import Message

from tunewire.gateway.keys import Principal
from tunewire.gateway.limits import StreamLimiter
from tunewire.gateway.methods import Method
from tunewire.gateway.trainer_link import TrainerLink

TRAINING = "tunewire.v1.TrainingService"
DATASETS = "tunewire.v1.DatasetService"


class TrainerCalls:
    def __init__(self, link: TrainerLink, methods: dict[str, Method], streams: StreamLimiter):
        self.link = link
        self._methods = methods
        self._streams = streams

    def method(self, service: str, name: str) -> Method:
        return self._methods[f"/{service}/{name}"]

    async def unary(
        self,
        service: str,
        name: str,
        message: Message,
        who: Principal,
        timeout: float | None = None,
    ):
        method = self.method(service, name)
        data = await self.link.unary(method, message.SerializeToString(), who, timeout)
        return method.response_class.FromString(data)

    async def training(self, name: str, message: Message, who: Principal):
        return await self.unary(TRAINING, name, message, who)

    async def datasets(self, name: str, message: Message, who: Principal):
        return await self.unary(DATASETS, name, message, who)

    async def stream(
        self, service: str, name: str, message: Message, who: Principal
    ) -> AsyncIterator[Message]:
        """The messages of a server stream; leaving the loop early ends the trainer's call."""
        method = self.method(service, name)
        with self._streams.open(who.name):
            call = self.link.server_stream(method, message.SerializeToString(), who, None)
            try:
                with self.link.tracking(call):
                    while (data := await self.link.read(call)) is not grpc.aio.EOF:
                        yield method.response_class.FromString(data)
            finally:
                call.cancel()

    async def upload(
        self, service: str, name: str, messages: AsyncIterator[Message], who: Principal
    ):
        """A client-streaming call: writes `messages` while they come, returns the response."""
        method = self.method(service, name)
        with self._streams.open(who.name):
            call = self.link.client_stream(method, who, None)
            try:
                with self.link.tracking(call):
                    async for message in messages:
                        await call.write(message.SerializeToString())
                    await call.done_writing()
                    data = await call
            finally:
                call.cancel()
        return method.response_class.FromString(data)
