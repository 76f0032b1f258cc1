"""An async gRPC channel to the trainer itself, presenting its internal credential on every call.

For tools, benchmarks and tests that talk to the trainer without the gateway:

    async with trainer_channel(trainer.address, trainer.credential) as channel:
        stub = TrainingServiceStub(channel)

Metadata a call passes (`x-tunewire-principal` to act as a tenant) is kept;
the credential is added to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from tunewire.identity import INTERNAL_TOKEN_HEADER


def trainer_channel(
    address: str, credential: str, *, options: Sequence[tuple[str, object]] = ()
) -> grpc.aio.Channel:
    pairs = ((INTERNAL_TOKEN_HEADER, credential),)
    return grpc.aio.insecure_channel(
        address,
        options=list(options),
        # grpc.aio files an interceptor under the first call shape it implements,
        # so each shape gets its own.
        interceptors=[kind(pairs) for kind in _INTERCEPTORS],
    )


class _AddsMetadata:
    def __init__(self, pairs: tuple[tuple[str, str], ...]):
        self._pairs = pairs

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()), *self._pairs)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_AddsMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _UnaryStream(_AddsMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _StreamUnary(_AddsMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_AddsMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


_INTERCEPTORS = (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
