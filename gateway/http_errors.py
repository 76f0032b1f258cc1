"""gRPC status ↔ HTTP: the one table, and google.rpc.Status as JSON.

The table is grpc-gateway's (runtime/errors.go, HTTPStatusFromCode), so clients
that know grpc-gateway see the statuses they expect; a few reasons have an HTTP
status of their own (a body over the limit is 413, not a 429 "slow down").
Everything the gateway answers over HTTP with an error goes through
`status_response`: a RetryInfo becomes Retry-After, UNAUTHENTICATED carries
WWW-Authenticate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

import grpc
from aiohttp import http_exceptions, web
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from tunewire.errors import (
    FieldViolation,
    Reason,
    ServiceError,
    invalid_argument,
    reason_of,
    status_from_exception,
)

# gRPC code → HTTP status, exactly as grpc-gateway maps them.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
# Reasons whose HTTP status says more than their code's.
HTTP_STATUS_BY_REASON = {
    Reason.REQUEST_TOO_LARGE: 413,
    Reason.UPLOAD_TOO_LARGE: 413,
    Reason.METHOD_NOT_ALLOWED: 405,
}
# The challenge of a 401 (RFC 9110 11.6.1): keys are bearer tokens (RFC 6750);
# X-API-Key is accepted as well.
WWW_AUTHENTICATE = 'Bearer realm="tunewire"'
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
log = logging.getLogger(__name__)
RETRY_INFO_TYPE = error_details_pb2.RetryInfo.DESCRIPTOR.full_name


class StatusError(Exception):
    """A google.rpc.Status ready to answer with (a trainer error reworded for a
    route), and the HTTP status when the route's own contract says another
    (the seed's 422 for a body it cannot read)."""

    def __init__(self, status: status_pb2.Status, http_status: int | None = None):
        super().__init__(status.message)
        self.status = status
        self.http_status = http_status


# The seed's `error_type` words, by HTTP status (FastAPI-era clients branch on them).
LEGACY_ERROR_TYPES = {
    400: "bad_request",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    499: "cancelled",
    501: "not_implemented",
    503: "service_unavailable",
    504: "timeout",
}


def http_status(code: int | grpc.StatusCode) -> int:
    if isinstance(code, int):
        code = _CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return HTTP_STATUS.get(code, 500)


def http_status_of(status: status_pb2.Status) -> int:
    """The HTTP status an error status is answered with."""
    return HTTP_STATUS_BY_REASON.get(reason_of(status)) or http_status(status.code)


def error_headers(status: status_pb2.Status) -> dict[str, str]:
    """Retry-After from a RetryInfo; WWW-Authenticate on UNAUTHENTICATED (with
    error="invalid_token" when the key sent was refused, as RFC 6750 says)."""
    headers = {}
    retry = retry_after_seconds(status)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE + (
            ', error="invalid_token"' if reason_of(status) == Reason.INVALID_API_KEY else ""
        )
    return headers


def status_to_dict(status: status_pb2.Status) -> dict:
    """`{"code", "message", "details"}` with each detail as JSON with its `@type`
    (empty fields of the details left out: they are noise in an error)."""
    body = json_format.MessageToDict(status, preserving_proto_field_name=True)
    return {"code": status.code, "message": status.message, "details": body.get("details", [])}


def retry_after_seconds(status: status_pb2.Status) -> int | None:
    """The RetryInfo delay rounded up to whole seconds (Retry-After has no fractions)."""
    for detail in status.details:
        if detail.TypeName() == RETRY_INFO_TYPE:
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return max(0, math.ceil(delay))
    return None


def status_response(
    status: status_pb2.Status, *, legacy: bool = False, http_status: int | None = None
) -> web.Response:
    """The HTTP answer for an error status. `legacy` adds the seed's
    `{detail, status_code, error_type}` that the old port-8200 clients read."""
    code = http_status or http_status_of(status)
    body = status_to_dict(status)
    if legacy:
        body["detail"] = status.message
        body["status_code"] = code
        body["error_type"] = LEGACY_ERROR_TYPES.get(
            code, "server_error" if code >= 500 else "bad_request"
        )
    return web.Response(
        status=code,
        text=json.dumps(body),
        content_type="application/json",
        headers=error_headers(status),
    )


def error_response(exc: BaseException, *, legacy: bool = False) -> web.Response:
    """A gateway-side error (ServiceError, or anything unexpected → INTERNAL) as HTTP."""
    return status_response(status_from_exception(exc), legacy=legacy)


# aiohttp's own refusals: HTTP status → (gRPC code, reason).
_HTTP_REFUSALS = {
    404: (grpc.StatusCode.NOT_FOUND, Reason.NO_ROUTE),
    405: (grpc.StatusCode.UNIMPLEMENTED, Reason.METHOD_NOT_ALLOWED),
    413: (grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.REQUEST_TOO_LARGE),
    415: (grpc.StatusCode.INVALID_ARGUMENT, Reason.UNSUPPORTED_MEDIA_TYPE),
}


def service_error_from_http(
    status: int, message: str, metadata: dict[str, str] | None = None
) -> ServiceError:
    """aiohttp's own refusals (no route, wrong method, body too large) in our error form."""
    code, reason = _HTTP_REFUSALS.get(
        status,
        (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT)
        if 400 <= status < 500
        else (grpc.StatusCode.INTERNAL, Reason.INTERNAL),
    )
    return ServiceError(code, message, reason=reason, metadata=metadata or {})


def unreadable_body(exc: BaseException) -> ServiceError | None:
    """INVALID_ARGUMENT on `body` for what aiohttp raises while a route reads the body
    (a form or multipart part that is not UTF-8, a part header past its line limit),
    which are the client's mistakes, not 500s; None for anything else."""
    if isinstance(exc, UnicodeDecodeError):
        return invalid_argument(
            [
                FieldViolation(
                    "body", f"is not UTF-8: byte {exc.start} is 0x{exc.object[exc.start]:02x}"
                )
            ]
        )
    if isinstance(exc, http_exceptions.LineTooLong):
        return invalid_argument(
            [FieldViolation("body", "has a part header line longer than 8190 bytes")]
        )
    if isinstance(exc, http_exceptions.HttpProcessingError) and 400 <= exc.code < 500:
        return invalid_argument([FieldViolation("body", "is not a well-formed HTTP body")])
    return None


def error_middleware(status_of):
    """Every error of an HTTP call as google.rpc.Status JSON: the gateway's own
    (auth, limits, bad requests), the trainer's (relayed status, `status_of` an
    AioRpcError) and aiohttp's (no route, wrong method). Never a traceback."""

    @web.middleware
    async def errors(request: web.Request, handler):
        legacy = getattr(getattr(request.match_info, "handler", None), "tunewire_legacy", False)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            metadata = {"limit_bytes": str(request.client_max_size)} if exc.status == 413 else None
            response = error_response(
                service_error_from_http(exc.status, _http_message(request, exc), metadata),
                legacy=legacy,
            )
            if exc.status == 405:
                # As grpc-gateway: code UNIMPLEMENTED, but HTTP keeps its own 405 and Allow.
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response
        except ServiceError as exc:
            return error_response(exc, legacy=legacy)
        except StatusError as exc:
            return status_response(exc.status, legacy=legacy, http_status=exc.http_status)
        except grpc.aio.AioRpcError as err:
            return status_response(status_of(err), legacy=legacy)
        except (asyncio.CancelledError, ConnectionResetError):
            raise  # the client left; there is nobody to answer
        except Exception as exc:
            refusal = unreadable_body(exc)
            if refusal is not None:
                return error_response(refusal, legacy=legacy)
            log.exception("unexpected error in %s %s", request.method, request.path)
            return error_response(exc, legacy=legacy)

    return errors


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no route for {request.method} {request.path}"
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 413:
        return f"request body too large (limit {request.client_max_size} bytes)"
    return exc.text or exc.reason
