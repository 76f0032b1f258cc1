"""Adapters uploaded with UploadAdapter, to start jobs from (`initial_adapter.adapter_id`).

    <adapters_dir>/<id>/adapters.safetensors   the weights, as they came
                       /adapter_config.json    the config, as it came
                       /owners/<hash>.json     one per uploader: name, display name, time
    <adapters_dir>/.incoming/                  uploads being received

The config and the safetensors header are checked on arrival, the folder is
built under `.incoming/` and renamed into place whole, so `<id>/` is complete
or absent. The id comes from the content: the same upload by a second tenant
adds an owner file (each written whole, by one upload, never edited). Anyone
but an owner (or an admin) gets NOT_FOUND.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf import timestamp_pb2

from tunewire.errors import FieldViolation, invalid_argument, not_found
from tunewire.identity import Principal
from tunewire.trainer.datasets import files
from tunewire.trainer.datasets.uploads import receive
from tunewire.trainer.jobs import initial_adapter
from tunewire.v1 import training_service_pb2 as training_service_pb

ID_PREFIX = "ad-"
ID_HEX = 24
OWNERS = "owners"
INCOMING = ".incoming"
DEFAULT_DISPLAY_NAME = "adapter"
MAX_CONFIG_BYTES = 1 << 20
CONFIG_FIELD = "metadata.adapter_config"
WEIGHTS_FIELD = "chunk"


def config_summary(text: str) -> tuple[str, int]:
    """(kind, rank) of an adapter_config.json text, or INVALID_ARGUMENT naming what is wrong."""

    def bad(message: str):
        return invalid_argument([FieldViolation(CONFIG_FIELD, message)])

    if not text:
        raise bad(f"is required: the text of {initial_adapter.CONFIG}")
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise bad(f"at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise bad(f"is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise bad("must be a JSON object, as mlx-lm writes adapter_config.json")
    kind = config.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora"):
        raise bad(f"fine_tune_type is {kind!r}; an adapter is 'lora' or 'dora'")
    parameters = config.get("lora_parameters")
    rank = parameters.get("rank") if isinstance(parameters, dict) else None
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise bad(f"lora_parameters.rank must be a positive integer, got {rank!r}")
    return kind, rank


def check_weights(path: Path, rank: int) -> None:
    """The safetensors header is readable, names adapter tensors, and fits the file and rank."""
    try:
        tensors = initial_adapter.read_header(path)
    except initial_adapter.AdapterUnusable as exc:
        raise invalid_argument([FieldViolation(WEIGHTS_FIELD, str(exc))]) from None
    problems = []
    if not tensors:
        problems.append("holds no tensors")
    for name, shape in tensors.items():
        if name.endswith(".lora_a") and (len(shape) != 2 or shape[1] != rank):
            problems.append(f"{name} has shape {shape}, not [*, {rank}] (the config's rank)")
            break
    if problems:
        raise invalid_argument(
            [FieldViolation(WEIGHTS_FIELD, f"{initial_adapter.WEIGHTS} {problems[0]}")]
        )


def adapter_id_for(weights_sha256: str, config_text: str) -> str:
    digest = hashlib.sha256(f"{weights_sha256}\n{config_text}".encode()).hexdigest()
    return ID_PREFIX + digest[:ID_HEX]


def _owner_file(folder: Path, owner: str) -> Path:
    return folder / OWNERS / (hashlib.sha256(owner.encode()).hexdigest()[:32] + ".json")


class UploadedAdapters:
    def __init__(self, root: Path, max_upload_bytes: int) -> None:
        self.root = root
        self._limit = max_upload_bytes
        self._incoming = root / INCOMING
        shutil.rmtree(self._incoming, ignore_errors=True)  # nothing is in flight at start
        self._incoming.mkdir(parents=True, exist_ok=True)

    async def upload(
        self, who: Principal, parts: AsyncIterator[training_service_pb.UploadAdapterRequest]
    ) -> training_service_pb.Adapter:
        staging = Path(tempfile.mkdtemp(dir=self._incoming, prefix="upload-"))
        try:
            weights = staging / initial_adapter.WEIGHTS
            received = await receive(
                parts, weights, self._limit, training_service_pb.AdapterUploadMetadata()
            )
            text = received.metadata.adapter_config
            kind, rank = config_summary(text)
            check_weights(weights, rank)
            (staging / initial_adapter.CONFIG).write_text(text, encoding="utf-8")
            adapter_id = adapter_id_for(received.sha256, text)
            folder = self.root / adapter_id
            if not (folder / initial_adapter.WEIGHTS).is_file():
                shutil.rmtree(folder, ignore_errors=True)  # a partial one removed by hand
                try:
                    os.rename(staging, folder)
                except OSError as exc:  # a concurrent upload of the same bytes won
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            owner = {
                "owner": who.name,
                "display_name": received.metadata.display_name or DEFAULT_DISPLAY_NAME,
                "create_time": time.time(),
                "sha256": received.sha256,
                "size_bytes": received.size,
                "kind": kind,
                "rank": rank,
            }
            target = _owner_file(folder, who.name)
            if not target.is_file():
                target.parent.mkdir(exist_ok=True)
                temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                temp.write_text(json.dumps(owner), encoding="utf-8")
                os.replace(temp, target)
            return self.get(who, adapter_id)
        except Exception as exc:
            if files.is_disk_full(exc):
                raise files.no_space(self.root, "this adapter") from exc
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def get(self, who: Principal, adapter_id: str) -> training_service_pb.Adapter:
        """The adapter as `who` uploaded it (an admin: as its first uploader did); else NOT_FOUND."""
        record = self._record(who, adapter_id)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(record["create_time"] * 1e9))
        return training_service_pb.Adapter(
            adapter_id=adapter_id,
            display_name=record["display_name"],
            size_bytes=record["size_bytes"],
            sha256=record["sha256"],
            create_time=stamp,
            kind=record["kind"],
            rank=record["rank"],
        )

    def folder(self, who: Principal, adapter_id: str) -> Path:
        """The adapter's folder if `who` may use it, else NOT_FOUND."""
        self._record(who, adapter_id)
        return self.root / adapter_id

    def _record(self, who: Principal, adapter_id: str) -> dict:
        folder = self.root / adapter_id
        if adapter_id.startswith(ID_PREFIX) and "/" not in adapter_id and adapter_id[3:].isalnum():
            mine = _owner_file(folder, who.name)
            candidates = (
                [mine] if not who.admin else [mine, *sorted((folder / OWNERS).glob("*.json"))]
            )
            for path in candidates:
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if who.can_see(record.get("owner", "")):
                    return record
        raise not_found("adapter", adapter_id)
