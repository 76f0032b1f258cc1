"""`tunewire watch JOB`: a job's progress, live, until it ends.

    tunewire watch JOB [--json] [--after N]

A progress bar (step / total, loss, validation loss, tokens/s, memory, ETA)
and a summary at the end. If the connection drops, it reconnects by itself
from the last event it showed, so nothing is shown twice or missed. `--json`
prints each event as one line of protobuf JSON instead, for scripts.
Exit status: 0 when the job succeeded, 1 when it failed or was cancelled.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tunewire.cli.common import EXIT_INTERRUPTED, CliError, add_connection_flags, run_client_command
from tunewire.cli.progress import ProgressView
from tunewire.cli.render import method_name, to_json
from tunewire.client import Client, TunewireError
from tunewire.v1 import training_job_pb2 as training_job_pb

PROG = "tunewire watch"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("job", metavar="JOB", help="job id")
    parser.add_argument("--json", action="store_true", help="one event per line as protobuf JSON")
    parser.add_argument(
        "--after", type=int, default=0, metavar="N", help="start after event N (default: all)"
    )
    add_connection_flags(parser)
    return parser


def run_watch(argv: list[str]) -> int:
    return run_client_command(
        PROG,
        build_parser(),
        argv,
        lambda client, args: watch_job(client, args.job, json_lines=args.json, after=args.after),
    )


def watch_job(
    client: Client,
    job_id: str,
    *,
    json_lines: bool = False,
    after: int = 0,
    out: TextIO | None = None,
) -> int:
    """Follows a job to its end; returns the exit status its final state means."""
    out = out or sys.stdout
    try:
        job = (
            follow_json(client, job_id, after, out)
            if json_lines
            else follow_bar(client, job_id, after, out)
        )
    except KeyboardInterrupt:
        # Ctrl-C stops this command, not the job: say so, and how to get back to it.
        print(file=sys.stderr)
        raise CliError(
            f"stopped watching; {job_id} keeps running on the server. Follow it again with "
            f"`tunewire watch {job_id}`, or stop it with `tunewire jobs cancel {job_id}`",
            EXIT_INTERRUPTED,
        ) from None
    return 0 if job.state == training_job_pb.JOB_STATE_SUCCEEDED else 1


def follow_json(
    client: Client, job_id: str, after: int, out: TextIO
) -> training_job_pb.TrainingJob:
    def reconnecting(error: TunewireError, last: int) -> None:
        print(
            f"{PROG}: connection lost ({error.code.name}: {error.message}); "
            f"reconnecting after event {last}",
            file=sys.stderr,
            flush=True,
        )

    client.get_job(job_id)  # an unknown job or an absent server is an error now, not a retry loop
    for event in client.watch(job_id, after, on_reconnect=reconnecting):
        out.write(to_json(event) + "\n")
        out.flush()
    return client.get_job(job_id)


def follow_bar(client: Client, job_id: str, after: int, out: TextIO) -> training_job_pb.TrainingJob:
    view = ProgressView(out)
    job = client.get_job(job_id)
    view.set_total(job.progress.total_steps)
    name = f" ({job.spec.display_name})" if job.spec.display_name not in ("", job.id) else ""
    view.line(
        f"{job.id}{name}: {method_name(job.spec.method)} fine-tune of {job.spec.model}"
        + (f", #{job.queue_position} in the queue" if job.queue_position else "")
    )

    def reconnecting(error: TunewireError, last: int) -> None:
        view.note(f"connection lost ({error.message}); reconnecting from event {last}…")

    try:
        for event in client.watch(job_id, after, on_reconnect=reconnecting):
            if not view.stats.total_steps and event.WhichOneof("payload") in (
                "training_metrics",
                "state_change",
            ):
                # The total is known once the worker has counted the data.
                view.set_total(client.get_job(job_id).progress.total_steps)
            view.event(event)
    finally:
        view.close()
    job = client.get_job(job_id)
    out.write(view.summary(job) + "\n")
    out.flush()
    return job
