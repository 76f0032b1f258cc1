"""`DownloadArtifact`: which files a request names, and the stream that sends them.

An adapter is `adapters.safetensors` + `adapter_config.json` (of the job, or of
one of its checkpoints); a FULL job's model is every file of its model folder.
One file is sent as itself; no `file` sends all of them as one tar archive
whose members sit in a folder named after the artifact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire import enum_words
from tunewire.errors import FieldViolation, ServiceError, invalid_argument, not_found
from tunewire.reasons import Reason
from tunewire.spec_defaults import ADAPTER_METHODS
from tunewire.trainer.artifacts import checksums
from tunewire.trainer.artifacts.byte_source import ByteSource, file_source
from tunewire.trainer.artifacts.tar_archive import tar_source
from tunewire.v1 import artifact_pb2 as artifact_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class Artifact:
    label: str  # "adapter", "checkpoint-40", "model"
    files: list[tuple[str, Path]]  # (name, file), in archive order


def _no_artifacts(job: training_job_pb.TrainingJob, what: str) -> ServiceError:
    state = enum_words.display_word(training_job_pb.JobState, job.state).upper()
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"job {job.id} has no {what} to download (state {state})",
        Reason.NO_ARTIFACTS,
        resource_type="training job",
        resource_name=job.id,
    )


def _adapter(job: training_job_pb.TrainingJob, folder: str, label: str) -> Artifact:
    files = [(name, Path(folder, name)) for name in ADAPTER_FILES] if folder else []
    if not files or not all(path.is_file() for _, path in files):
        raise _no_artifacts(job, "adapter")
    return Artifact(label, files)


def _model(job: training_job_pb.TrainingJob) -> Artifact:
    root = Path(job.artifacts.model_path) if job.artifacts.model_path else None
    if root is None or not (root / "config.json").is_file():
        raise _no_artifacts(job, "model")
    files = sorted(
        (str(p.relative_to(root)), p)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return Artifact("model", files)


def locate(
    job: training_job_pb.TrainingJob,
    request: training_service_pb.DownloadArtifactRequest,
    checkpoints,
) -> Artifact:
    """The artifact `request` names; `checkpoints` are the job's (ListCheckpoints)."""
    kind = request.kind
    if kind == training_service_pb.ARTIFACT_KIND_UNSPECIFIED:
        adapter_method = job.spec.method in ADAPTER_METHODS
        kind = (
            training_service_pb.ARTIFACT_KIND_ADAPTER
            if adapter_method
            else training_service_pb.ARTIFACT_KIND_MODEL
        )
    if kind != training_service_pb.ARTIFACT_KIND_CHECKPOINT and request.checkpoint_step:
        raise invalid_argument(
            [FieldViolation("checkpoint_step", "is only for kind ARTIFACT_KIND_CHECKPOINT")]
        )
    if kind == training_service_pb.ARTIFACT_KIND_ADAPTER:
        return _adapter(job, job.artifacts.adapter_path, "adapter")
    if kind == training_service_pb.ARTIFACT_KIND_MODEL:
        return _model(job)
    if kind == training_service_pb.ARTIFACT_KIND_CHECKPOINT:
        step = request.checkpoint_step
        found = next((c for c in checkpoints if c.step == step), None)
        if found is None:
            raise not_found("checkpoint", f"{job.id} step {step}")
        return _adapter(job, found.path, f"checkpoint-{step}")
    raise invalid_argument([FieldViolation("kind", f"unknown artifact kind {kind}")])


async def _source(job: training_job_pb.TrainingJob, artifact: Artifact, file: str):
    """(ByteSource, its FileInfo without the range) for one file or the archive."""
    if file:
        names = {name: path for name, path in artifact.files}
        if file not in names:
            raise invalid_argument(
                [FieldViolation("file", f"must be one of {', '.join(names)}, got {file!r}")]
            )
        source = file_source(names[file], name=Path(file).name)
        sha = await checksums.file_sha256(names[file])
        return source, artifact_pb.FileInfo(
            name=source.name, size_bytes=source.size, sha256=sha, content_type=source.content_type
        )
    stem = f"{job.id}-{artifact.label}"
    source = tar_source(f"{stem}.tar", [(f"{stem}/{name}", path) for name, path in artifact.files])
    members = [
        artifact_pb.ArtifactFile(
            name=name, size_bytes=path.stat().st_size, sha256=await checksums.file_sha256(path)
        )
        for name, path in artifact.files
    ]
    sha = await checksums.source_sha256(source, [path for _, path in artifact.files])
    return source, artifact_pb.FileInfo(
        name=source.name,
        size_bytes=source.size,
        sha256=sha,
        content_type=source.content_type,
        files=members,
    )


def checked_range(byte_range: artifact_pb.ByteRange, size: int) -> tuple[int, int]:
    """(offset, length) of a requested range of a `size`-byte file."""
    offset, length = byte_range.offset, byte_range.length
    if offset < 0 or length < 0:
        raise invalid_argument(
            [
                FieldViolation(
                    "range", f"offset and length must be at least 0, got {offset}, {length}"
                )
            ]
        )
    if offset > size or (offset == size and size):
        raise ServiceError(
            grpc.StatusCode.OUT_OF_RANGE,
            f"range starts at byte {offset} but the file has {size} bytes",
            Reason.RANGE_NOT_SATISFIABLE,
            metadata={"size_bytes": str(size)},
        )
    return offset, min(length or size - offset, size - offset)


async def stream(
    job: training_job_pb.TrainingJob,
    request: training_service_pb.DownloadArtifactRequest,
    checkpoints,
) -> AsyncIterator[training_service_pb.DownloadArtifactResponse]:
    source, info = await _source(job, locate(job, request, checkpoints), request.file)
    async for message in stream_source(source, info, request.range):
        yield message


async def stream_source(
    source: ByteSource,
    info: artifact_pb.FileInfo,
    byte_range: artifact_pb.ByteRange,
    response=training_service_pb.DownloadArtifactResponse,
) -> AsyncIterator:
    """FileInfo, then the range's bytes, as `response` messages: the stream of any
    download RPC whose response is `oneof part {FileInfo info; bytes chunk}`
    (DownloadArtifactResponse's shape; the gateway serves them all over HTTP alike)."""
    offset, length = checked_range(byte_range, source.size)
    info.offset, info.length = offset, length
    yield response(info=info)
    async for data in source.read(offset, length):
        yield response(chunk=data)
