"""A write that finds the disk full: the half-written folder goes, and the job
fails with NO_SPACE naming the path and the bytes left, instead of a crash."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunewire.reasons import Reason
from tunewire.trainer.worker.errors import WorkerError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    # mlx's writers say it in words: "[write] Unable to write N bytes to file."
    return isinstance(exc, RuntimeError) and "unable to write" in str(exc).lower()


def free_bytes(path: Path) -> int:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


@contextmanager
def writing(tmp: Path, what: str, final: Path) -> Iterator[None]:
    """Around the writes into `tmp` (renamed to `final` afterwards): on any failure
    `tmp` is removed; a full disk becomes WorkerError(NO_SPACE)."""
    try:
        yield
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_full(exc):
            free = free_bytes(final.parent)
            raise WorkerError(
                Reason.NO_SPACE,
                f"no space left on device writing {what} to {final} ({free:,} bytes free); "
                "what was written before is intact: free some space and start the job again",
            ) from None
        raise
