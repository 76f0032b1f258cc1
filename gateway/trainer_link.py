"""The gateway's one channel to the trainers, and what its errors mean to a client.

One trainer, or several sharing a database (`--trainer a:50052,b:50052`, or a
`dns:///name:port` resolving to all of them): then gRPC's own client-side load
balancing (round_robin) spreads the calls, and its health checking
(grpc.health.v1, which every trainer serves) passes over one that is down or
stopping. Any trainer answers for any job, so the gateway keeps no state.

Calls carry bytes in and out (no decode/encode on the gRPC path) and the
caller's identity as metadata built here and nowhere else, with the trainer's
internal credential: the client's own metadata is never passed on, so nobody
can claim another identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.rpc import status_pb2

from tunewire import addresses
from tunewire.errors import (
    FieldViolation,
    Reason,
    ServiceError,
    build_status,
    invalid_argument,
    reason_of,
)
from tunewire.gateway.config import GatewayConfig
from tunewire.gateway.methods import Method
from tunewire.identity import Principal, identity_metadata, read_credential_file

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The trainer's own limit; responses such as a long job list can be big.
TRAINER_MAX_MESSAGE_BYTES = 64 << 20
# The reason of an error gRPC itself raised on the way to or from the trainer.
_BARE_CODE_REASONS = {
    grpc.StatusCode.CANCELLED: Reason.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED: Reason.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Reason.MESSAGE_TOO_LARGE,
    grpc.StatusCode.UNIMPLEMENTED: Reason.UNIMPLEMENTED,
}


# What grpcio's details say when a request message does not deserialize.
_UNPARSABLE = "Error parsing message with type"

log = logging.getLogger(__name__)

# Several trainers: a call goes to the next healthy one in turn. A read that
# finds its trainer just gone (UNAVAILABLE before any answer) is tried on the
# next; gRPC never retries a stream once it answered, so a Watch is resumed by
# its client with after_sequence. Writes are not retried here: a trainer may
# have done one and died before answering.
_RETRIED_READS = {
    "tunewire.v1.TrainingService": (
        "GetTrainingJob",
        "ListTrainingJobs",
        "WatchTrainingJob",
        "ListCheckpoints",
        "CancelTrainingJob",
        "GetServerInfo",
        "DownloadArtifact",
    ),
    "tunewire.v1.DatasetService": ("GetDataset", "ListDatasets"),
    "grpc.health.v1.Health": ("Check", "Watch"),
}
_BALANCED = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in _RETRIED_READS.items()
                    for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


class CredentialSource:
    """The trainer's internal credential: the one configured, else the trainer's
    file, read again (at most once a second) while it is missing or changes, so a
    gateway may start before its trainer has made it."""

    CHECK_SECONDS = 1.0

    def __init__(self, token: str, path: Path | None, clock=time.monotonic):
        self._token = token
        self._path = path
        self._clock = clock
        self._next_check = 0.0
        if not token and path is not None:
            self._token_from_file = read_credential_file(path)
            if not self._token_from_file:
                log.warning(
                    "no internal credential yet (%s is missing): the trainer refuses calls "
                    "until it has made it, or set TUNEWIRE_INTERNAL_TOKEN",
                    path,
                )
        else:
            self._token_from_file = ""

    def current(self) -> str:
        if self._token or self._path is None:
            return self._token
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.CHECK_SECONDS
            self._token_from_file = read_credential_file(self._path)
        return self._token_from_file


class TrainerLink:
    def __init__(self, config: GatewayConfig):
        self.address = config.trainer
        self._retry_seconds = config.unavailable_retry_seconds
        self._credential = CredentialSource(config.internal_token, config.credential_file)
        target, balanced = addresses.channel_target(config.trainer)
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                *([("grpc.service_config", _BALANCED)] if balanced else []),
                ("grpc.max_receive_message_length", TRAINER_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", -1),
                # A trainer that comes back is found within ~2 s instead of
                # after gRPC's default backoff of up to two minutes.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._callables: dict[str, object] = {}
        self._metadata: dict[tuple[Principal, str], tuple[tuple[str, str], ...]] = {}
        self._open_streams: set = set()
        self.stopping = False

    def metadata(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        credential = self._credential.current()
        md = self._metadata.get((principal, credential))
        if md is None:
            md = self._metadata[principal, credential] = identity_metadata(principal, credential)
        return md

    def _callable(self, method: Method):
        call = self._callables.get(method.path)
        if call is None:
            # No serializers: requests and responses pass through as bytes.
            kind = {
                (False, False): self.channel.unary_unary,
                (False, True): self.channel.unary_stream,
                (True, False): self.channel.stream_unary,
                (True, True): self.channel.stream_stream,
            }[(method.client_streaming, method.server_streaming)]
            call = self._callables[method.path] = kind(method.path)
        return call

    def unary(self, method: Method, request: bytes, principal: Principal, timeout: float | None):
        """Awaitable response bytes."""
        return self._callable(method)(request, timeout=timeout, metadata=self.metadata(principal))

    def server_stream(
        self, method: Method, request: bytes, principal: Principal, timeout: float | None
    ):
        """A call to read response bytes from (`read()` until grpc.aio.EOF)."""
        return self._callable(method)(request, timeout=timeout, metadata=self.metadata(principal))

    def client_stream(self, method: Method, principal: Principal, timeout: float | None):
        """A call to `write()` request bytes to, then `done_writing()` and await."""
        return self._callable(method)(timeout=timeout, metadata=self.metadata(principal))

    @contextlib.contextmanager
    def tracking(self, call) -> Iterator[None]:
        """Keeps a streaming call known until it ends, so that `stop_streams` can end it."""
        self._open_streams.add(call)
        try:
            yield
        finally:
            self._open_streams.discard(call)

    def stop_streams(self) -> None:
        """Ends every open stream (the gateway is stopping); each client is told why
        and can resume elsewhere, instead of seeing its connection cut."""
        self.stopping = True
        for call in list(self._open_streams):
            call.cancel()

    async def read(self, call):
        """The next message of a streaming call. A call ended by `stop_streams` raises
        UNAVAILABLE "the gateway is stopping" (grpc.aio raises CancelledError for it,
        which must not be confused with the reader itself being cancelled)."""
        try:
            return await call.read()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.stopping and not getattr(task, "cancelling", lambda: 0)():
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    "the gateway is stopping; call again (a watch resumes with after_sequence)",
                    reason=Reason.GATEWAY_STOPPING,
                    retry_after_seconds=self._retry_seconds,
                ) from None
            raise

    def status_of(self, err: grpc.aio.AioRpcError) -> status_pb2.Status:
        """The google.rpc.Status a failed trainer call stands for."""
        for key, value in err.trailing_metadata() or ():
            if key == STATUS_DETAILS_KEY:
                status = status_pb2.Status.FromString(value)
                if status.code != err.code().value[0]:
                    break
                if reason_of(status) == Reason.INTERNAL_TOKEN_REQUIRED:
                    return self._credential_refused()
                return status
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            return self.unavailable_status()
        if err.code() == grpc.StatusCode.UNKNOWN and _UNPARSABLE in (err.details() or ""):
            # The gateway relays request bytes undecoded; bytes that are not the method's
            # message (bad UTF-8 in a string, a corrupt wire format) fail in the trainer's
            # deserializer, which grpcio answers UNKNOWN naming a Python class: the
            # client's mistake, so INVALID_ARGUMENT, without the class name.
            return invalid_argument(
                [FieldViolation("request", "is not a valid message of the method's request type")]
            ).to_status()
        # gRPC's own refusal (deadline, size limit, ...): it sent no ErrorInfo.
        reason = _BARE_CODE_REASONS.get(err.code(), Reason.INTERNAL)
        return build_status(err.code(), err.details() or err.code().name.lower(), reason)

    def _credential_refused(self) -> status_pb2.Status:
        """The trainer refused this gateway's credential: the operator's problem, not
        the client's, so not a 401 (which would ask the client for another key)."""
        log.error(
            "the trainer at %s refused this gateway's internal credential: set the trainer's "
            "TUNEWIRE_INTERNAL_TOKEN here too, or TUNEWIRE_HOME to the trainer's state directory",
            self.address,
        )
        seconds = self._retry_seconds
        return build_status(
            grpc.StatusCode.UNAVAILABLE,
            "the gateway cannot reach the trainer right now (it is not set up to be trusted "
            f"by it; see the gateway's log); retry in {seconds:g} s",
            Reason.TRAINER_UNAVAILABLE,
            retry_after_seconds=seconds,
        )

    def unavailable_status(self) -> status_pb2.Status:
        """The trainer cannot be reached (it sent no status of its own)."""
        seconds = self._retry_seconds
        return build_status(
            grpc.StatusCode.UNAVAILABLE,
            f"the trainer is not reachable right now; retry in {seconds:g} s",
            Reason.TRAINER_UNAVAILABLE,
            retry_after_seconds=seconds,
        )

    async def close(self) -> None:
        await self.channel.close()
