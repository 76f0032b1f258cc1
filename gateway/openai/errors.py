"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every refusal of an `/openai/v1` route goes through `error_response`, whether it
is the gateway's own (a bad body, no key), the trainer's (a google.rpc.Status)
or aiohttp's (no route). Status codes follow OpenAI's: 400 for a bad request,
401 without a valid key, 404 for an unknown object, 429 for limits, 5xx only
for the server's own faults. tunewire's reason and field violations ride along
under `error.tunewire`; OpenAI's clients ignore keys they do not know.
"""

from __future__ import annotations

import json

import grpc
from aiohttp import web
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tunewire.errors import ServiceError, build_status, status_from_exception
from tunewire.gateway.http_errors import WWW_AUTHENTICATE, http_status, retry_after_seconds
from tunewire.reasons import Reason

# tunewire reasons whose OpenAI `code` is known to OpenAI's clients.
OPENAI_CODES = {
    Reason.INVALID_API_KEY: "invalid_api_key",
    Reason.API_KEY_REQUIRED: "invalid_api_key",
    Reason.RATE_LIMITED: "rate_limit_exceeded",
    Reason.TOO_MANY_STREAMS: "rate_limit_exceeded",
    Reason.MODEL_NOT_FOUND: "model_not_found",
}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class OpenAIError(Exception):
    """A refusal already worded for OpenAI's clients (status + the param it is about)."""

    def __init__(self, status: status_pb2.Status, param: str | None = None):
        super().__init__(status.message)
        self.status = status
        self.param = param


def details(status: status_pb2.Status) -> tuple[str, list[dict]]:
    """(ErrorInfo reason, BadRequest field violations) of a status."""
    reason, violations = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = reason or info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [
                {"field": v.field, "description": v.description} for v in bad.field_violations
            ]
    return reason, violations


def _openai_status(status: status_pb2.Status, reason: str) -> int:
    if reason in (Reason.UPLOAD_TOO_LARGE, Reason.REQUEST_TOO_LARGE):
        return 413  # a body over the limit is not a rate limit
    if status.code == code_pb2.FAILED_PRECONDITION:
        return 400
    return http_status(status.code)


def _error_type(http: int) -> str:
    if http == 429:
        return "requests"  # what OpenAI sends with rate_limit_exceeded
    if http >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(status: status_pb2.Status, param: str | None = None) -> tuple[int, dict, dict]:
    """(HTTP status, OpenAI error body, headers) for a status."""
    reason, violations = details(status)
    http = _openai_status(status, reason)
    if param is None and violations:
        param = violations[0]["field"] or None
    body = {
        "error": {
            "message": status.message,
            "type": _error_type(http),
            "param": param,
            "code": OPENAI_CODES.get(reason, reason.lower() or None),
            "tunewire": {
                "grpc_code": _CODE_NAMES.get(status.code, "UNKNOWN"),
                "reason": reason or None,
                "field_violations": violations,
            },
        }
    }
    headers = {}
    retry = retry_after_seconds(status)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    # OpenAI's SDKs retry 409 and 5xx by default; a refusal that will not change
    # on retry says so, so a client does not repeat it.
    retryable = http in (408, 429) or http >= 500
    headers["x-should-retry"] = "true" if retryable else "false"
    if http == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return http, body, headers


def error_response(status: status_pb2.Status, param: str | None = None) -> web.Response:
    http, body, headers = error_body(status, param)
    return web.Response(
        status=http, text=json.dumps(body), content_type="application/json", headers=headers
    )


def exception_response(exc: BaseException) -> web.Response:
    if isinstance(exc, OpenAIError):
        return error_response(exc.status, exc.param)
    if isinstance(exc, ServiceError):
        return error_response(exc.to_status())
    return error_response(status_from_exception(exc))


def bad_request(
    message: str, param: str | None, reason: Reason = Reason.INVALID_ARGUMENT
) -> OpenAIError:
    return OpenAIError(build_status(grpc.StatusCode.INVALID_ARGUMENT, message, reason), param)


def not_found_error(kind: str, name: str, param: str | None = None) -> OpenAIError:
    status = build_status(
        grpc.StatusCode.NOT_FOUND,
        f"No such {kind}: {name!r}",
        Reason.NOT_FOUND,
        resource_type=kind,
        resource_name=name,
    )
    return OpenAIError(status, param)
