"""`tunewire download JOB`: a job's adapter (or model) into a folder on this machine.

    tunewire download JOB [-o DIR]                  the adapter (FULL jobs: the model)
    tunewire download JOB --checkpoint N [-o DIR]   the adapter of checkpoint N
    tunewire download JOB --model [-o DIR]          the fine-tuned model (FULL jobs)

Default DIR: ./JOB-adapter, ./JOB-checkpoint-N or ./JOB-model. Each file is
checked against the server's SHA-256; run the command again to resume an
interrupted download. The adapter loads in mlx-lm as it is:
`mlx_lm.generate --model BASE --adapter-path DIR`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tunewire.cli.common import add_connection_flags, run_client_command
from tunewire.client import Client

PROG = "tunewire download"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("job", help="the job's id")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", type=int, metavar="N", help="a checkpoint's step")
    which.add_argument("--model", action="store_true", help="the fine-tuned model (FULL jobs)")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR", help="folder to write into")
    add_connection_flags(parser)
    return parser


def run_download(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, download)


def download(client: Client, args: argparse.Namespace) -> int:
    label = (
        f"checkpoint-{args.checkpoint}"
        if args.checkpoint is not None
        else "model"
        if args.model
        else "adapter"
    )
    folder = args.output or Path(f"{args.job}-{label}")
    result = client.download(
        args.job,
        folder,
        checkpoint=args.checkpoint,
        kind="model" if args.model else "",
        progress=lambda entry: print(
            f"  {entry.name}  {entry.size_bytes:,} bytes  sha256 {entry.sha256[:16]}…"
        ),
    )
    total = sum(f.size_bytes for f in result.files)
    resumed = "" if result.fetched_bytes == total else f" ({result.fetched_bytes:,} fetched now)"
    print(f"{len(result.files)} file(s), {total:,} bytes in {result.folder}{resumed}")
    return 0
