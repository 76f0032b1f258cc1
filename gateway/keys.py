"""API keys: the keys file (hashes only), and who a presented key belongs to.

A key is shown once, when `tunewire keys create` makes it; the file keeps its
SHA-256 with a name and a role. Keys are 256 random bits, so a plain hash is
as good as a slow one here and keeps authentication in the microseconds.
A presented key is hashed and compared with every stored hash in constant time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tunewire.identity import ADMIN, RESERVED_NAMES, ROLES, Principal

log = logging.getLogger(__name__)

KEY_PREFIX = "tw_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# The single-user key from the environment is an admin of this name.
ENV_KEY_NAME = "admin"
FILE_HEADER = (
    "# tunewire API keys. Only SHA-256 hashes are stored; a key is shown once, when\n"
    "# `tunewire keys create NAME [--admin]` makes it. Roles: admin (sees every job)\n"
    "# or member (sees its own).\n"
)


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class KeyEntry:
    name: str
    role: str
    sha256: str
    created: str = ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise KeysFileError(
            f"key name {name!r} is not allowed: use 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise KeysFileError(f"key name {name!r} is reserved; choose another")


# ---- the file --------------------------------------------------------------------


def read_keys_file(path: Path) -> list[KeyEntry]:
    """Entries of a keys file; a missing file has none. Errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise KeysFileError(f"{path}: not valid YAML: {exc}") from None
    if root is None:
        return []
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or set(data) - {"keys"}:
        raise KeysFileError(f"{path}: expected a mapping with one key, 'keys' (a list of entries)")
    items = data.get("keys") or []
    if not isinstance(items, list):
        raise KeysFileError(f"{path}: 'keys' must be a list of entries")
    item_nodes = next(v for k, v in root.value if k.value == "keys").value
    entries, names, hashes = [], set(), set()
    for item, node in zip(items, item_nodes):
        where = f"{path}:{node.start_mark.line + 1}"
        entry = _entry(item, where)
        if entry.name in names:
            raise KeysFileError(f"{where}: name {entry.name!r} appears twice")
        if entry.sha256 in hashes:
            raise KeysFileError(
                f"{where}: the key of {entry.name!r} is already listed under another name"
            )
        names.add(entry.name)
        hashes.add(entry.sha256)
        entries.append(entry)
    return entries


def _entry(item: object, where: str) -> KeyEntry:
    if not isinstance(item, dict):
        raise KeysFileError(f"{where}: each entry must be a mapping with name, role and sha256")
    unknown = set(item) - {"name", "role", "sha256", "created"}
    if unknown:
        raise KeysFileError(
            f"{where}: unknown field {min(unknown)!r} (fields: name, role, sha256, created)"
        )
    for field in ("name", "role", "sha256"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise KeysFileError(f"{where}: field {field!r} is required and must be a string")
    try:
        check_name(item["name"])
    except KeysFileError as exc:
        raise KeysFileError(f"{where}: {exc}") from None
    if item["role"] not in ROLES:
        raise KeysFileError(
            f"{where}: field 'role' must be 'admin' or 'member', got {item['role']!r}"
        )
    if not re.fullmatch(r"[0-9a-f]{64}", item["sha256"]):
        raise KeysFileError(f"{where}: field 'sha256' must be 64 lowercase hex digits")
    return KeyEntry(item["name"], item["role"], item["sha256"], str(item.get("created", "")))


def write_keys_file(path: Path, entries: list[KeyEntry]) -> None:
    """Replaces the file atomically, readable by its owner only."""
    data = {"keys": [{k: v for k, v in vars(e).items() if v} for e in entries]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(FILE_HEADER)
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serializes writers of one keys file (two `keys create` at once lose nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def add_key(path: Path, name: str, role: str) -> str:
    """Creates a key, appends its hash to the file and returns the key (shown once)."""
    check_name(name)
    if role not in ROLES:
        raise KeysFileError(f"role must be 'admin' or 'member', got {role!r}")
    with locked(path):
        entries = read_keys_file(path)
        if any(e.name == name for e in entries):
            raise KeysFileError(
                f"{path}: a key named {name!r} exists already; choose another name or revoke it first"
            )
        key = new_key()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_keys_file(path, [*entries, KeyEntry(name, role, hash_key(key), created)])
    return key


def remove_key(path: Path, name: str) -> None:
    with locked(path):
        entries = read_keys_file(path)
        if not any(e.name == name for e in entries):
            raise KeysFileError(f"{path}: no key named {name!r}")
        write_keys_file(path, [e for e in entries if e.name != name])


# ---- authentication ----------------------------------------------------------------


class KeyRing:
    """The keys the gateway accepts: the file's (re-read when it changes, so a new
    key works without a restart) plus the environment's single admin key."""

    RELOAD_CHECK_SECONDS = 1.0

    def __init__(self, path: Path | None = None, env_keys: tuple[str, ...] = ()):
        self._path = path
        self._env = [(hash_key(k).encode(), Principal(ENV_KEY_NAME, ADMIN)) for k in env_keys if k]
        self._file: list[tuple[bytes, Principal]] = []
        self._stamp: tuple[int, int] | str | None = "not loaded"
        self._next_check = 0.0
        if path is not None:
            self._load(strict=True)

    def __len__(self) -> int:
        self._maybe_reload()
        return len(self._file) + len(self._env)

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None. Every stored hash is compared,
        each in constant time, so the time taken says nothing about the keys."""
        self._maybe_reload()
        if not presented:
            return None
        digest = hash_key(presented).encode()
        found = None
        for stored, principal in (*self._env, *self._file):
            if hmac.compare_digest(digest, stored) and found is None:
                found = principal
        return found

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.RELOAD_CHECK_SECONDS
        self._load(strict=False)

    def _load(self, strict: bool) -> None:
        try:
            st = self._path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        try:
            entries = read_keys_file(self._path)
        except KeysFileError as exc:
            if strict:
                raise
            # A half-edited file must not lock everyone out: keep the last good keys.
            log.error("keeping the previous keys: %s", exc)
            return
        self._file = [(e.sha256.encode(), Principal(e.name, e.role)) for e in entries]
        self._stamp = stamp
        if stamp is not None:
            log.info("loaded %d API key(s) from %s", len(self._file), self._path)
