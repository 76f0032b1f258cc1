"""Fencing a job's files on a shared artifact root: checkpoints and the final adapter.

On a shared queue, the runner writes the attempt it starts into the job's
directory (`job_layout.ATTEMPT_FILE`) before any worker of that attempt runs.
A worker reads it once at its start and again just before it renames a
checkpoint (or its final adapter or model) into place: if another attempt has
started since (its trainer lost the lease while frozen, and another trainer
took the job over), what it wrote is thrown away rather than renamed over the
new attempt's files.

The check and the rename are one step for the runner: the worker holds a
shared flock on `job_layout.ATTEMPT_LOCK_FILE` from before the check until
after the rename (`landing`), and the runner takes it exclusively to write a new
attempt (`write`). So a worker frozen between its check and its rename holds
the new attempt off instead of landing a file into it; the runner waits a
bounded time (`FENCE_WAIT_SECONDS`) and otherwise leaves the job for later
(`FenceBusy`). On NFS, Linux sends flock to the server as a lock (not with
the `local_lock=flock` mount option), so hosts see each other's. mlx-free: the
daemon writes what the worker reads.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunewire.trainer.protocol import job_layout

FENCE_WAIT_SECONDS = 10.0


class Fenced(Exception):
    """A newer attempt owns the job's files; this worker must not write them."""


class FenceBusy(Exception):
    """A worker of an earlier attempt is between its check and its rename (frozen there?)."""


@contextmanager
def _locked(job_dir: str | os.PathLike[str], exclusive: bool, wait: float) -> Iterator[None]:
    fd = os.open(Path(job_dir) / job_layout.ATTEMPT_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FenceBusy(
                        f"{job_dir}: a worker of an earlier attempt still holds "
                        f"{job_layout.ATTEMPT_LOCK_FILE} after {wait:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def write(job_dir: str | os.PathLike[str], attempt: int, wait: float = FENCE_WAIT_SECONDS) -> None:
    """Names `attempt` as the one that owns the job's files (atomically: a reader
    sees the old number or the new one), once no worker is landing a file.
    Raises FenceBusy if one still is after `wait` seconds."""
    path = Path(job_dir) / job_layout.ATTEMPT_FILE
    with _locked(job_dir, exclusive=True, wait=wait):
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
            f"{what} refused: attempt {now} of the job has started since this worker's "
            f"attempt {mine} (its trainer lost the job's lease)"
        )


@contextmanager
def landing(job_dir: str | os.PathLike[str], mine: str | None, what: str) -> Iterator[None]:
    """Around a rename into the job's files: raises Fenced (before the body runs) if a
    newer attempt owns them, and holds a new attempt off until the body is done."""
    if mine is None:
        yield
        return
    # A worker never gives up here: the runner's exclusive hold is brief (one write).
    with _locked(job_dir, exclusive=False, wait=float("inf")):
        check(job_dir, mine, what)
        yield


def land_directory(
    job_dir: str | os.PathLike[str], mine: str | None, what: str, tmp: Path, final: Path, old: Path
) -> None:
    """Renames the finished directory `tmp` to `final` under the fence (`landing`); an existing
    `final` is moved to `old` first and removed after. Fenced: `tmp` is removed, then re-raised."""
    try:
        with landing(job_dir, mine, what):
            if final.exists():
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
    except Fenced:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
