"""`tunewire datasets`: upload training data and look at what the server stores.

    tunewire datasets upload FILE [--name NAME] [--json]   send a file; it is validated on arrival
    tunewire datasets list [--json]                         your datasets, newest first
    tunewire datasets show DATASET [--json]                 one dataset with its validation report

An uploaded dataset is used in a job spec as `dataset: {dataset_id: ds-...}`.
"""

from __future__ import annotations

import argparse

from tunewire.cli.common import EXIT_USAGE, CliError, add_connection_flags, run_client_command
from tunewire.cli.render import dataset_details, dataset_table, report_text, to_json
from tunewire.client import Client

PROG = "tunewire datasets"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{upload,list,show}")
    upload = sub.add_parser("upload", help="upload a JSON or JSONL file")
    upload.add_argument("file", metavar="FILE")
    upload.add_argument("--name", default=None, help="display name (default: the file name)")
    listing = sub.add_parser("list", help="list datasets")
    show = sub.add_parser("show", help="one dataset and its validation report")
    show.add_argument("dataset", metavar="DATASET")
    for p in (upload, listing, show):
        p.add_argument("--json", action="store_true", help="protobuf JSON")
        add_connection_flags(p)
    return parser


def run_datasets(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, datasets)


def datasets(client: Client, args: argparse.Namespace) -> int:
    if args.action == "upload":
        try:
            dataset = client.upload_dataset(args.file, display_name=args.name)
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_USAGE) from None
        if args.json:
            print(to_json(dataset))
        else:
            print(f"{dataset.id}  ({dataset.display_name})")
            print(report_text(dataset.report, args.file))
        return 0 if dataset.report.valid else 1
    if args.action == "show":
        dataset = client.get_dataset(args.dataset)
        print(to_json(dataset) if args.json else dataset_details(dataset))
        return 0
    found = client.list_datasets()
    if args.json:
        for dataset in found:
            print(to_json(dataset))
    elif found:
        print(dataset_table(found))
    else:
        print("no datasets yet; upload one with `tunewire datasets upload FILE`")
    return 0
