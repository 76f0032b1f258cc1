"""gRPC forwarding of every TrainingService and DatasetService method to the trainer.

Method handlers with identity serializers: a request is never decoded, only
relayed as bytes, with the caller's identity and remaining deadline. Streams
are relayed message by message; when the client goes away its handler is
cancelled and, with it, the trainer call. Trainer errors are relayed as the
google.rpc.Status the trainer sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from grpc_status import rpc_status

from tunewire.errors import ServiceError, grpc_abort
from tunewire.gateway.auth import current_principal
from tunewire.gateway.limits import StreamLimiter, upload_too_large
from tunewire.gateway.methods import Method
from tunewire.gateway.trainer_link import TrainerLink
from tunewire.identity import Principal


async def pump_upload(call, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Writes request messages to a client-streaming trainer call, counting bytes
    against `limit`, and returns the response. Nothing is held beyond one message."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise upload_too_large(limit)
        await call.write(chunk)
    await call.done_writing()
    return await call


class Forwarder:
    def __init__(
        self,
        link: TrainerLink,
        methods: dict[str, Method],
        streams: StreamLimiter,
        max_upload_bytes: int,
    ):
        self._link = link
        self._methods = methods
        self._streams = streams
        self._max_upload = max_upload_bytes

    def handlers_by_service(self) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in self._methods.values():
            by_service.setdefault(method.service, {})[method.name] = self._handler(method)
        return by_service

    def add_to_server(self, server: grpc.aio.Server) -> None:
        for service, handlers in self.handlers_by_service().items():
            # Registered methods are looked up by gRPC core, not by a Python
            # generic handler on every call.
            if hasattr(server, "add_registered_method_handlers"):
                server.add_registered_method_handlers(service, handlers)
            else:
                server.add_generic_rpc_handlers(
                    (grpc.method_handlers_generic_handler(service, handlers),)
                )

    def _handler(self, method: Method) -> grpc.RpcMethodHandler:
        if method.client_streaming and method.server_streaming:
            raise ValueError(f"{method.path}: bidirectional streams are not forwarded yet")
        if method.client_streaming:
            return grpc.stream_unary_rpc_method_handler(self._client_stream(method))
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._server_stream(method))
        return grpc.unary_unary_rpc_method_handler(self._unary(method))

    async def _relay(self, context: grpc.aio.ServicerContext, err: grpc.aio.AioRpcError) -> None:
        await context.abort_with_status(rpc_status.to_status(self._link.status_of(err)))

    def _unary(self, method: Method):
        link = self._link

        async def forward_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            principal = await _principal(context)
            try:
                return await link.unary(method, request, principal, context.time_remaining())
            except grpc.aio.AioRpcError as err:
                await self._relay(context, err)

        return forward_unary

    def _server_stream(self, method: Method):
        link = self._link

        async def forward_server_stream(request: bytes, context: grpc.aio.ServicerContext):
            principal = await _principal(context)
            try:
                with self._streams.open(principal.name):
                    call = link.server_stream(method, request, principal, context.time_remaining())
                    try:
                        with link.tracking(call):
                            while (message := await link.read(call)) is not grpc.aio.EOF:
                                yield message
                    finally:
                        call.cancel()  # the client left or failed: stop the trainer's work too
            except grpc.aio.AioRpcError as err:
                await self._relay(context, err)
            except ServiceError as exc:
                await grpc_abort(context, exc)

        return forward_server_stream

    def _client_stream(self, method: Method):
        link = self._link

        async def forward_client_stream(requests, context: grpc.aio.ServicerContext) -> bytes:
            principal = await _principal(context)
            try:
                with self._streams.open(principal.name):
                    call = link.client_stream(method, principal, context.time_remaining())
                    try:
                        with link.tracking(call):
                            return await pump_upload(call, requests, self._max_upload)
                    finally:
                        call.cancel()
            except grpc.aio.AioRpcError as err:
                await self._relay(context, err)
            except ServiceError as exc:
                await grpc_abort(context, exc)

        return forward_client_stream


async def _principal(context: grpc.aio.ServicerContext) -> Principal:
    principal = current_principal.get()
    if principal is None:
        # Only reachable if the auth interceptor was left out: fail closed.
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no authenticated caller")
    return principal
