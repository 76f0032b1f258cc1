"""Downloading a job's adapter, checkpoint or model into a folder, resumably.

Files are fetched one by one (`DownloadArtifact` with `file`), each into
`NAME.part` and renamed once its SHA-256 matches the server's; an interrupted
download resumes from the bytes already in the `.part` file, and a file already
complete is not fetched again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire.client.errors import TunewireError, from_rpc_error
from tunewire.reasons import Reason
from tunewire.v1 import artifact_pb2 as artifact_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

READ_BYTES = 4 << 20
TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True)
class Downloaded:
    folder: Path
    files: list[artifact_pb.ArtifactFile]
    fetched_bytes: int  # bytes that came over the network (less when resumed)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_BYTES):
            digest.update(data)
    return digest.hexdigest()


class ArtifactDownloader:
    def __init__(self, stub, metadata, address: str):
        self._stub = stub
        self._metadata = metadata
        self._address = address

    def _stream(self, request: training_service_pb.DownloadArtifactRequest):
        try:
            yield from self._stub.DownloadArtifact(
                request, timeout=TIMEOUT_SECONDS, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._address) from None

    def listing(self, request: training_service_pb.DownloadArtifactRequest) -> artifact_pb.FileInfo:
        """The artifact's files (from the archive's FileInfo; one byte of it is sent)."""
        probe = training_service_pb.DownloadArtifactRequest()
        probe.CopyFrom(request)
        probe.ClearField("file")
        probe.range.length = 1
        stream = self._stream(probe)
        first = next(stream)
        stream.close()
        return first.info

    def fetch_file(
        self,
        request: training_service_pb.DownloadArtifactRequest,
        entry: artifact_pb.ArtifactFile,
        dest: Path,
    ) -> int:
        """`entry` into `dest` (via `dest.part`, resumed); the bytes fetched."""
        if (
            dest.is_file()
            and dest.stat().st_size == entry.size_bytes
            and _sha256(dest) == entry.sha256
        ):
            return 0
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.is_file() else 0
        if have > entry.size_bytes:
            part.unlink()
            have = 0
        fetched = 0
        if have < entry.size_bytes:
            one = training_service_pb.DownloadArtifactRequest()
            one.CopyFrom(request)
            one.file = entry.name
            one.range.offset = have
            with open(part, "ab") as out:
                for message in self._stream(one):
                    if message.HasField("info"):
                        if message.info.sha256 != entry.sha256:
                            raise TunewireError(
                                grpc.StatusCode.ABORTED,
                                f"{entry.name} changed on the server during the download; retry",
                                reason=Reason.ARTIFACT_CHANGED,
                            )
                        continue
                    out.write(message.chunk)
                    fetched += len(message.chunk)
        else:
            part.touch()
        if _sha256(part) != entry.sha256:
            part.unlink()
            raise TunewireError(
                grpc.StatusCode.DATA_LOSS,
                f"{entry.name}: the downloaded bytes do not match the server's SHA-256; "
                "the partial file was removed, download again",
                reason=Reason.CHECKSUM_MISMATCH,
            )
        part.replace(dest)
        return fetched

    def download(
        self,
        request: training_service_pb.DownloadArtifactRequest,
        folder: Path,
        progress: Callable[[artifact_pb.ArtifactFile], None] | None = None,
    ) -> Downloaded:
        listing = self.listing(request)
        folder.mkdir(parents=True, exist_ok=True)
        fetched = 0
        for entry in listing.files:
            dest = folder / entry.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            fetched += self.fetch_file(request, entry, dest)
            if progress:
                progress(entry)
        return Downloaded(folder, list(listing.files), fetched)
