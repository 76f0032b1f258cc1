"""Domain errors that carry their gRPC code, and the one builder of google.rpc.Status.

Code everywhere raises `ServiceError` (or a helper below) with a `Reason` from
the catalogue (tunewire.reasons); each transport turns it into a status in
exactly one place: `grpc_abort` for gRPC here, the gateway's HTTP layer for
JSON. Every Status anybody sends (a refusal, a relayed outage, a failed job) is
made by `build_status`. Anything else that escapes becomes INTERNAL without a
traceback, so a client never sees our insides.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tunewire.reasons import ERROR_DOMAIN, Reason

__all__ = [
    "ERROR_DOMAIN",
    "FieldViolation",
    "Reason",
    "ServiceError",
    "build_status",
    "clip",
    "grpc_abort",
    "handles_errors",
    "invalid_argument",
    "not_found",
    "reason_of",
    "refusing_handler",
    "status_from_exception",
]

log = logging.getLogger(__name__)

# A status travels in gRPC trailing metadata (grpc-status-details-bin, base64, plus
# grpc-message): together they stay well under the 8 KiB peers accept by default.
MAX_MESSAGE = 600
MAX_FIELD = 200
MAX_DESCRIPTION = 400
MAX_VIOLATION_BYTES = 2400


@dataclass
class FieldViolation:
    """One bad field of a request: its path (`spec.lora.rank`) and what is wrong."""

    field: str
    description: str


def build_status(
    code: grpc.StatusCode | int,
    message: str,
    reason: Reason,
    *,
    violations: Iterable[FieldViolation] = (),
    resource_type: str = "",
    resource_name: str = "",
    retry_after_seconds: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> status_pb2.Status:
    """The google.rpc.Status of an error: its code (a grpc.StatusCode or a
    google.rpc.Code number), one line of message, and details: always an
    ErrorInfo (domain tunewire.dev, `reason`), a BadRequest with `violations`,
    a ResourceInfo when a resource is named, a RetryInfo when a retry can help."""
    number = code.value[0] if isinstance(code, grpc.StatusCode) else int(code)
    message = _clip(message, MAX_MESSAGE)
    status = status_pb2.Status(code=number, message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason=str(reason), domain=ERROR_DOMAIN, metadata=dict(metadata or {})
        )
    )
    violations = _bounded(list(violations))
    if violations:
        status.details.add().Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in violations
                ]
            )
        )
    if resource_type:
        status.details.add().Pack(
            error_details_pb2.ResourceInfo(
                resource_type=resource_type, resource_name=resource_name, description=message
            )
        )
    if retry_after_seconds is not None:
        seconds = max(0.0, retry_after_seconds)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters: a client's value echoed in a refusal."""
    return _clip(text, limit)


def _bounded(violations: list[FieldViolation]) -> list[FieldViolation]:
    """As many violations as fit gRPC's metadata limit (the status travels in a
    trailer; 10,000 violations would overflow it and turn a refusal into a 429)."""
    kept: list[FieldViolation] = []
    size = 0
    for i, v in enumerate(violations):
        clipped = FieldViolation(_clip(v.field, MAX_FIELD), _clip(v.description, MAX_DESCRIPTION))
        size += len(clipped.field) + len(clipped.description) + 8
        if size > MAX_VIOLATION_BYTES:
            rest = len(violations) - i
            kept.append(FieldViolation(clipped.field, f"... and {rest} more violation(s)"))
            break
        kept.append(clipped)
    return kept


def reason_of(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of a status ('' when it carries none)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


@dataclass
class ServiceError(Exception):
    code: grpc.StatusCode
    message: str
    reason: Reason
    violations: list[FieldViolation] = field(default_factory=list)
    resource_type: str = ""
    resource_name: str = ""
    retry_after_seconds: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> status_pb2.Status:
        return build_status(
            self.code,
            self.message,
            self.reason,
            violations=self.violations,
            resource_type=self.resource_type,
            resource_name=self.resource_name,
            retry_after_seconds=self.retry_after_seconds,
            metadata=self.metadata,
        )


def invalid_argument(violations: Iterable[FieldViolation], summary: str = "") -> ServiceError:
    violations = list(violations)
    if not summary:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        summary = f"invalid {first.field}: {first.description}{more}"
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        summary,
        reason=Reason.INVALID_ARGUMENT,
        violations=violations,
    )


def not_found(resource_type: str, name: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"{resource_type} {name!r} not found",
        reason=Reason.NOT_FOUND,
        resource_type=resource_type,
        resource_name=name,
    )


def status_from_exception(exc: BaseException) -> status_pb2.Status:
    if isinstance(exc, ServiceError):
        return exc.to_status()
    return build_status(code_pb2.INTERNAL, "internal error; see the server log", Reason.INTERNAL)


async def grpc_abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Ends an RPC with `exc` as a rich status (details in grpc-status-details-bin)."""
    if not isinstance(exc, ServiceError):
        log.exception("unexpected error in RPC", exc_info=exc)
    await context.abort_with_status(rpc_status.to_status(status_from_exception(exc)))


def refusing_handler(
    request_streaming: bool, response_streaming: bool, status: status_pb2.Status
) -> grpc.RpcMethodHandler:
    """A method handler of the given shape that only answers `status`: what a server
    interceptor returns to refuse a call before its real handler runs."""
    grpc_status = rpc_status.to_status(status)

    async def refuse(_request, context):
        await context.abort_with_status(grpc_status)

    async def refuse_stream(_request, context):
        await context.abort_with_status(grpc_status)
        yield  # pragma: no cover - makes this an async generator

    if response_streaming:
        if request_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def handles_errors(method):
    """Decorates an async servicer method (unary or server-streaming) so that any
    exception ends the call as a google.rpc.Status instead of a traceback."""

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self, request, context):
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await grpc_abort(context, exc)

        return stream_wrapper

    @functools.wraps(method)
    async def unary_wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await grpc_abort(context, exc)

    return unary_wrapper
