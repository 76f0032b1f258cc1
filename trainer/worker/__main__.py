"""The training worker: `python -m tunewire.trainer.worker --config worker_config.json
[--resume-from CHECKPOINT_DIR] --events-fd N` (built by `trainer/processes/launch.worker_argv`).

Started by the trainer daemon, one process per rank, with cwd = JOB_DIR and
stdout/stderr going to the job's log. Writes the protocol's events
(`tunewire.trainer.protocol.events`) to fd N (rank 0 only), reads commands
from stdin, exits 0 after a `done` event, 1 after an `error` event; any other
exit is a crash the daemon reports with the log tail.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from tunewire.reasons import Reason
from tunewire.trainer.protocol.config import ConfigError, load
from tunewire.trainer.protocol.events import Error, State, WorkerState
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.events import ControlReader, EventWriter


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tunewire.trainer.worker",
        description="Run one tunewire training job (one rank).",
    )
    parser.add_argument("--config", required=True, help="path of worker_config.json")
    parser.add_argument("--resume-from", default=None, help="checkpoint directory to continue from")
    parser.add_argument(
        "--events-fd",
        type=int,
        default=None,
        help="file descriptor to write the protocol's events to (rank 0)",
    )
    return parser.parse_args(argv)


def _failure(exc: BaseException) -> tuple[Reason, str] | None:
    """(reason, message) for failures a user can act on; None for a crash."""
    if isinstance(exc, ConfigError):
        return Reason.INVALID_CONFIG, str(exc)
    if isinstance(exc, WorkerError):
        return exc.reason, exc.message
    from tunewire.trainer.worker.data import DataError

    if isinstance(exc, DataError):
        return Reason.DATASET_INVALID, str(exc)
    from tunewire.trainer.worker import disk

    if disk.is_full(exc):  # a write of ours, or of mlx-lm's, or to the log itself
        here = os.getcwd()  # the job's directory
        return Reason.NO_SPACE, (
            f"no space left on device in {here} ({disk.free_bytes(Path(here)):,} bytes free): {exc}"
        )
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and "[ring]" in text:
        return Reason.DISTRIBUTED_PEER_LOST, f"another rank of this job stopped: {exc}"
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "allocate" in text)
    ):
        return Reason.OUT_OF_MEMORY, (
            f"out of memory: {exc or 'allocation failed'}; lower batch_size or "
            "max_seq_length, or enable gradient_checkpointing"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    events = EventWriter(args.events_fd)
    events.emit(State(state=WorkerState.STARTING, reason="loading the model and data"))
    control = ControlReader().start()
    try:
        config = load(args.config)
        # mlx and mlx-lm load here, after STARTING is out: the import takes seconds.
        from tunewire.trainer.worker.job import run_job

        run_job(config, events, control, resume_from=args.resume_from)
        return 0
    except Exception as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        reason, message = failure
        # The event first: with the disk full, writing the traceback to the log may fail.
        events.emit(Error(reason=reason, message=message))
        try:
            traceback.print_exc()
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # the log's disk is full: the events already said why
            pass
    # Skip interpreter teardown: the stdin reader thread may sit in a blocking read.
    os._exit(code)
