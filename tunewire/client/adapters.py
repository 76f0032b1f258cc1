"""Uploading an adapter folder (adapters.safetensors + adapter_config.json, as mlx-lm
writes them) with TrainingService/UploadAdapter; a job starts from it with
`initial_adapter: {adapter_id: ad-...}`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tunewire.v1 import training_service_pb2 as training_service_pb

WEIGHTS = "adapters.safetensors"
CONFIG = "adapter_config.json"


def upload_requests(
    folder: Path, display_name: str, chunk_bytes: int
) -> Iterator[training_service_pb.UploadAdapterRequest]:
    """The request stream; both files are opened before the first message, so a missing one
    fails (OSError) before any call."""
    config = (folder / CONFIG).read_text(encoding="utf-8")
    weights = (folder / WEIGHTS).open("rb")

    def requests() -> Iterator[training_service_pb.UploadAdapterRequest]:
        with weights:
            yield training_service_pb.UploadAdapterRequest(
                metadata=training_service_pb.AdapterUploadMetadata(
                    display_name=display_name, adapter_config=config
                )
            )
            while chunk := weights.read(chunk_bytes):
                yield training_service_pb.UploadAdapterRequest(chunk=chunk)

    return requests()


def upload_adapter(
    call: Callable, stub, folder: Path, display_name: str | None, chunk_bytes: int, timeout: float
) -> training_service_pb.Adapter:
    folder = folder.parent if folder.name == WEIGHTS else folder
    requests = upload_requests(folder, display_name or folder.resolve().name, chunk_bytes)
    return call(stub.UploadAdapter, requests, timeout=timeout).adapter
