"""`tunewire validate FILE [--remote]`: locally by default (tunewire.cli.validate),
or through the server with `--remote`, which checks the file exactly as a job
would see it.

    tunewire validate FILE --remote [--upload] [--json] [--max-issues N] [--preview N]
                                    [--tokenizer MODEL] [--max-tokens N]

Small files (up to 4 MiB) are sent inline and not stored; larger ones, or any
file with `--upload`, are uploaded and kept as a dataset. Exit status as for
local validation: 0 valid, 1 invalid, 2 unreadable or wrong arguments.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tunewire.cli.common import EXIT_USAGE, CliError, add_connection_flags, run_client_command
from tunewire.cli.render import report_text, to_json
from tunewire.client import Client

PROG = "tunewire validate"
INLINE_LIMIT = 4 << 20  # the server's default inline limit


def run(argv: list[str]) -> int:
    if "--remote" not in argv:
        from tunewire.cli.validate import run_validate

        return run_validate(argv)
    return run_client_command(PROG, build_parser(), argv, validate_remote)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument(
        "--remote", action="store_true", required=True, help="validate through the server"
    )
    parser.add_argument("--upload", action="store_true", help="store the file as a dataset as well")
    parser.add_argument("--json", action="store_true", help="the report as protobuf JSON")
    parser.add_argument(
        "--max-issues", type=int, default=100, metavar="N", help="default %(default)s"
    )
    parser.add_argument(
        "--preview",
        type=int,
        default=None,
        metavar="N",
        help="normalized records to show (default: 3 with --json, otherwise 0)",
    )
    parser.add_argument(
        "--tokenizer",
        default="",
        metavar="MODEL",
        help="a model (on the server) whose tokenizer counts tokens",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=0, metavar="N", help="warn about records over N tokens"
    )
    add_connection_flags(parser)
    return parser


def validate_remote(client: Client, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    preview = args.preview if args.preview is not None else (3 if args.json else 0)
    if args.upload or size > INLINE_LIMIT:
        report = client.upload_dataset(path).report
    else:
        report = client.validate_dataset(
            content=path.read_bytes(),
            max_issues=args.max_issues,
            preview_records=preview,
            tokenizer=args.tokenizer,
            max_tokens=args.max_tokens,
        )
    if not preview:
        del report.sample_preview[:]  # 0 reads as "default" on the wire; the user asked for none
    print(to_json(report) if args.json else report_text(report, args.file))
    return 0 if report.valid else 1
