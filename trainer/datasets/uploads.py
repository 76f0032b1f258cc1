"""Receiving an upload: the stream's chunks straight to a file, hashed on the way, within limits.

Memory stays at one chunk whatever the size: each is written and hashed as
it arrives and then dropped. The caller owns the file (and removes it).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.reasons import Reason
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb

MAX_DISPLAY_NAME = 256


@dataclass
class Received:
    path: Path
    sha256: str
    size: int
    metadata: dataset_service_pb.UploadMetadata


async def receive(
    parts: AsyncIterator[dataset_service_pb.UploadDatasetRequest],
    into: Path,
    limit: int,
    metadata=None,
) -> Received:
    """Writes the chunks of an upload stream (UploadDataset's, or any `part` oneof of
    `metadata` and `chunk`, UploadAdapter's) to `into`; `metadata` is the empty default."""
    digest = hashlib.sha256()
    size = 0
    metadata = dataset_service_pb.UploadMetadata() if metadata is None else metadata
    seen_chunk = False
    # A write of a chunk (at most a few MiB) to the page cache is shorter than a
    # thread hop, so it stays on the event loop.
    with open(into, "wb", buffering=0) as out:
        async for part in parts:
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
                if size > limit:
                    raise ServiceError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"upload is larger than the limit of {limit:,} bytes",
                        reason=Reason.UPLOAD_TOO_LARGE,
                        metadata={"limit_bytes": str(limit)},
                    )
                digest.update(part.chunk)
                _write_all(out, part.chunk)
    if len(metadata.display_name) > MAX_DISPLAY_NAME:
        raise invalid_argument(
            [
                FieldViolation(
                    "metadata.display_name",
                    f"at most {MAX_DISPLAY_NAME} characters, got {len(metadata.display_name):,}",
                )
            ]
        )
    return Received(into, digest.hexdigest(), size, metadata)


def _write_all(out, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]
