"""`tunewire validate`: check a dataset file locally and say what is wrong with it, line by line.

    tunewire validate FILE [--json] [--max-issues N] [--preview N]
                           [--tokenizer MODEL_DIR] [--max-tokens N]
    python -m tunewire.cli.validate FILE

Exit status: 0 when the file is valid (warnings allowed), 1 when it has
errors, 2 when it cannot be read or the arguments are wrong. Runs the
dataset library in this process; no server needed.
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf.json_format import MessageToJson

from tunewire.cli.render import report_text
from tunewire.datasets.api import ValidationOptions, report_to_proto, validate_file

_PROG = "tunewire validate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "file", metavar="FILE", help="JSON or JSONL dataset, optionally gzip-compressed"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (tunewire.v1.ValidationReport)",
    )
    parser.add_argument(
        "--max-issues",
        type=int,
        default=ValidationOptions.max_issues,
        metavar="N",
        help="errors and warnings listed (default: %(default)s)",
    )
    parser.add_argument(
        "--preview",
        type=int,
        default=None,
        metavar="N",
        help=f"normalized records to show (default: {ValidationOptions.preview_records} with --json, "
        "otherwise 0)",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="MODEL_DIR",
        help="model directory whose tokenizer counts tokens and renders the preview",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=0,
        metavar="N",
        help="warn about records over N tokens (needs --tokenizer; default: off)",
    )
    return parser


def run_validate(argv: list[str] | None = None) -> int:
    """Entry point of `tunewire validate ...`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the error (or --help)
        return int(exit_.code or 0)
    # JSON output shows the library's preview; text output none unless asked.
    default_preview = ValidationOptions.preview_records if args.json else 0
    preview = args.preview if args.preview is not None else default_preview
    try:
        options = ValidationOptions(
            max_issues=args.max_issues,
            preview_records=preview,
            tokenizer=args.tokenizer,
            max_tokens=args.max_tokens,
        )
        report = validate_file(args.file, options)
    except ValueError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{_PROG}: error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    # The same proto report the server sends, so local and remote output agree.
    message = report_to_proto(report)
    if args.json:
        print(
            MessageToJson(
                message,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True,
            )
        )
    else:
        print(report_text(message, args.file))
    return 0 if report.valid else 1


if __name__ == "__main__":
    sys.exit(run_validate())
