"""Who is calling, spelled once for the gateway, the trainer and the clients.

The gateway authenticates API keys and tells the trainer who the caller is in
metadata (`x-tunewire-principal`, `x-tunewire-role`), together with the
internal credential; the trainer believes that metadata only with the
credential. This module owns those header names, the headers a key travels
in, the `Principal` both daemons pass around, and the names no key may take.
Which addresses only this host can reach (the loopback rule) is
`tunewire.addresses.is_local_only`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Gateway → trainer.
PRINCIPAL_HEADER = "x-tunewire-principal"
ROLE_HEADER = "x-tunewire-role"
INTERNAL_TOKEN_HEADER = "x-tunewire-internal-token"
IDENTITY_HEADERS = frozenset({PRINCIPAL_HEADER, ROLE_HEADER, INTERNAL_TOKEN_HEADER})

# Client → gateway: `Authorization: Bearer KEY` or `X-API-Key: KEY`.
AUTHORIZATION_HEADER = "authorization"
API_KEY_HEADER = "x-api-key"
BEARER_SCHEME = "bearer"
CREDENTIAL_HEADERS = frozenset({AUTHORIZATION_HEADER, API_KEY_HEADER})

# The single-user key from the environment (old clients know the second name),
# and the internal credential for deployments that set it themselves.
API_KEY_ENV_VARIABLES = ("TUNEWIRE_API_KEY", "MLX_TRAINING_API_KEY")
INTERNAL_TOKEN_ENV = "TUNEWIRE_INTERNAL_TOKEN"

ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and role (admins see every tenant's jobs)."""

    name: str
    role: str = MEMBER

    @property
    def admin(self) -> bool:
        return self.role == ADMIN

    def can_see(self, owner: str) -> bool:
        return self.admin or owner == self.name


# A call to the trainer with the internal credential and no principal: the
# operator of this trainer (the local CLI, tests, tools on the trainer port).
LOCAL = Principal("local", ADMIN)
# A gateway call without a key (health, server info).
ANONYMOUS = Principal("anonymous", MEMBER)
# No key may be named like them.
RESERVED_NAMES = (LOCAL.name, ANONYMOUS.name)


def identity_metadata(principal: Principal, credential: str) -> tuple[tuple[str, str], ...]:
    """What the gateway sends the trainer with every call."""
    return (
        (PRINCIPAL_HEADER, principal.name),
        (ROLE_HEADER, principal.role),
        (INTERNAL_TOKEN_HEADER, credential),
    )


def principal_from_metadata(metadata: Mapping[str, str]) -> Principal:
    """The caller named in (already trusted) metadata; LOCAL when none is named."""
    name = metadata.get(PRINCIPAL_HEADER, "")
    if not name:
        return LOCAL
    return Principal(name, ADMIN if metadata.get(ROLE_HEADER) == ADMIN else MEMBER)


def metadata_dict(pairs: Iterable[tuple[str, str]] | None) -> dict[str, str]:
    return {key: value for key, value in pairs or ()}
