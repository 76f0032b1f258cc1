"""Who is calling the trainer.

The trainer does not authenticate end users; the gateway does, and passes the
caller's identity in metadata. The trainer believes that metadata only from
callers it can trust: by default it listens where only this host can reach it
(loopback or a unix socket); any other bind requires the shared internal token,
which the gateway then presents on every call.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

import grpc

from tunewire.errors import Reason, ServiceError

PRINCIPAL_HEADER = "x-tunewire-principal"
ROLE_HEADER = "x-tunewire-role"
INTERNAL_TOKEN_HEADER = "x-tunewire-internal-token"
# Calls without a principal come from this host directly (CLI, tests, buf curl
# on the trainer port) and act as the local administrator.
LOCAL_PRINCIPAL = "local"


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool

    def can_see(self, owner: str) -> bool:
        return self.admin or owner == self.name


def identify(context: grpc.aio.ServicerContext, internal_token: str) -> Principal:
    metadata = {k: v for k, v in (context.invocation_metadata() or ())}
    if internal_token:
        presented = metadata.get(INTERNAL_TOKEN_HEADER, "")
        if not hmac.compare_digest(presented.encode(), internal_token.encode()):
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this trainer accepts calls only from the gateway (internal token missing or wrong)",
                reason=Reason.INTERNAL_TOKEN_REQUIRED,
            )
    name = metadata.get(PRINCIPAL_HEADER, "")
    if not name:
        return Principal(LOCAL_PRINCIPAL, admin=True)
    return Principal(name, admin=metadata.get(ROLE_HEADER, "member") == "admin")


def is_local_only(address: str) -> bool:
    """True for binds only this host can reach: unix sockets and loopback addresses."""
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
