"""Who is calling: one gRPC server interceptor and one HTTP middleware, both over keys.py.

A key comes as `authorization: Bearer KEY` or `x-api-key: KEY`, in gRPC metadata
or HTTP headers. Public calls (health, reflection, server info) need none, but
a key that is sent must be valid. The per-key request rate is checked here too,
so a refused call costs the trainer nothing. Keys never reach logs or errors.
"""

from __future__ import annotations

import contextvars

import grpc
from aiohttp import web

from tunewire.errors import Reason, ServiceError, refusing_handler
from tunewire.gateway.keys import KeyRing
from tunewire.gateway.limits import RateLimiter
from tunewire.gateway.methods import Method
from tunewire.identity import ANONYMOUS, Principal

# The caller of the RPC being handled; set by the interceptor in the RPC's own task.
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tunewire_principal", default=None
)
# Where the HTTP middleware leaves the caller for the handlers (a typed key on
# aiohttp versions that have them).
PRINCIPAL = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "principal"
# Bucket of the rate limit shared by calls without a key.
ANONYMOUS_BUCKET = "(anonymous)"


def presented_key(pairs) -> str:
    """The key from `authorization: Bearer KEY` or `x-api-key: KEY` (header names
    in any case); empty when neither is there."""
    for name, value in pairs:
        name = name.lower()
        if name == "x-api-key":
            return value.strip()
        if name == "authorization":
            scheme, _, credential = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                return credential.strip()
    return ""


class Authenticator:
    """The decision both transports share: key → principal, then the rate."""

    def __init__(self, keyring: KeyRing, rate: RateLimiter):
        self._keyring = keyring
        self._rate = rate

    def authenticate(self, key: str, public: bool) -> Principal:
        if key:
            principal = self._keyring.authenticate(key)
            if principal is None:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the API key sent is not valid (unknown or revoked)",
                    reason=Reason.INVALID_API_KEY,
                )
        elif public:
            principal = ANONYMOUS
        else:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this call needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
                "(make one with `tunewire keys create NAME`)",
                reason=Reason.API_KEY_REQUIRED,
            )
        self._rate.check(ANONYMOUS_BUCKET if principal is ANONYMOUS else principal.name)
        return principal


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every forwarded RPC before its handler runs; health and
    reflection (not in `methods`) pass untouched."""

    def __init__(self, authenticator: Authenticator, methods: dict[str, Method]):
        self._auth = authenticator
        self._methods = methods

    async def intercept_service(self, continuation, handler_call_details):
        method = self._methods.get(handler_call_details.method)
        if method is None:
            return await continuation(handler_call_details)
        try:
            principal = self._auth.authenticate(
                presented_key(handler_call_details.invocation_metadata or ()), method.public
            )
        except ServiceError as exc:
            return _refusal(method, exc)
        current_principal.set(principal)
        return await continuation(handler_call_details)


def _refusal(method: Method, exc: ServiceError) -> grpc.RpcMethodHandler:
    return refusing_handler(method.client_streaming, method.server_streaming, exc.to_status())


# ---- HTTP ----------------------------------------------------------------------------


def http_auth_middleware(authenticator: Authenticator):
    @web.middleware
    async def authenticate(request: web.Request, handler):
        route_handler = getattr(request.match_info, "handler", None)
        if (
            getattr(request.match_info, "http_exception", None) is None
            and route_handler is not None
        ):
            public = getattr(route_handler, "tunewire_public", False)
            request[PRINCIPAL] = authenticator.authenticate(
                presented_key(request.headers.items()), public
            )
        return await handler(request)

    return authenticate
