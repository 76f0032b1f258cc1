"""`tunewire export JOB --format FORMAT -o PATH`: a finished job's adapter for other tools.

    tunewire export JOB --format gguf-adapter -o adapter.gguf   llama.cpp --lora / Ollama ADAPTER
    tunewire export JOB --format gguf --type q8_0 -o model.gguf  the merged model, one GGUF file
    tunewire export JOB --format mlx -o DIR                      the fused model, a folder mlx-lm loads

`gguf-adapter` applies over the base's own GGUF file, untouched: the lossless
path. `gguf` writes the tensors the adapter changed as --type (f16 by default,
or q8_0, bf16, f32) and copies every other tensor of the base's GGUF byte for
byte. Both need a base made by `tunewire model import`. The server makes the
export on the first request and keeps it; run the command again to resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tunewire.cli.common import add_connection_flags, run_client_command
from tunewire.client import Client
from tunewire.client.export import FORMATS

PROG = "tunewire export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("job", help="the job's id")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS), help="what to write")
    parser.add_argument(
        "--type",
        default="",
        metavar="TYPE",
        help="tensor type of what the adapter changed: gguf f16 (default), q8_0, bf16, f32; "
        "gguf-adapter f32 (default), f16; mlx f16, bf16, f32 (default: as fused)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="PATH")
    add_connection_flags(parser)
    return parser


def run_export(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, export)


def export(client: Client, args: argparse.Namespace) -> int:
    result = client.export(args.job, args.format, args.output, tensor_type=args.type)
    info = result.info
    what = f"{len(info.files)} files" if info.files else f"{info.size_bytes:,} bytes"
    print(f"{args.format} export of {args.job}: {result.path} ({what}, sha256 {info.sha256[:16]}…)")
    return 0
