"""The development key of a local `tunewire server`, and which credentials a client sends.

`tunewire server`, started on loopback with no keys configured, makes one
random admin key and keeps it in `$TUNEWIRE_HOME/dev-key` (mode 0600), so a
new user's first commands work without any set-up. Clients on the same
machine find it there; a key in the environment always wins.

A client pointed at the trainer itself (not the gateway) must present the
trainer's internal credential, as the gateway does: it comes from
$TUNEWIRE_INTERNAL_TOKEN, else from `$TUNEWIRE_HOME/internal-token`, which only
its owner can read and which is sent only to addresses on this host.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from tunewire.addresses import is_local_only
from tunewire.identity import API_KEY_ENV_VARIABLES, INTERNAL_TOKEN_ENV, read_credential

DEV_KEY_FILE = "dev-key"


def tunewire_home(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("TUNEWIRE_HOME") or ".tunewire").resolve()


def dev_key_path(home: Path | None = None) -> Path:
    return (home or tunewire_home()) / DEV_KEY_FILE


def read_dev_key(home: Path | None = None) -> str:
    try:
        return dev_key_path(home).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return ""


def ensure_dev_key(home: Path) -> str:
    """The home's development key, made (random, readable by its owner only) if missing."""
    existing = read_dev_key(home)
    if existing:
        return existing
    home.mkdir(parents=True, exist_ok=True)
    key = "tw_dev_" + secrets.token_urlsafe(24)
    path = dev_key_path(home)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    os.replace(tmp, path)
    return key


def remove_dev_key(home: Path) -> None:
    """Forget the key once real keys are configured, so clients stop sending it."""
    dev_key_path(home).unlink(missing_ok=True)


def resolve_api_key(
    explicit: str | None, address: str, environ: Mapping[str, str] = os.environ
) -> str:
    """The key to send: the explicit one ('' for none), else the environment's, else
    the local server's development key (only for a loopback address: it is never sent elsewhere)."""
    if explicit is not None:
        return explicit
    for name in API_KEY_ENV_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip()
    if is_local_only(address):
        return read_dev_key(tunewire_home(environ))
    return ""


def resolve_credential(
    explicit: str | None, address: str, environ: Mapping[str, str] = os.environ
) -> str:
    """The trainer credential to present: the explicit one ('' for none), else
    $TUNEWIRE_INTERNAL_TOKEN, else the local home's (only for an address on this
    host). A gateway ignores it: it never passes a client's metadata on."""
    if explicit is not None:
        return explicit
    if environ.get(INTERNAL_TOKEN_ENV, "").strip():
        return environ[INTERNAL_TOKEN_ENV].strip()
    if is_local_only(address):
        return read_credential(tunewire_home(environ))
    return ""
