"""The dataset operations behind `DatasetService` and job creation, with ownership.

An upload is validated and normalized once, on arrival: its canonical records
are stored next to its raw bytes, and every later use (a NormalizeDataset
split, a job's data) reads the canonical file. A caller sees only the
datasets they uploaded unless they are an admin; anyone else's is NOT_FOUND.
A write that finds the disk full leaves nothing behind and is
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire.datasets.api import ValidationOptions
from tunewire.errors import FieldViolation, ServiceError, invalid_argument, not_found
from tunewire.identity import Principal
from tunewire.reasons import Reason
from tunewire.trainer.api import paging
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets import files
from tunewire.trainer.datasets.files import DatasetFiles
from tunewire.trainer.datasets.library import DatasetLibrary
from tunewire.trainer.datasets.memory import release_freed_memory
from tunewire.trainer.datasets.options import validation_options
from tunewire.trainer.datasets.uploads import receive
from tunewire.trainer.store.datasets import DatasetStore, Ownership, dataset_id_for
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb

DEFAULT_DISPLAY_NAME = "upload"
MAX_VALIDATION_FRACTION = 0.5


@dataclass
class Split:
    """A dataset's records as training and validation files."""

    train_path: Path
    validation_path: Path | None
    train_records: int
    validation_records: int


class DatasetManager:
    def __init__(self, config: TrainerConfig, store: DatasetStore) -> None:
        self._config = config
        self._store = store
        self._files = DatasetFiles(config.datasets_dir)
        self._files.clear_incoming()
        self.library = DatasetLibrary(self._files.incoming)

    # ---- upload ---------------------------------------------------------------------

    async def upload(
        self, who: Principal, parts: AsyncIterator[dataset_service_pb.UploadDatasetRequest]
    ) -> dataset_pb.Dataset:
        upload = self._files.upload_file()
        try:
            received = await receive(parts, upload, self._config.max_upload_bytes)
            options = validation_options(
                received.metadata.options, self._config.allowed_model_roots, "metadata.options"
            )
            dataset_id = dataset_id_for(received.sha256)
            mine = Ownership(
                who.name, received.metadata.display_name or DEFAULT_DISPLAY_NAME, time.time()
            )
            stored = self._store.get(dataset_id)
            if stored is not None and self._files.complete(stored):
                self._store.add_owner(dataset_id, mine)
            else:
                dataset, built = await self._ingest(upload, dataset_id, received.sha256, options)
                dataset.size_bytes = received.size
                try:
                    self._store.insert(dataset, mine)
                except BaseException:
                    if built:  # no row, no files
                        shutil.rmtree(self._files.directory(dataset_id), ignore_errors=True)
                    raise
            return self._files.with_paths(self._store.visible(who, dataset_id))
        except Exception as exc:
            if files.is_disk_full(exc):
                raise files.no_space(self._files.root, "this upload") from exc
            raise
        finally:
            upload.unlink(missing_ok=True)
            release_freed_memory()  # the chunks' buffers, freed in several threads' arenas

    async def _ingest(
        self, upload: Path, dataset_id: str, sha256: str, options: ValidationOptions
    ) -> tuple[dataset_pb.Dataset, bool]:
        """Validates and normalizes an upload in a directory of its own, moved into place whole.
        Also returns whether this call's directory is the one in place (see files.commit)."""
        staging = self._files.staging(dataset_id)
        try:
            raw = staging / files.RAW
            upload.rename(raw)  # the same file system: no copy
            built = await self.library.normalize(raw, staging, 0.0, 0, options)
            if built.report.valid:
                built.train_path.rename(staging / files.CANONICAL)
            else:  # an invalid dataset is never trained on: keep only what it was
                built.train_path.unlink()
            placed = self._files.commit(staging, dataset_id, built.report.valid)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        dataset = dataset_pb.Dataset(
            id=dataset_id, sha256=sha256, format=built.report.format, report=built.report
        )
        return dataset, placed

    # ---- read -----------------------------------------------------------------------

    def visible(self, who: Principal, dataset_id: str, field: str = "dataset_id"):
        """The dataset if `who` may see it, else NOT_FOUND (whether it exists is not told)."""
        if not dataset_id:
            raise invalid_argument([FieldViolation(field, "is required")])
        dataset = self._store.visible(who, dataset_id)
        if dataset is None:
            raise not_found("dataset", dataset_id)
        return self._files.with_paths(dataset)

    def list(
        self, who: Principal, page_size: int, page_token: str
    ) -> tuple[list[dataset_pb.Dataset], str]:
        asked = paging.page(page_size, page_token, "datasets", who.name, who.admin)
        datasets, more = self._store.list(who, asked.offset, asked.limit)
        return [self._files.with_paths(d) for d in datasets], asked.next_token(more)

    # ---- validate -------------------------------------------------------------------

    async def validate_stored(
        self, who: Principal, dataset_id: str, options: ValidationOptions
    ) -> dataset_pb.ValidationReport:
        """Validates a stored dataset's raw bytes again (e.g. with a tokenizer this time)."""
        dataset = self.visible(who, dataset_id)
        return await self.library.validate_file(dataset.raw_path, options)

    async def validate_content(
        self, content: bytes, options: ValidationOptions
    ) -> dataset_pb.ValidationReport:
        limit = self._config.max_inline_bytes
        if len(content) > limit:
            raise invalid_argument(
                [
                    FieldViolation(
                        "content",
                        f"inline content is limited to {limit:,} bytes, "
                        f"got {len(content):,}; use UploadDataset",
                    )
                ]
            )
        return await self.library.validate_bytes(content, options)

    async def validate_path(
        self, path: Path, options: ValidationOptions
    ) -> dataset_pb.ValidationReport:
        """Validates a file the caller may read (confined to the data roots by the caller)."""
        return await self.library.validate_file(path, options)

    # ---- normalize and split ------------------------------------------------------------

    async def normalize(
        self, who: Principal, dataset_id: str, fraction: float, seed: int
    ) -> tuple[dataset_pb.Dataset, Split]:
        """A stored dataset's split (kept under the dataset: the same request reuses it)."""
        dataset = self.visible(who, dataset_id)
        if not 0.0 <= fraction <= MAX_VALIDATION_FRACTION:
            raise invalid_argument(
                [
                    FieldViolation(
                        "validation_fraction",
                        f"must be between 0 and {MAX_VALIDATION_FRACTION}, got {fraction:g}",
                    )
                ]
            )
        if not dataset.report.valid:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"dataset {dataset.id} is not valid ({dataset.report.error_count} errors); "
                "fix the file and upload it again",
                reason=Reason.DATASET_INVALID,
                resource_type="dataset",
                resource_name=dataset.id,
            )
        out_dir = self._files.split_directory(dataset.id, fraction, seed)
        reused = _existing_split(dataset, out_dir, fraction)
        if reused is not None:
            return dataset, reused
        return dataset, await self.split(dataset, out_dir, fraction, seed)

    async def split(
        self, dataset: dataset_pb.Dataset, out_dir: Path, fraction: float, seed: int
    ) -> Split:
        """A valid stored dataset's canonical records, split into out_dir/train.jsonl (and
        valid.jsonl): the same files as normalizing its raw bytes with that split."""
        canonical = Path(dataset.normalized_path)
        try:
            if fraction == 0:
                files.link_or_copy(canonical, out_dir / files.TRAIN_FILE)
                records = dataset.report.statistics.records
                return Split(out_dir / files.TRAIN_FILE, None, records, 0)
            done = await self.library.split(canonical, out_dir, fraction, seed)
        except Exception as exc:
            if files.is_disk_full(exc):
                for name in (files.TRAIN_FILE, files.VALIDATION_FILE):
                    (out_dir / name).unlink(missing_ok=True)
                raise files.no_space(out_dir, "this split") from exc
            raise
        return Split(
            done.train_path, done.validation_path, done.train_records, done.validation_records
        )


def _existing_split(dataset: dataset_pb.Dataset, out_dir: Path, fraction: float) -> Split | None:
    """A split written before (its files appear only when complete), or None."""
    train, held_out = out_dir / files.TRAIN_FILE, out_dir / files.VALIDATION_FILE
    if not train.is_file() or (fraction > 0 and not held_out.is_file()):
        return None
    validation = files.count_lines(held_out) if fraction > 0 else 0
    records = dataset.report.statistics.records
    return Split(train, held_out if fraction > 0 else None, records - validation, validation)
