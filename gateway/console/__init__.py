"""The web console: a page served at `/` on the gateway's HTTP port, signed in
with a session cookie (session.py), talking to the public `/v1` routes."""

from __future__ import annotations

from aiohttp import web

from tunewire.gateway.auth import Authenticator
from tunewire.gateway.console.routes import ConsoleRoutes
from tunewire.gateway.console.session import SessionStore, session_middleware


class Console:
    def __init__(self, authenticator: Authenticator, session_seconds: float):
        self.sessions = SessionStore(session_seconds)
        self._routes = ConsoleRoutes(authenticator, self.sessions)

    def middleware(self):
        """Goes before the auth middleware: it turns a session cookie into the key."""
        return session_middleware(self.sessions)

    def add_routes(self, app: web.Application) -> None:
        self._routes.add_to(app)
