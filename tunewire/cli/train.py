"""`tunewire train CONFIG.yaml`: start a fine-tuning job from a YAML file.

    tunewire train CONFIG.yaml [--watch | --json] [--name NAME] [--request-id ID] [-q] [--dry-run]

The file uses the job spec's keys or an `mlx_lm.lora` config's keys (see
tunewire.client.train_config). Local data (`data:`) is uploaded first and
validated on arrival; an invalid file stops here with its report.
"""

from __future__ import annotations

import argparse
import sys

from tunewire.cli.common import EXIT_USAGE, CliError, add_connection_flags, run_client_command
from tunewire.cli.render import report_text, state_name, to_json
from tunewire.cli.watch import watch_job
from tunewire.client import Client
from tunewire.client.train_config import ConfigError, load_config

PROG = "tunewire train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "config", metavar="CONFIG.yaml", help="job spec or mlx_lm.lora config (YAML)"
    )
    parser.add_argument(
        "--watch", action="store_true", help="follow the job with a progress bar until it ends"
    )
    parser.add_argument(
        "--json", action="store_true", help="with --watch: one event per line as JSON"
    )
    parser.add_argument(
        "--name", default=None, help="display name of the job (overrides display_name)"
    )
    parser.add_argument(
        "--request-id",
        default=None,
        help="makes the call idempotent: the same id twice creates one job",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the job spec as JSON; start nothing"
    )
    add_connection_flags(parser)
    return parser


def run_train(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, train)


def train(client: Client, args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.name:
        config.spec["display_name"] = args.name
    info = (lambda text: print(text, file=sys.stderr)) if args.quiet or args.json else print
    for note in config.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if args.dry_run:
        placeholder = "(uploaded at start)"
        spec = config.to_spec(
            placeholder if config.upload_train else "",
            placeholder if config.upload_validation else "",
        )
        print(to_json(spec))
        return 0

    dataset_id = upload(client, config.upload_train, info) if config.upload_train else ""
    validation_id = (
        upload(client, config.upload_validation, info) if config.upload_validation else ""
    )
    job = client.create_job(config.to_spec(dataset_id, validation_id), request_id=args.request_id)
    if args.quiet:
        print(job.id)
    else:
        queued = f", #{job.queue_position} in the queue" if job.queue_position else ""
        info(f"created {job.id} ({state_name(job.state)}{queued})")
    if args.watch or args.json:
        return watch_job(client, job.id, json_lines=args.json)
    if not args.quiet:
        info(f"follow it with: tunewire watch {job.id}")
    return 0


def upload(client: Client, path, info) -> str:
    """Uploads a local data file; returns its dataset id, or stops with the report."""
    try:
        dataset = client.upload_dataset(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    report = dataset.report
    if not report.valid:
        first = report.errors[0] if report.errors else None
        problem = (
            f" (line {first.line}{' ' + first.field if first.field else ''}: {first.message}"
            f"{f'; {report.error_count - 1} more' if report.error_count > 1 else ''})"
            if first
            else ""
        )
        raise CliError(
            f"{path} is not valid training data{problem}; `tunewire validate {path}` lists every problem",
            details=report_text(report, str(path)),
        )
    info(
        f"uploaded {path} as {dataset.id}: {report.valid_samples:,} valid records"
        + (f", {report.warning_count} warning(s)" if report.warning_count else "")
    )
    return dataset.id
