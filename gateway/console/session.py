"""Console sessions: an API key exchanged once for a session cookie.

The cookie (`tunewire_session`: HttpOnly, SameSite=Strict, Secure over TLS,
with the session's lifetime) holds a random token; the gateway keeps, in its
memory, the token's hash → the key it stands for, the caller's name and role,
a CSRF token and the expiry. So the key never sits in page script, and
`EventSource` (which cannot send headers) is authenticated by the cookie.

A request that carries the cookie and no key header is handed on with the
session's key as its `Authorization`, so the usual authentication (revoked
keys, rate limits) applies unchanged. State-changing requests (anything but
GET, HEAD, OPTIONS) authenticated by the cookie must carry the session's
`X-CSRF-Token` and, when the browser sends one, an `Origin` of this host.

Sessions live in one gateway process: a restart, or another gateway behind
the same name, means signing in again (route a browser to one gateway).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import grpc
from aiohttp import web

from tunewire.errors import Reason, ServiceError
from tunewire.identity import API_KEY_HEADER, AUTHORIZATION_HEADER, Principal

COOKIE = "tunewire_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS = 10_000


@dataclass
class Session:
    key: str
    principal: Principal
    csrf_token: str
    expires_at: float

    def describe(self) -> dict:
        return {
            "name": self.principal.name,
            "role": self.principal.role,
            "csrf_token": self.csrf_token,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at)),
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, lifetime_seconds: float, clock=time.time):
        self.lifetime = lifetime_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, key: str, principal: Principal) -> tuple[str, Session]:
        self._forget_expired()
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes first
            del self._sessions[min(self._sessions, key=lambda d: self._sessions[d].expires_at)]
        token = secrets.token_urlsafe(32)
        session = Session(key, principal, secrets.token_urlsafe(24), self._clock() + self.lifetime)
        self._sessions[_digest(token)] = session
        return token, session

    def get(self, token: str) -> Session | None:
        digest = _digest(token)
        session = self._sessions.get(digest)
        if session is not None and session.expires_at <= self._clock():
            del self._sessions[digest]
            return None
        return session

    def drop(self, token: str) -> None:
        self._sessions.pop(_digest(token), None)

    def _forget_expired(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[digest]


def over_tls(request: web.Request) -> bool:
    # X-Forwarded-Proto can only make the cookie stricter, so it is believed.
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, token: str, seconds: float):
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(seconds),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=over_tls(request),
    )


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    set_cookie(response, request, "", 0)


def same_origin(request: web.Request) -> bool:
    """False only when the browser says the request comes from another origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def has_key_header(request: web.Request) -> bool:
    return any(h in request.headers for h in (AUTHORIZATION_HEADER, API_KEY_HEADER))


def session_middleware(store: SessionStore):
    @web.middleware
    async def sessions(request: web.Request, handler):
        token = request.cookies.get(COOKIE, "")
        route_handler = getattr(request.match_info, "handler", None)
        if not token or has_key_header(request) or getattr(route_handler, "console_sign_in", False):
            return await handler(request)  # a key header wins; no ambient credential used
        session = store.get(token)
        if session is None:
            if getattr(route_handler, "tunewire_public", False):
                return await handler(request)  # the console's pages, sign-in, public calls
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "the console session has expired or was signed out; sign in again with an API key",
                reason=Reason.SESSION_EXPIRED,
            )
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not (hmac.compare_digest(sent, session.csrf_token) and same_origin(request)):
                raise ServiceError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"a {request.method} with the console's session cookie needs the session's "
                    f"{CSRF_HEADER} header, from this origin",
                    reason=Reason.CSRF_CHECK_FAILED,
                )
        headers = request.headers.copy()
        headers[AUTHORIZATION_HEADER] = f"Bearer {session.key}"
        return await handler(request.clone(headers=headers))

    return sessions
