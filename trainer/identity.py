"""Who is calling the trainer, and the rule that only the gateway (or the operator) may.

The trainer does not authenticate end users; the gateway does, and passes the
caller's identity in metadata (tunewire.identity). Every call must carry the
internal credential, on every bind, loopback and unix sockets included: a
local process that cannot read the credential cannot act as anyone, and
identity metadata without it is refused, never believed. Only grpc.health.v1
and reflection answer without it (they show nothing of anyone's).
A call with the credential and no principal is the trainer's operator (the
local CLI, tools on the trainer port), an admin.
"""

from __future__ import annotations

import grpc

from tunewire.errors import Reason, ServiceError, refusing_handler
from tunewire.identity import (
    INTERNAL_TOKEN_HEADER,
    Principal,
    credential_matches,
    metadata_dict,
    principal_from_metadata,
)

# Services anyone who can connect may call.
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)
REFUSAL_MESSAGE = (
    "this trainer accepts calls only with its internal credential "
    f"({INTERNAL_TOKEN_HEADER}); call the gateway, which presents it, or present the "
    "token from the `internal-token` file of the trainer's state directory"
)


def credential_error() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAUTHENTICATED, REFUSAL_MESSAGE, reason=Reason.INTERNAL_TOKEN_REQUIRED
    )


def identify(context: grpc.aio.ServicerContext, internal_token: str) -> Principal:
    """The caller of an RPC. The interceptor below has already refused calls without
    the credential; checking again here keeps a servicer safe on a server built
    without it."""
    metadata = metadata_dict(context.invocation_metadata())
    if not credential_matches(metadata.get(INTERNAL_TOKEN_HEADER, ""), internal_token):
        raise credential_error()
    return principal_from_metadata(metadata)


class CredentialInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without the internal credential before its handler runs."""

    def __init__(self, credential: str):
        if not credential:
            raise ValueError("the trainer needs an internal credential")
        self._credential = credential
        self._refusal = credential_error().to_status()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        metadata = metadata_dict(handler_call_details.invocation_metadata)
        if credential_matches(metadata.get(INTERNAL_TOKEN_HEADER, ""), self._credential):
            return handler
        return refusing_handler(
            handler.request_streaming, handler.response_streaming, self._refusal
        )
