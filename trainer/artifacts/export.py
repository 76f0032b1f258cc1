"""`ExportArtifact`: a job's adapter as a GGUF adapter, a merged GGUF or a fused mlx folder.

What a request asks is checked here (format, tensor type, the job's method and
base); the export itself runs once in a child process (`python -m
tunewire.models.export`: mlx, which the daemon never imports) into
`jobs/<id>/exports/`, and is then streamed like any download: one file as
itself, the mlx folder as a tar archive.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.models import export_formats
from tunewire.reasons import Reason
from tunewire.spec_defaults import ADAPTER_METHODS
from tunewire.trainer.artifacts import checksums
from tunewire.trainer.artifacts.byte_source import file_source
from tunewire.trainer.artifacts.download import stream_source
from tunewire.trainer.artifacts.tar_archive import tar_source
from tunewire.trainer.jobs import generation
from tunewire.trainer.processes import blas
from tunewire.v1 import artifact_pb2 as artifact_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

log = logging.getLogger(__name__)

EXPORT_MODULE = "tunewire.models.export"
EXPORTS_DIR = "exports"
SOURCE_GGUF = "source.gguf"  # what `tunewire model import` keeps of the GGUF it read
EXPORT_TIMEOUT_SECONDS = 1800
FORMAT_WORDS = {
    training_service_pb.EXPORT_FORMAT_GGUF_ADAPTER: "gguf-adapter",
    training_service_pb.EXPORT_FORMAT_GGUF: "gguf",
    training_service_pb.EXPORT_FORMAT_MLX: "mlx",
}
# One export at a time per target: a second request waits for the first's file.
_locks: dict[Path, asyncio.Lock] = {}


@dataclass(frozen=True)
class Plan:
    fmt: str
    kind: str
    model: Path
    adapter: Path
    target: Path


def _unsupported(job: training_job_pb.TrainingJob, message: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        message,
        Reason.UNSUPPORTED,
        resource_type="training job",
        resource_name=job.id,
    )


def plan(
    job: training_job_pb.TrainingJob, request: training_service_pb.ExportArtifactRequest
) -> Plan:
    fmt = FORMAT_WORDS.get(request.format)
    if fmt is None:
        raise invalid_argument(
            [
                FieldViolation(
                    "format",
                    "required: EXPORT_FORMAT_GGUF_ADAPTER, EXPORT_FORMAT_GGUF or EXPORT_FORMAT_MLX",
                )
            ]
        )
    try:
        kind = export_formats.check_request(fmt, request.tensor_type)
    except export_formats.ExportError as exc:
        raise invalid_argument([FieldViolation("tensor_type", str(exc))]) from None
    if job.spec.method not in ADAPTER_METHODS:
        raise _unsupported(
            job,
            f"job {job.id} is a FULL fine-tune: it has a whole model, not an adapter to export; "
            "download it with DownloadArtifact (kind ARTIFACT_KIND_MODEL)",
        )
    model, adapter = generation.model_for_job(job)  # NO_ARTIFACTS until it has an adapter
    if fmt in export_formats.NEEDS_GGUF_BASE and not Path(model, SOURCE_GGUF).is_file():
        raise _unsupported(
            job,
            f"job {job.id}'s base model was not imported from a GGUF file, so there is no GGUF "
            "to merge into or to apply an adapter over; export it as EXPORT_FORMAT_MLX, or train "
            "on a model made by `tunewire model import`",
        )
    if fmt in export_formats.LORA_ONLY and job.spec.method == training_job_pb.TRAINING_METHOD_DORA:
        raise _unsupported(
            job,
            f"job {job.id} is a DoRA fine-tune, and llama.cpp's GGUF LoRA adapters have no DoRA "
            "magnitudes; export it as EXPORT_FORMAT_GGUF (merged) or EXPORT_FORMAT_MLX",
        )
    adapter_dir = Path(adapter or "")
    target = adapter_dir.parent / EXPORTS_DIR / export_formats.file_name(job.id, fmt, kind)
    return Plan(fmt, kind, Path(model), adapter_dir, target)


def _is_current(p: Plan) -> bool:
    """Made, and not older than the adapter (a resumed job writes a new one)."""
    marker = p.target / "config.json" if p.fmt == "mlx" else p.target
    adapter = p.adapter / "adapters.safetensors"
    return marker.is_file() and marker.stat().st_mtime >= adapter.stat().st_mtime


async def ensure(python: str, p: Plan) -> Path:
    """The export's file or folder, made by a child process unless it is already there."""
    lock = _locks.setdefault(p.target, asyncio.Lock())
    async with lock:
        if _is_current(p):
            return p.target
        p.target.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            python, "-m", EXPORT_MODULE, "--model", str(p.model), "--adapter", str(p.adapter),
            "--format", p.fmt, "--type", p.kind, "-o", str(p.target),
        ]  # fmt: skip
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=blas.worker_env(),
        )
        try:
            _, err = await asyncio.wait_for(child.communicate(), EXPORT_TIMEOUT_SECONDS)
        except BaseException:
            child.kill()
            await child.wait()
            raise
        if child.returncode != 0:
            log.error("export %s failed (%s): %s", p.target.name, child.returncode, err[-4000:])
            if p.fmt == "mlx":
                shutil.rmtree(p.target, ignore_errors=True)
            raise ServiceError(
                grpc.StatusCode.INTERNAL,
                f"the {p.fmt} export failed; the trainer's log has the details",
                Reason.INTERNAL,
            )
        return p.target


async def _source(path: Path, fmt: str):
    if fmt != "mlx":
        source = file_source(path, name=path.name)
        sha = await checksums.file_sha256(path)
        return source, artifact_pb.FileInfo(
            name=source.name, size_bytes=source.size, sha256=sha, content_type=source.content_type
        )
    files = sorted((str(f.relative_to(path)), f) for f in path.rglob("*") if f.is_file())
    source = tar_source(f"{path.name}.tar", [(f"{path.name}/{name}", f) for name, f in files])
    members = [
        artifact_pb.ArtifactFile(
            name=name, size_bytes=f.stat().st_size, sha256=await checksums.file_sha256(f)
        )
        for name, f in files
    ]
    sha = await checksums.source_sha256(source, [f for _, f in files])
    return source, artifact_pb.FileInfo(
        name=source.name,
        size_bytes=source.size,
        sha256=sha,
        content_type=source.content_type,
        files=members,
    )


async def stream(
    python: str,
    job: training_job_pb.TrainingJob,
    request: training_service_pb.ExportArtifactRequest,
) -> AsyncIterator[training_service_pb.ExportArtifactResponse]:
    p = plan(job, request)
    source, info = await _source(await ensure(python, p), p.fmt)
    async for message in stream_source(
        source, info, request.range, response=training_service_pb.ExportArtifactResponse
    ):
        yield message
