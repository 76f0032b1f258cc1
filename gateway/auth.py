"""Who is calling: one gRPC server interceptor and one HTTP middleware, both over keys.py.

A key comes as `Authorization: Bearer KEY` or `X-API-Key: KEY`, in gRPC metadata
or HTTP headers, exactly once: a request with two different credentials is
refused as conflicting (no header silently wins), and a key in a URL's query
string is refused (URLs end up in logs; the access log redacts it too). Public
calls (health, reflection, server info) need no key, but a key that is sent
must be valid. The per-key request rate is checked here too, so a refused call
costs the trainer nothing. Keys never reach logs or errors.

A second way to authenticate (the console's session cookie) is a second kind
of `Credential`: find it in the request next to the headers' (`http_credentials`),
and register what verifies it with `Authenticator.accept(kind, verify, reason)`.
Everything else (one credential per request, the rate, public calls, the
error answers) stays as it is.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from tunewire.errors import FieldViolation, Reason, ServiceError, refusing_handler
from tunewire.gateway.keys import KeyRing
from tunewire.gateway.limits import RateLimiter
from tunewire.gateway.methods import Method
from tunewire.identity import (
    ANONYMOUS,
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    BEARER_SCHEME,
    Principal,
)

# The caller of the RPC being handled; set by the interceptor in the RPC's own task.
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tunewire_principal", default=None
)
# Where the HTTP middleware leaves the caller for the handlers (a typed key on
# aiohttp versions that have them).
PRINCIPAL = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "principal"
# Bucket of the rate limit shared by calls without a key.
ANONYMOUS_BUCKET = "(anonymous)"
# The kind of credential an API key is.
API_KEY = "API key"
# Query parameters that would carry a key (compared in lower case). Proto fields
# with these names cannot be set from a query string.
KEY_QUERY_PARAMETERS = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "x_api_key",
        "key",
        "token",
        "access_token",
        "auth",
        "authorization",
        "bearer",
    }
)


@dataclass(frozen=True)
class Credential:
    """One credential a request carries: its kind, the secret, and where it came
    from (a header name, for messages)."""

    kind: str
    secret: str = field(repr=False)
    source: str


def header_credentials(pairs: Iterable[tuple[str, str]]) -> list[Credential]:
    """Every API key in headers or metadata (names in any case): `X-API-Key: KEY`
    and `Authorization: Bearer KEY`. Other Authorization schemes are not ours
    (a proxy's Basic auth) and are left alone; empty values count as absent."""
    found = []
    for name, value in pairs:
        name = name.lower()
        if name == API_KEY_HEADER:
            secret, source = value.strip(), "X-API-Key"
        elif name == AUTHORIZATION_HEADER:
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() != BEARER_SCHEME:
                continue
            secret, source = rest.strip(), "Authorization"
        else:
            continue
        if secret:
            found.append(Credential(API_KEY, secret, source))
    return found


def one_credential(found: list[Credential]) -> Credential | None:
    """The request's credential; several different ones are a conflict, refused
    rather than guessed at (the same key sent twice is still one)."""
    if len({(c.kind, c.secret) for c in found}) > 1:
        sources = ", ".join(c.source for c in found)
        raise ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"the request carries {len(found)} different credentials ({sources}); send exactly "
            "one: 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            reason=Reason.CONFLICTING_CREDENTIALS,
        )
    return found[0] if found else None


def presented_key(pairs: Iterable[tuple[str, str]]) -> str:
    """The one API key in headers or metadata, '' when none (conflicts raise)."""
    credential = one_credential(header_credentials(pairs))
    return credential.secret if credential else ""


def refuse_keys_in_query(query) -> None:
    """A key in the query string is refused, never read: URLs are kept by proxies,
    browsers' histories and logs."""
    named = sorted({name for name in query if name.lower() in KEY_QUERY_PARAMETERS})
    if named:
        raise ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            f"an API key may not be sent in the URL (query parameter {named[0]!r}): URLs are "
            "logged; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            reason=Reason.API_KEY_IN_QUERY,
            violations=[FieldViolation(name, "credentials go in a header") for name in named],
        )


def http_credentials(request: web.Request) -> Credential | None:
    """The one credential of an HTTP request (query keys refused, conflicts refused)."""
    refuse_keys_in_query(request.query)
    return one_credential(header_credentials(request.headers.items()))


@dataclass(frozen=True)
class _Verifier:
    verify: Callable[[str], Principal | None]
    invalid: Reason


class Authenticator:
    """The decision both transports share: credential → principal, then the rate."""

    def __init__(self, keyring: KeyRing, rate: RateLimiter):
        self._rate = rate
        self._verifiers = {API_KEY: _Verifier(keyring.authenticate, Reason.INVALID_API_KEY)}

    def accept(self, kind: str, verify: Callable[[str], Principal | None], invalid: Reason):
        """Accepts a second kind of credential: `verify(secret)` names its principal,
        or None (then the call is refused with `invalid`)."""
        self._verifiers[kind] = _Verifier(verify, invalid)

    def authenticate(self, credential: Credential | str | None, public: bool) -> Principal:
        if isinstance(credential, str):  # an API key as text
            credential = Credential(API_KEY, credential, "key") if credential else None
        if credential is not None:
            verifier = self._verifiers[credential.kind]
            principal = verifier.verify(credential.secret)
            if principal is None:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"the {credential.kind} sent is not valid (unknown or revoked)",
                    reason=verifier.invalid,
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
            credential = one_credential(
                header_credentials(handler_call_details.invocation_metadata or ())
            )
            principal = self._auth.authenticate(credential, method.public)
        except ServiceError as exc:
            return _refusal(method, exc)
        current_principal.set(principal)
        return await continuation(handler_call_details)


def _refusal(method: Method, exc: ServiceError) -> grpc.RpcMethodHandler:
    return refusing_handler(method.client_streaming, method.server_streaming, exc.to_status())


# ---- HTTP ----------------------------------------------------------------------------


def http_auth_middleware(authenticator: Authenticator):
    """Authenticates every routed request; routes marked `tunewire_authenticated_elsewhere`
    (the OpenAI sub-application, which answers in its own error shape) do it themselves."""

    @web.middleware
    async def authenticate(request: web.Request, handler):
        route_handler = getattr(request.match_info, "handler", None)
        if getattr(route_handler, "tunewire_authenticated_elsewhere", False):
            return await handler(request)
        credential = http_credentials(request)
        if (
            getattr(request.match_info, "http_exception", None) is None
            and route_handler is not None
        ):
            public = getattr(route_handler, "tunewire_public", False)
            request[PRINCIPAL] = authenticator.authenticate(credential, public)
        return await handler(request)

    return authenticate
