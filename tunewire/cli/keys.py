"""`tunewire keys`: API keys for the gateway.

    tunewire keys create NAME [--admin] [--keys-file F]   print a new key once, store its hash
    tunewire keys list [--keys-file F]                     names and roles
    tunewire keys revoke NAME [--keys-file F]              remove a key (the gateway notices within a second)

The keys file defaults to $TUNEWIRE_HOME/keys.yaml (./.tunewire/keys.yaml), the
file `tunewire-gateway` reads by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunewire.gateway.config import default_keys_file
from tunewire.gateway.keys import KeysFileError, add_key, read_keys_file, remove_key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire keys", description="API keys for tunewire's gateway."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser(
        "create", help="make a key; it is printed once and only its hash is stored"
    )
    create.add_argument("name", help="who the key is for (1-64 letters, digits, . _ @ -)")
    create.add_argument("--admin", action="store_true", help="the key sees and manages every job")
    listing = sub.add_parser("list", help="list key names and roles")
    revoke = sub.add_parser("revoke", help="remove a key")
    revoke.add_argument("name")
    for p in (create, listing, revoke):
        p.add_argument(
            "--keys-file", type=Path, default=None, help="default $TUNEWIRE_HOME/keys.yaml"
        )
    return parser


def run_keys(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    path = (args.keys_file or default_keys_file()).resolve()
    try:
        if args.action == "create":
            key = add_key(path, args.name, "admin" if args.admin else "member")
            print(key)
            print(
                f"(key {args.name!r}, role {'admin' if args.admin else 'member'}, stored as a hash in {path}; "
                "it is not shown again)",
                file=sys.stderr,
            )
        elif args.action == "list":
            for entry in read_keys_file(path):
                print(f"{entry.name}\t{entry.role}\t{entry.created}")
        else:
            remove_key(path, args.name)
            print(f"revoked {args.name!r} in {path}", file=sys.stderr)
    except KeysFileError as exc:
        print(f"tunewire keys: error: {exc}", file=sys.stderr)
        return 1
    return 0
