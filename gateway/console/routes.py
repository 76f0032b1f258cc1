"""The console's routes on the gateway's HTTP port: its page at `/`, its files
under `/console/`, and the session: sign in (an HTML form posts the key, so no
script ever holds it), who is signed in, sign out; and the YAML → spec
conversion the new-job page uses. Everything else the console does goes
through the public `/v1` routes with the session cookie.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import quote

import grpc
from aiohttp import web

import tunewire.gateway.console.session as sessions
from tunewire.errors import FieldViolation, Reason, ServiceError, invalid_argument
from tunewire.gateway import json_body
from tunewire.gateway.auth import Authenticator
from tunewire.gateway.console.yaml_spec import spec_from_yaml

STATIC = Path(__file__).resolve().parent / "static"
# What a console page may load and talk to: its own origin only, no inline
# script, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    # not no-referrer: with it browsers send `Origin: null` on form posts
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
MAX_KEY_LENGTH = 512
MAX_YAML_BYTES = 256 << 10


def public(method):
    async def handler(request: web.Request) -> web.StreamResponse:
        return await method(request)

    handler.tunewire_public = True  # the console's pages and sign-in need no key
    handler.__name__ = method.__name__
    return handler


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def static_files(root: Path = STATIC) -> dict[str, Path]:
    """URL path under /console/ → file, for every file the console ships
    (vendor/ is built by `make setup` from the npm registry)."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


class ConsoleRoutes:
    def __init__(self, authenticator: Authenticator, store: sessions.SessionStore):
        self._auth = authenticator
        self._store = store
        self._files = static_files()

    def add_to(self, app: web.Application) -> None:
        router = app.router
        router.add_get("/", public(self.index))
        router.add_get("/console/{path:.+}", public(self.asset))
        sign_in = public(self.sign_in)
        sign_in.console_sign_in = True  # checks its origin itself; no session needed
        router.add_post("/console/sign-in", sign_in)
        router.add_get("/console/api/session", public(self.whoami))
        router.add_delete("/console/api/session", self.sign_out)
        router.add_post("/console/api/spec", self.yaml_to_spec)

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if path not in self._files:
            # A fresh vendor build after start-up is picked up without a restart.
            self._files = static_files()
        if path not in self._files:
            raise web.HTTPNotFound()
        return self._file(path)

    def _file(self, path: str) -> web.Response:
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if path.endswith(".js"):
            kind = "text/javascript"
        response = web.Response(body=self._files[path].read_bytes(), content_type=kind)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def sign_in(self, request: web.Request) -> web.Response:
        """The sign-in form's POST: 303 to the console with the cookie set, or
        back to the form with the reason (never the key) in the URL."""
        if not sessions.same_origin(request):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                "sign in from the console's own page",
                reason=Reason.CSRF_CHECK_FAILED,
            )
        try:
            form = await request.post()
        except ValueError as exc:  # a multipart body without its boundary (was a 500)
            raise invalid_argument([FieldViolation("body", f"cannot be read: {exc}")]) from None
        key = str(form.get("api_key", "")).strip()
        try:
            if not key or len(key) > MAX_KEY_LENGTH:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "enter an API key",
                    reason=Reason.API_KEY_REQUIRED,
                )
            principal = self._auth.authenticate(key, public=False)
        except ServiceError as exc:
            return _see_other(f"/?signin={quote(str(exc.reason))}")
        token, _ = self._store.create(key, principal)
        response = _see_other("/#/jobs")
        sessions.set_cookie(response, request, token, self._store.lifetime)
        return response

    async def whoami(self, request: web.Request) -> web.Response:
        session = self._store.get(request.cookies.get(sessions.COOKIE, ""))
        if session is None:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "not signed in to the console",
                reason=Reason.SESSION_EXPIRED,
            )
        return web.json_response(session.describe(), headers={"Cache-Control": "no-store"})

    async def sign_out(self, request: web.Request) -> web.Response:
        self._store.drop(request.cookies.get(sessions.COOKIE, ""))
        response = web.Response(status=204)
        sessions.clear_cookie(response, request)
        return response

    async def yaml_to_spec(self, request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > MAX_YAML_BYTES:
            raise invalid_argument([FieldViolation("yaml", f"is over {MAX_YAML_BYTES} bytes")])
        data = json_body.loads(body or b"{}")
        if not isinstance(data, dict) or not isinstance(data.get("yaml", ""), str):
            raise invalid_argument([FieldViolation("yaml", "must be the YAML text")])
        dataset_id = data.get("dataset_id", "")
        if not isinstance(dataset_id, str):
            raise invalid_argument([FieldViolation("dataset_id", "must be a string")])
        return web.json_response(spec_from_yaml(data.get("yaml", ""), dataset_id))
