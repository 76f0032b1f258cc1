"""Cross-origin requests from browsers: CORS for the origins the operator names
(`--cors-origin`, none by default, `*` for any).

A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here,
before authentication (browsers send no credentials with it): 204 with the
path's methods and the allowed headers for a configured origin, 403
ORIGIN_NOT_ALLOWED otherwise. Every other response to a configured origin
carries `Access-Control-Allow-Origin`, streams too (the headers are added when
a response is prepared). Credentials are not allowed cross-origin: a page on
another origin sends its own API key header, never the console's cookie.
"""

from __future__ import annotations

import re

import grpc
from aiohttp import web

from tunewire.errors import Reason, ServiceError

# Request headers a cross-origin page may send: the key headers, JSON bodies,
# the deadline and SSE's resume header.
ALLOWED_HEADERS = ("authorization", "content-type", "grpc-timeout", "last-event-id", "x-api-key")
# Response headers a cross-origin page may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = "Retry-After, WWW-Authenticate, Content-Disposition"
MAX_AGE_SECONDS = 600
ANY = "*"
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def is_origin(text: str) -> bool:
    """'*' or an origin as browsers send it: scheme://host[:port], no path."""
    return text == ANY or _ORIGIN.fullmatch(text.rstrip("/")) is not None


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...]):
        self._any = ANY in origins
        self._origins = frozenset(o.rstrip("/") for o in origins if o != ANY)

    def allows(self, origin: str) -> bool:
        return bool(origin) and (self._any or origin in self._origins)

    def add_headers_to(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._add_headers)

    def preflight_middleware(self):
        """Goes inside the error middleware (a refusal is a JSON error) and
        outside authentication (a preflight carries no key)."""

        @web.middleware
        async def preflight(request: web.Request, handler):
            if not _is_preflight(request):
                return await handler(request)
            origin = request.headers["Origin"]
            if not self.allows(origin):
                raise ServiceError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"cross-origin requests from {origin!r} are not allowed; "
                    "the gateway allows the origins given with --cors-origin",
                    reason=Reason.ORIGIN_NOT_ALLOWED,
                )
            asked = request.headers.get("Access-Control-Request-Headers", "")
            wanted = {h.strip().lower() for h in asked.split(",") if h.strip()}
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": ANY if self._any else origin,
                    "Access-Control-Allow-Methods": ", ".join(_methods_of(request)),
                    "Access-Control-Allow-Headers": ", ".join(
                        h for h in ALLOWED_HEADERS if h in wanted or not wanted
                    ),
                    "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
                    "Vary": "Origin",
                },
            )

        return preflight

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin", "")
        if _is_preflight(request) or not self.allows(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = ANY if self._any else origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if not self._any:
            vary = response.headers.get("Vary")
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def _methods_of(request: web.Request) -> list[str]:
    """The methods routed for the preflight's path: aiohttp resolved the OPTIONS
    request to "method not allowed", which lists them."""
    refusal = getattr(request.match_info, "http_exception", None)
    if isinstance(refusal, web.HTTPMethodNotAllowed):
        return sorted(set(refusal.allowed_methods) - {"HEAD"})
    return ["GET", "POST"]  # an unknown path: the request itself gets the 404
