"""The dataset store's files, and what a full disk means to a client.

    <datasets_dir>/<id>/raw                the uploaded bytes, as they came
                       /normalized.jsonl   its canonical records (valid datasets only)
                       /splits/seed<S>-frac<F>/{train,valid}.jsonl   NormalizeDataset's splits
    <datasets_dir>/.incoming/              uploads being received and datasets being built

A dataset is built in a directory under `.incoming/` and renamed into place
whole, so `<id>/` is either complete or absent. `.incoming/` is emptied when
the trainer starts: nothing is in flight then, and a crash left nothing else.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import grpc

from tunewire.errors import ServiceError
from tunewire.reasons import Reason
from tunewire.v1 import dataset_pb2 as dataset_pb

RAW = "raw"
CANONICAL = "normalized.jsonl"
INCOMING = ".incoming"
TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "valid.jsonl"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DatasetFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / INCOMING

    def clear_incoming(self) -> None:
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def directory(self, dataset_id: str) -> Path:
        return self.root / dataset_id

    def with_paths(self, dataset: dataset_pb.Dataset) -> dataset_pb.Dataset:
        """The dataset with the paths of its files here (the layout may have moved)."""
        directory = self.directory(dataset.id)
        dataset.raw_path = str(directory / RAW)
        dataset.normalized_path = str(directory / CANONICAL) if dataset.report.valid else ""
        return dataset

    def complete(self, dataset: dataset_pb.Dataset) -> bool:
        return self._complete(dataset.id, dataset.report.valid)

    def _complete(self, dataset_id: str, valid: bool) -> bool:
        directory = self.directory(dataset_id)
        return (directory / RAW).is_file() and (not valid or (directory / CANONICAL).is_file())

    def upload_file(self) -> Path:
        """A new file for the bytes of an upload."""
        fd, name = tempfile.mkstemp(dir=self.incoming, prefix="upload-")
        os.close(fd)
        return Path(name)

    def staging(self, dataset_id: str) -> Path:
        """A new directory to build a dataset in."""
        return Path(tempfile.mkdtemp(dir=self.incoming, prefix=f"{dataset_id}."))

    def commit(self, staging: Path, dataset_id: str, valid: bool) -> bool:
        """Moves a built dataset into place; False if a complete one was there already (a
        concurrent upload of the same bytes, or a build whose row a crash lost): it stays."""
        directory = self.directory(dataset_id)
        if directory.is_dir() and not self._complete(dataset_id, valid):
            shutil.rmtree(directory)  # files lost or removed by hand: this build replaces them
        try:
            os.rename(staging, directory)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not directory.is_dir():
                raise
            shutil.rmtree(staging)
            return False

    def split_directory(self, dataset_id: str, fraction: float, seed: int) -> Path:
        return self.directory(dataset_id) / "splits" / f"seed{seed}-frac{fraction:g}"


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as the same file as `source` (a hard link; a copy across file systems), atomically.

    Canonical files never change once written (a dataset is its content), so
    a job's unsplit data can share the stored file instead of copying it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{id(target)}.tmp")
    temp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temp)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise
            shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 22), b""))


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    # SQLite says so in words (SQLITE_FULL).
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def no_space(directory: Path, what: str) -> ServiceError:
    """RESOURCE_EXHAUSTED for a write that found the disk full, with the bytes left there."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = 0
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"no space left on the server's disk for {what} ({free:,} bytes free); "
        "nothing was kept: free some space, or ask the operator to, and try again",
        reason=Reason.NO_SPACE,
        metadata={"free_bytes": str(free)},
    )
