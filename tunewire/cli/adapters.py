"""`tunewire adapters upload DIR`: send an adapter folder (adapters.safetensors and
adapter_config.json, as mlx-lm writes them) to start jobs from.

    tunewire adapters upload DIR [--name NAME] [--json]

A job starts from it with `initial_adapter: {adapter_id: ad-...}` in its spec.
"""

from __future__ import annotations

import argparse

from tunewire.cli.common import EXIT_USAGE, CliError, add_connection_flags, run_client_command
from tunewire.cli.render import to_json
from tunewire.client import Client

PROG = "tunewire adapters"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{upload}")
    upload = sub.add_parser("upload", help="upload an adapter folder")
    upload.add_argument("folder", metavar="DIR")
    upload.add_argument("--name", default=None, help="display name (default: the folder's name)")
    upload.add_argument("--json", action="store_true", help="protobuf JSON")
    add_connection_flags(upload)
    return parser


def run_adapters(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, adapters)


def adapters(client: Client, args: argparse.Namespace) -> int:
    try:
        adapter = client.upload_adapter(args.folder, display_name=args.name)
    except OSError as exc:
        raise CliError(f"cannot read {args.folder}: {exc.strerror or exc}", EXIT_USAGE) from None
    if args.json:
        print(to_json(adapter))
    else:
        print(
            f"{adapter.adapter_id}  ({adapter.display_name}, {adapter.kind} rank {adapter.rank},"
            f" {adapter.size_bytes:,} bytes)"
        )
    return 0
