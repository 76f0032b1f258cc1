"""`tunewire logs JOB`: print a job's log (its worker's output), as its owner or an admin.

tunewire logs JOB [--tail N] [--rank R] [--follow]

Without --tail the whole log, page by page; --follow keeps printing what the
worker writes until the job ends (Ctrl-C stops following, not the job).
"""

from __future__ import annotations

import argparse
import time

from tunewire.cli.common import add_connection_flags, run_client_command
from tunewire.client import Client
from tunewire.v1 import training_job_pb2 as training_job_pb

FOLLOW_SECONDS = 1.0
TERMINAL = {
    training_job_pb.JOB_STATE_SUCCEEDED,
    training_job_pb.JOB_STATE_FAILED,
    training_job_pb.JOB_STATE_CANCELLED,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire logs",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("job", metavar="JOB")
    parser.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    parser.add_argument("--rank", type=int, default=0, help="another rank's log (default 0)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    add_connection_flags(parser)
    return parser


def run_logs(argv: list[str]) -> int:
    return run_client_command("tunewire logs", build_parser(), argv, logs)


def logs(client: Client, args: argparse.Namespace) -> int:
    page = client.log_page(args.job, rank=args.rank, lines=args.tail, tail=args.tail > 0)
    ending = False  # the job ended: one more read for what it wrote meanwhile, then stop
    while True:
        for line in page.lines:
            print(line, flush=True)
        if page.at_end:
            if not args.follow or ending:
                return 0
            if client.get_job(args.job).state in TERMINAL:
                ending = True
            else:
                time.sleep(FOLLOW_SECONDS)
        page = client.log_page(args.job, rank=args.rank, page_token=page.next_page_token)
