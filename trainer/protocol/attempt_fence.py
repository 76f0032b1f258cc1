"""Fencing a job's checkpoint files on a shared artifact root.

On a shared queue, the runner writes the attempt it starts into the job's
directory (`job_layout.ATTEMPT_FILE`) before any worker of that attempt runs.
A worker reads it once at its start and again just before it renames a
checkpoint into place: if another attempt has started since (its trainer lost
the lease while frozen, and another trainer took the job over), the checkpoint
is thrown away rather than written over the new attempt's files. mlx-free: the
daemon writes what the worker reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from tunewire.trainer.protocol import job_layout


class Fenced(Exception):
    """A newer attempt owns the job's files; this worker must not write them."""


def write(job_dir: str | os.PathLike[str], attempt: int) -> None:
    """Names `attempt` as the one that owns the job's files (atomically: a reader
    sees the old number or the new one)."""
    path = Path(job_dir) / job_layout.ATTEMPT_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{attempt}\n", encoding="utf-8")
    os.replace(tmp, path)


def read(job_dir: str | os.PathLike[str]) -> str | None:
    """The attempt that owns the job's files; None where no runner fences them
    (one trainer on its own database)."""
    try:
        return (Path(job_dir) / job_layout.ATTEMPT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def check(job_dir: str | os.PathLike[str], mine: str | None, what: str) -> None:
    """Raises Fenced if an attempt other than `mine` (read at the worker's start) owns the files."""
    if mine is None:
        return
    now = read(job_dir)
    if now != mine:
        raise Fenced(
            f"{what} not written: attempt {now} of the job has started since this worker's "
            f"attempt {mine} (its trainer lost the job's lease)"
        )
