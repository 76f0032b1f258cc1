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

from tunewire.datasets.issues import Issue
from tunewire.datasets.report import ValidationReport
from tunewire.datasets.validate import ValidationOptions, validate_file

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
        default=100,
        metavar="N",
        help="errors and warnings listed (default: 100)",
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
    preview = args.preview if args.preview is not None else (3 if args.json else 0)
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
    if args.json:
        from google.protobuf.json_format import MessageToJson

        from tunewire.datasets.report_proto import report_to_proto

        print(MessageToJson(report_to_proto(report), always_print_fields_with_no_presence=True))
    else:
        print(render(report, args.file))
    return 0 if report.valid else 1


def render(report: ValidationReport, name: str) -> str:
    """The report for a person: verdict, size, then each issue as `line N field CODE: message`."""
    fmt = report.format.title if report.format else "unknown format"
    layout = {"json_array": "JSON array", "jsonl": "JSONL"}.get(
        report.layout.value if report.layout else "", ""
    )
    verdict = "valid" if report.valid else "INVALID"
    stats = report.statistics
    lines = [
        f"{name}: {verdict} ({fmt}{', ' + layout if layout else ''})",
        f"records: {report.total_samples:,} read, {report.valid_samples:,} valid; "
        f"{stats.turns:,} turns, {stats.characters:,} characters"
        + (f", {stats.tokens:,} tokens" if stats.tokens else ""),
    ]
    for title, issues, count in (
        ("errors", report.errors, report.error_count),
        ("warnings", report.warnings, report.warning_count),
    ):
        if count:
            shown = f" (first {len(issues)})" if len(issues) < count else ""
            lines.append(f"{title}: {count:,}{shown}")
            lines += [f"  {_issue_line(issue)}" for issue in issues]
    if report.issue_counts:
        counts = ", ".join(f"{code} {n:,}" for code, n in sorted(report.issue_counts.items()))
        lines.append(f"by code: {counts}")
    for item in report.sample_preview:
        lines.append(
            f"preview of line {item.conversation['line']}"
            + (f" ({item.tokens} tokens, {item.trained_tokens} trained):" if item.tokens else ":")
        )
        if item.rendered:
            lines += [f"  {text}" for text in item.rendered.splitlines()]
        else:
            for message in item.conversation["messages"]:
                mark = " (trained)" if message["trainable"] else ""
                lines.append(f"  {message['role']}{mark}: {_short(message['content'])}")
    return "\n".join(lines)


def _issue_line(issue: Issue) -> str:
    where = f"line {issue.line}" + (f":{issue.column}" if issue.column else "")
    field = f" {issue.field}" if issue.field else ""
    return f"{where}{field} {issue.code}: {issue.message}"


def _short(text: str, limit: int = 100) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(run_validate())
