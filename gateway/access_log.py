"""The HTTP access log, with credentials taken out of the URLs it writes.

The line is aiohttp's default (`%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"`,
Apache's combined format), but the request line and the Referer are written with
the value of every query parameter that could carry a key (`api_key`, `token`,
...; see `auth.KEY_QUERY_PARAMETERS`), and of any value that looks like one of
our keys, replaced by `REDACTED`. Such requests are refused anyway; this is so
that the refusal does not leave the key in a log file.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger

from tunewire.gateway.auth import KEY_QUERY_PARAMETERS
from tunewire.gateway.keys import KEY_PREFIX

REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """`url` (a path with its query, or a whole URL) with key-bearing query values replaced."""
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sign, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and (
            unquote_plus(name).strip().lower() in KEY_QUERY_PARAMETERS
            or unquote_plus(value).strip().startswith(KEY_PREFIX)
        ):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}{hash_sign}{fragment}"


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access line, without keys given in URLs (see the module's docstring)."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request, response, time: float) -> None:
        try:
            started = datetime.now().astimezone() - timedelta(seconds=time)
            version = f"HTTP/{request.version.major}.{request.version.minor}"
            referer = redact_url(request.headers.get("Referer", "-"))
            agent = request.headers.get("User-Agent", "-")
            self.logger.info(
                '%s [%s] "%s %s %s" %s %s "%s" "%s"',
                request.remote or "-",
                started.strftime("%d/%b/%Y:%H:%M:%S %z"),
                request.method,
                redact_url(request.raw_path),
                version,
                response.status,
                response.body_length,
                referer,
                agent,
            )
        except Exception:  # a log line must never fail a request
            self.logger.exception("cannot write the access log line")
