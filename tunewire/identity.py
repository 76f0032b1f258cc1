"""Who is calling, spelled once for the gateway, the trainer and the clients.

The gateway authenticates API keys and tells the trainer who the caller is in
metadata (`x-tunewire-principal`, `x-tunewire-role`), together with the
internal credential; the trainer accepts no call without the credential, on
any bind. This module owns those header names, the headers a key travels in,
the `Principal` both daemons pass around, the names no key may take, and the
credential's file. Which addresses only this host can reach (the loopback
rule) is `tunewire.addresses.is_local_only`.

The credential: `TUNEWIRE_INTERNAL_TOKEN` when the operator sets one (a trainer
on another host), else 256 random bits the trainer writes at its first start to
`$TUNEWIRE_HOME/internal-token`, readable by its owner only. The gateway and
`tunewire` commands of the same user read it there; other users cannot.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

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


# ---- the internal credential -------------------------------------------------------

CREDENTIAL_FILE = "internal-token"


def credential_path(home: Path) -> Path:
    return home / CREDENTIAL_FILE


def read_credential(home: Path) -> str:
    """The home's credential, or '' when there is none (or it is not ours to read)."""
    return read_credential_file(credential_path(home))


def read_credential_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
        return ""


def ensure_credential(home: Path) -> str:
    """The home's credential, made (random, mode 0600) at the first start. A file
    that others can read is made private again: the credential is the trainer's
    whole trust."""
    path = credential_path(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # Written aside, then linked into place: a reader never sees it half-written,
        # and of two trainers starting at once, one credential wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s was readable by others; made it private (mode 0600)", path)
        path.chmod(0o600)
    credential = read_credential(home)
    if not credential:
        raise ValueError(f"{path} is empty; delete it and start again to make a new one")
    return credential


def credential_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison; an empty expected credential matches nothing."""
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())
