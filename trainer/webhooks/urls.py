"""Which URLs a webhook may point at.

The trainer makes the request, so an endpoint is a way to reach whatever the trainer can
reach. By default only hosts on public addresses are allowed: loopback, private,
link-local (cloud metadata services live there), multicast and unspecified addresses
are refused, at registration and again at every attempt (a name may resolve elsewhere
later). An operator whose receivers live on the local network starts the trainer with
--webhook-allow-private-networks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class UrlRefused(ValueError):
    """Why a URL may not be a webhook endpoint, in words for its owner."""


def check_form(url: str) -> tuple[str, int]:
    """The host and port of an acceptable http(s) URL; UrlRefused otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"must be an http or https URL, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise UrlRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not carry credentials; the signature authenticates the trainer")
    if parts.fragment:
        raise UrlRefused("must not have a fragment (#...)")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


async def check_reachable(url: str, allow_private: bool) -> None:
    """UrlRefused when `url` is malformed, or (unless `allow_private`) when its host does
    not resolve or resolves to an address outside the public internet."""
    host, port = check_form(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UrlRefused(f"host {host!r} does not resolve") from None
    if any(_forbidden(info[4][0]) for info in infos):
        raise UrlRefused(
            f"host {host!r} is on a loopback, private or link-local network; the trainer "
            "sends there only with --webhook-allow-private-networks"
        )
