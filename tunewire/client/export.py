"""Receiving an `ExportArtifact` stream: one file (GGUF), or a tar unpacked into a folder (mlx).

The stream goes into `PATH.part`, resumed from its bytes by `range` when a
download was interrupted, and is renamed (or unpacked) only once its SHA-256
matches the server's.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire.client.errors import TunewireError, from_rpc_error
from tunewire.reasons import Reason
from tunewire.v1 import artifact_pb2 as artifact_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

READ_BYTES = 4 << 20
# An export is made on the first request (a merged model takes a while on a CPU).
TIMEOUT_SECONDS = 3600.0
FORMATS = {
    "gguf-adapter": training_service_pb.EXPORT_FORMAT_GGUF_ADAPTER,
    "gguf": training_service_pb.EXPORT_FORMAT_GGUF,
    "mlx": training_service_pb.EXPORT_FORMAT_MLX,
}


@dataclass(frozen=True)
class Exported:
    path: Path
    info: artifact_pb.FileInfo
    fetched_bytes: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_BYTES):
            digest.update(data)
    return digest.hexdigest()


def export(stub, metadata, address: str, job_id: str, fmt: str, out: Path, tensor_type: str = ""):
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    part = out.with_name(out.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = training_service_pb.ExportArtifactRequest(
        job_id=job_id, format=FORMATS[fmt], tensor_type=tensor_type
    )
    request.range.offset = have
    info, fetched, sink = None, 0, None
    try:
        for message in stub.ExportArtifact(request, timeout=TIMEOUT_SECONDS, metadata=metadata):
            if message.HasField("info"):
                info = message.info
                sink = open(part, "ab")  # only once the server has the export
                continue
            sink.write(message.chunk)
            fetched += len(message.chunk)
    except grpc.RpcError as err:
        if have and err.code() == grpc.StatusCode.OUT_OF_RANGE:
            part.unlink()  # the export changed since: start over
            return export(stub, metadata, address, job_id, fmt, out, tensor_type)
        raise from_rpc_error(err, address) from None
    finally:
        if sink is not None:
            sink.close()
    assert info is not None, "the stream sends its FileInfo first"
    if _sha256(part) != info.sha256:
        part.unlink()
        raise TunewireError(
            grpc.StatusCode.DATA_LOSS,
            f"{info.name}: the received bytes do not match the server's SHA-256; "
            "the partial file was removed, export again",
            reason=Reason.CHECKSUM_MISMATCH,
        )
    if fmt == "mlx":
        _unpack(part, out)
        part.unlink()
    else:
        part.replace(out)
    return Exported(out, info, fetched)


def _unpack(archive: Path, out: Path) -> None:
    """The archive's one folder becomes `out` (replacing an older export there)."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        (top,) = list(scratch.iterdir())
        if out.exists():
            shutil.rmtree(out)
        top.replace(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
