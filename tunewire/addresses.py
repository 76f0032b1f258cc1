"""Addresses: the default ports, host:port and unix-socket parsing, and the loopback rule.

Every part reads and writes addresses through this module: the trainer and the
gateway when they bind, `tunewire server` when it checks for busy ports, the
client when it decides whether a development key or the internal credential
may be sent. An address is written the way gRPC takes it: `HOST:PORT`,
`[IPV6]:PORT`, or `unix:PATH` (also `unix://ABSOLUTE_PATH`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

# The one owner of each default port.
GATEWAY_GRPC_PORT = 50051
GATEWAY_HTTP_PORT = 8200
TRAINER_PORT = 50052

# Both daemons bind to loopback unless told otherwise: they speak plaintext.
DEFAULT_GATEWAY_GRPC = f"127.0.0.1:{GATEWAY_GRPC_PORT}"
DEFAULT_GATEWAY_HTTP = f"127.0.0.1:{GATEWAY_HTTP_PORT}"
DEFAULT_TRAINER = f"127.0.0.1:{TRAINER_PORT}"
# Where clients look for the gateway by default.
DEFAULT_CLIENT = f"localhost:{GATEWAY_GRPC_PORT}"
# The trainer's socket in its state directory for `--listen unix`.
TRAINER_SOCKET_NAME = "trainer.sock"
# The names of this host as a rank host or a bind host.
LOCAL_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class AddressError(ValueError):
    """An address that cannot be parsed; the message quotes it and says the forms."""


@dataclass(frozen=True)
class Address:
    """A TCP host and port, or a unix socket path (then `host` is "" and `port` 0)."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def bind_host(self) -> str:
        """The host to bind a socket to ("" means every interface)."""
        return self.host or "0.0.0.0"

    @property
    def family(self) -> socket.AddressFamily:
        if self.is_unix:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def local_only(self) -> bool:
        """True when only this host can reach it: a unix socket, `localhost`, or a
        loopback IP. Every interface ("" or 0.0.0.0) and any other name is not."""
        if self.is_unix:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_port(self, port: int) -> Address:
        return self if self.is_unix else Address(self.host, port)

    def __str__(self) -> str:
        if self.is_unix:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse(text: str, *, default_port: int | None = None) -> Address:
    """`HOST:PORT`, `[IPV6]:PORT`, `:PORT` (every interface), `unix:PATH` or
    `unix://ABSOLUTE_PATH`; with `default_port`, a bare `HOST` too."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise AddressError(f"address {text!r} has no socket path (unix:PATH)")
        return Address(path=path)
    host, port = _split(text, default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"address {text!r}: write an IPv6 host in brackets, [{host}]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"address {text!r}: the port must be a number from 0 to 65535")
    return Address(host, int(port))


def _split(text: str, default_port: int | None) -> tuple[str, str]:
    if text.startswith("[") and "]" in text:  # [v6] or [v6]:port
        end = text.index("]") + 1
        host, rest = text[:end], text[end:]
        if not rest and default_port is not None:
            return host, str(default_port)
        if not rest.startswith(":"):
            raise AddressError(f"address {text!r} is not [IPV6]:PORT")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if sep and ":" not in host:
        return host, port
    if default_port is not None and not sep and text:
        return text, str(default_port)
    raise AddressError(
        f"address {text!r} is not HOST:PORT, [IPV6]:PORT or unix:PATH"
        + ("" if default_port is None else " (or a bare HOST)")
    )


def is_local_only(text: str) -> bool:
    """The loopback rule, for an address as text: False for anything unparsable."""
    try:
        return parse(text).local_only
    except AddressError:
        return False


def host_of(text: str) -> str:
    """The host of `HOST[:PORT]` (a rank host may come without its port)."""
    try:
        return parse(text, default_port=0).host
    except AddressError:
        return text


def trainer_socket(home: Path) -> Address:
    """The trainer's unix socket in the state directory `home`."""
    return Address(path=str(home / TRAINER_SOCKET_NAME))


def channel_target(trainers: str) -> tuple[str, bool]:
    """gRPC's channel target for the gateway's `--trainer`, and whether calls are to be
    balanced over several trainers: one address as it is; several, comma-separated
    (IP literals, as gRPC's ipv4:/ipv6: schemes take them), or a `dns:///` name.
    AddressError names the bad part."""
    if trainers.startswith("dns:"):
        return trainers, True
    parts = [p.strip() for p in trainers.split(",") if p.strip()]
    if len(parts) <= 1:
        return trainers, False
    families = set()
    for part in parts:
        try:
            address = parse(part)
            host = ipaddress.ip_address(address.host)
        except (AddressError, ValueError):
            raise AddressError(
                f"trainer address {part!r}: a list of trainers takes IP:PORT entries "
                "(for host names, give one dns:///NAME:PORT that resolves to every trainer)"
            ) from None
        families.add(host.version)
    if len(families) > 1:
        raise AddressError(f"trainer addresses {trainers!r} mix IPv4 and IPv6; use one family")
    scheme = "ipv4" if families == {4} else "ipv6"
    return f"{scheme}:{','.join(parts)}", True
