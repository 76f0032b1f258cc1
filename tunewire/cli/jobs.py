"""`tunewire jobs` and `tunewire checkpoints`: see and manage jobs.

tunewire jobs [--state STATE ...] [--limit N] [--json]   your jobs, newest first
tunewire jobs show JOB [--json]                           one job in detail
tunewire jobs cancel JOB [--force]                        stop a job (it checkpoints first)
tunewire jobs pause JOB                                   checkpoint and stop, to resume later
tunewire jobs resume JOB                                  continue a paused job from its checkpoint
tunewire checkpoints JOB [--json]                         a job's checkpoints and their losses
"""

from __future__ import annotations

import argparse

from tunewire import enum_words
from tunewire.cli.common import add_connection_flags, run_client_command
from tunewire.cli.render import human_bytes, job_details, job_table, state_name, table, to_json
from tunewire.client import Client
from tunewire.v1 import training_job_pb2 as training_job_pb

STATES = enum_words.by_word(training_job_pb.JobState)


def build_jobs_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire jobs",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--state",
        action="append",
        choices=list(STATES),
        default=[],
        help="only jobs in this state (repeatable)",
    )
    parser.add_argument(
        "--limit", type=int, default=50, help="at most N jobs (default %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="one job per line as protobuf JSON")
    add_connection_flags(parser)
    sub = parser.add_subparsers(dest="action", metavar="{show,cancel,pause,resume}")
    show = sub.add_parser("show", help="one job in detail")
    show.add_argument("job", metavar="JOB")
    show.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="the job as protobuf JSON"
    )
    add_connection_flags(show, subcommand=True)
    cancel = sub.add_parser(
        "cancel", help="cancel a job: it finishes its step, checkpoints and stops"
    )
    cancel.add_argument("job", metavar="JOB")
    cancel.add_argument("--force", action="store_true", help="kill the worker at once")
    add_connection_flags(cancel, subcommand=True)
    pause = sub.add_parser(
        "pause", help="pause a job: it finishes its step, checkpoints and stops until resumed"
    )
    pause.add_argument("job", metavar="JOB")
    add_connection_flags(pause, subcommand=True)
    resume = sub.add_parser("resume", help="queue a paused job again, from its last checkpoint")
    resume.add_argument("job", metavar="JOB")
    add_connection_flags(resume, subcommand=True)
    return parser


def run_jobs(argv: list[str]) -> int:
    return run_client_command("tunewire jobs", build_jobs_parser(), argv, jobs)


def jobs(client: Client, args: argparse.Namespace) -> int:
    if args.action == "show":
        job = client.get_job(args.job)
        print(to_json(job) if args.json else job_details(job))
    elif args.action == "cancel":
        job = client.cancel_job(args.job, force=args.force)
        print(f"{job.id}: {state_name(job.state)}")
    elif args.action == "pause":
        job = client.pause_job(args.job)
        print(f"{job.id}: {state_name(job.state)}")
    elif args.action == "resume":
        job = client.resume_job(args.job)
        print(f"{job.id}: {state_name(job.state)}")
    else:
        found = client.list_jobs([STATES[s] for s in args.state], limit=args.limit)
        if args.json:
            for job in found:
                print(to_json(job))
        elif found:
            print(job_table(found))
        else:
            print("no jobs yet; start one with `tunewire train CONFIG.yaml`")
    return 0


def build_checkpoints_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire checkpoints", description="A job's checkpoints, oldest first."
    )
    parser.add_argument("job", metavar="JOB")
    parser.add_argument("--json", action="store_true", help="the list as protobuf JSON")
    add_connection_flags(parser)
    return parser


def run_checkpoints(argv: list[str]) -> int:
    return run_client_command("tunewire checkpoints", build_checkpoints_parser(), argv, checkpoints)


def checkpoints(client: Client, args: argparse.Namespace) -> int:
    reply = client.checkpoints(args.job)
    if args.json:
        print(to_json(reply))
        return 0
    if not reply.checkpoints:
        print(f"{args.job} has no checkpoints yet")
        return 0
    rows = [("STEP", "TRAIN LOSS", "VAL LOSS", "SIZE", "BEST", "PATH")]
    for c in reply.checkpoints:
        val = f"{c.validation_loss:.4f}" if c.HasField("validation_loss") else "-"
        rows.append(
            (
                str(c.step),
                f"{c.train_loss:.4f}",
                val,
                human_bytes(c.size_bytes),
                "*" if c.best else "",
                c.path,
            )
        )
    print(table(rows))
    return 0
