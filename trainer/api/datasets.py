"""The gRPC servicer of `DatasetService`: uploads, validation, normalization.

Bad records are not RPC errors: they come back as a report with `valid: false`.
RPC errors are for bad requests, paths outside the data roots and limits.
Validation of whole files runs in a thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil

import grpc

from tunewire.errors import (
    FieldViolation,
    ServiceError,
    handles_errors,
    invalid_argument,
    not_found,
)
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets import ops as dataset_ops
from tunewire.trainer.identity import identify
from tunewire.trainer.paths import confine
from tunewire.trainer.store.datasets import DatasetStore, dataset_id_for
from tunewire.trainer.store.jobs import now_timestamp
from tunewire.v1 import dataset_pb2
from tunewire.v1 import dataset_service_pb2 as ds_pb
from tunewire.v1 import dataset_service_pb2_grpc as ds_grpc

MAX_ISSUES = 10_000
MAX_PREVIEW = 100
MAX_PAGE_SIZE = 1000
MAX_DISPLAY_NAME = 256


def _options(options: ds_pb.ValidationOptions, field: str = "options") -> dataset_ops.Options:
    v = []
    if not 0 <= options.max_issues <= MAX_ISSUES:
        v.append(
            FieldViolation(
                f"{field}.max_issues",
                f"must be between 0 and {MAX_ISSUES}, got {options.max_issues}",
            )
        )
    if not 0 <= options.preview_records <= MAX_PREVIEW:
        v.append(
            FieldViolation(
                f"{field}.preview_records",
                f"must be between 0 and {MAX_PREVIEW}, got {options.preview_records}",
            )
        )
    if options.max_tokens < 0:
        v.append(
            FieldViolation(f"{field}.max_tokens", f"must be at least 0, got {options.max_tokens}")
        )
    if options.max_tokens and not options.tokenizer:
        v.append(FieldViolation(f"{field}.max_tokens", "needs options.tokenizer to count tokens"))
    tokenizer = None
    if options.tokenizer:
        from tunewire.trainer.model_inspect import ModelUnusable, resolve_model_dir

        try:
            tokenizer = str(resolve_model_dir(options.tokenizer))
        except ModelUnusable as exc:
            v.append(FieldViolation(f"{field}.tokenizer", str(exc)))
    if v:
        raise invalid_argument(v)
    return dataset_ops.Options(
        max_issues=options.max_issues or 100,
        preview_records=options.preview_records or 3,
        tokenizer=tokenizer,
        max_tokens=options.max_tokens,
    )


class DatasetService(ds_grpc.DatasetServiceServicer):
    def __init__(self, config: TrainerConfig, store: DatasetStore):
        self._config = config
        self._store = store

    def _who(self, context):
        return identify(context, self._config.internal_token)

    def _visible(self, who, dataset_id: str) -> dataset_pb2.Dataset:
        if not dataset_id:
            raise invalid_argument([FieldViolation("dataset_id", "is required")])
        dataset = self._store.visible(who, dataset_id)
        if dataset is None:
            raise not_found("dataset", dataset_id)
        return dataset

    @handles_errors
    async def UploadDataset(self, request_iterator, context):
        who = self._who(context)
        incoming = self._config.datasets_dir / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        tmp = incoming / secrets.token_hex(8)
        digest = hashlib.sha256()
        size = 0
        metadata = ds_pb.UploadMetadata()
        seen_chunk = False
        try:
            # Chunks are at most 4 MiB: a write to the page cache is shorter than
            # a thread hop, so it stays on the loop.
            with open(tmp, "wb") as out:
                async for part in request_iterator:
                    kind = part.WhichOneof("part")
                    if kind == "metadata":
                        if seen_chunk:
                            raise invalid_argument(
                                [FieldViolation("metadata", "must come before the first chunk")]
                            )
                        metadata = part.metadata
                    elif kind == "chunk":
                        seen_chunk = True
                        size += len(part.chunk)
                        if size > self._config.max_upload_bytes:
                            raise ServiceError(
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"upload is larger than the limit of {self._config.max_upload_bytes:,} bytes",
                                reason="UPLOAD_TOO_LARGE",
                                metadata={"limit_bytes": str(self._config.max_upload_bytes)},
                            )
                        digest.update(part.chunk)
                        out.write(part.chunk)
            if len(metadata.display_name) > MAX_DISPLAY_NAME:
                raise invalid_argument(
                    [
                        FieldViolation(
                            "metadata.display_name", f"at most {MAX_DISPLAY_NAME} characters"
                        )
                    ]
                )
            options = _options(metadata.options, "metadata.options")
            dataset_id = dataset_id_for(digest.hexdigest())
            existing = self._store.get(dataset_id)
            if existing is not None:
                self._store.add_owner(dataset_id, who.name)
                existing.owner = who.name
                return ds_pb.UploadDatasetResponse(dataset=existing)
            dataset = await asyncio.to_thread(
                self._ingest,
                tmp,
                dataset_id,
                digest.hexdigest(),
                size,
                metadata.display_name or "upload",
                options,
                who.name,
            )
            self._store.insert(dataset, who.name)
            return ds_pb.UploadDatasetResponse(dataset=dataset)
        finally:
            tmp.unlink(missing_ok=True)

    def _ingest(self, tmp, dataset_id, sha, size, name, options, owner) -> dataset_pb2.Dataset:
        """Moves the upload into place, validates it and, when valid, normalizes it."""
        directory = self._config.datasets_dir / dataset_id
        staging = self._config.datasets_dir / ".incoming" / f"{dataset_id}.{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        try:
            raw = staging / "raw"
            shutil.copyfile(tmp, raw)
            result = dataset_ops.normalize(raw, staging / "normalized.jsonl", options)
            if directory.exists():  # a concurrent upload of the same bytes won
                shutil.rmtree(staging)
            else:
                os.replace(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dataset_pb2.Dataset(
            id=dataset_id,
            display_name=name,
            sha256=sha,
            size_bytes=size,
            format=result.report.format,
            report=result.report,
            normalized_path=str(directory / "normalized.jsonl") if result.report.valid else "",
            owner=owner,
            create_time=now_timestamp(),
            raw_path=str(directory / "raw"),
        )

    @handles_errors
    async def ValidateDataset(self, request, context):
        who = self._who(context)
        options = _options(request.options)
        source = request.WhichOneof("source")
        if source == "dataset_id":
            dataset = self._visible(who, request.dataset_id)
            report = await asyncio.to_thread(dataset_ops.validate_path, dataset.raw_path, options)
        elif source == "content":
            if len(request.content) > self._config.max_inline_bytes:
                raise invalid_argument(
                    [
                        FieldViolation(
                            "content",
                            f"inline content is limited to {self._config.max_inline_bytes:,} bytes, "
                            f"got {len(request.content):,}; use UploadDataset",
                        )
                    ]
                )
            report = await asyncio.to_thread(dataset_ops.validate_bytes, request.content, options)
        elif source == "path":
            path = confine(request.path, self._config.allowed_roots, "path")
            report = await asyncio.to_thread(dataset_ops.validate_path, path, options)
        else:
            raise invalid_argument(
                [FieldViolation("source", "give one of dataset_id, content or path")]
            )
        return ds_pb.ValidateDatasetResponse(report=report)

    @handles_errors
    async def NormalizeDataset(self, request, context):
        who = self._who(context)
        dataset = self._visible(who, request.dataset_id)
        if not 0.0 <= request.validation_fraction <= 0.5:
            raise invalid_argument(
                [
                    FieldViolation(
                        "validation_fraction",
                        f"must be between 0 and 0.5, got {request.validation_fraction:g}",
                    )
                ]
            )
        if not dataset.report.valid:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"dataset {dataset.id} is not valid ({dataset.report.error_count} errors); "
                "fix the file and upload it again",
                reason="DATASET_INVALID",
                resource_type="dataset",
                resource_name=dataset.id,
            )
        split_dir = (
            self._config.datasets_dir
            / dataset.id
            / "splits"
            / f"seed{request.seed}-frac{request.validation_fraction:g}"
        )
        split = await asyncio.to_thread(
            dataset_ops.split,
            dataset.raw_path,
            split_dir,
            request.validation_fraction,
            request.seed,
        )
        return ds_pb.NormalizeDatasetResponse(
            dataset=dataset,
            train_path=str(split.train_path),
            validation_path=str(split.validation_path) if split.validation_path else "",
            statistics=split.statistics,
        )

    @handles_errors
    async def GetDataset(self, request, context):
        return ds_pb.GetDatasetResponse(
            dataset=self._visible(self._who(context), request.dataset_id)
        )

    @handles_errors
    async def ListDatasets(self, request, context):
        who = self._who(context)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise invalid_argument(
                [
                    FieldViolation(
                        "page_size",
                        f"must be between 0 and {MAX_PAGE_SIZE}, got {request.page_size}",
                    )
                ]
            )
        token = request.page_token
        if token and (not token.isdigit() or len(token) > 12):
            raise invalid_argument(
                [FieldViolation("page_token", "is not a token returned by a previous page")]
            )
        offset = int(token or 0)
        limit = request.page_size or 50
        datasets, more = self._store.list(who, offset, limit)
        return ds_pb.ListDatasetsResponse(
            datasets=datasets, next_page_token=str(offset + limit) if more else ""
        )
