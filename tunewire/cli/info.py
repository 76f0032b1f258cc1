"""`tunewire info`: what the server is and can do (needs no key)."""

from __future__ import annotations

import argparse

from tunewire.cli.common import add_connection_flags, run_client_command
from tunewire.cli.render import to_json
from tunewire.client import Client

PROG = "tunewire info"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="protobuf JSON")
    add_connection_flags(parser)
    return parser


def run_info(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, info)


def info(client: Client, args: argparse.Namespace) -> int:
    reply = client.server_info()
    if args.json:
        print(to_json(reply))
        return 0
    print(f"{reply.service} {reply.version} at {client.address}")
    print(
        f"  device {reply.device}, mlx {reply.mlx_version}, mlx-lm {reply.mlx_lm_version}, "
        f"{'fast BLAS' if reply.fast_blas else 'reference BLAS (slow on CPU; see README)'}"
    )
    print(
        f"  methods: {', '.join(f for f in reply.features if f in ('lora', 'qlora', 'dora', 'full'))}; "
        f"formats: {', '.join(reply.dataset_formats)}"
    )
    print(f"  jobs: {reply.active_jobs} active, {reply.queued_jobs} queued")
    return 0
