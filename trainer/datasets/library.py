"""The trainer's calls into the dataset library, with reports as protos.

A small plain file is handled in a thread of this process. Anything that can
cost memory with its size (a file over IN_PROCESS_MAX_BYTES, gzip, whose
size says nothing, or a tokenizer, which loads transformers) runs in a child
process (isolated.py), so the daemon's memory is the same after a 1 GB upload
as before it. A cancelled call kills its child.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunewire.datasets.api import ValidationOptions
from tunewire.trainer.datasets import isolated
from tunewire.v1 import dataset_pb2 as dataset_pb

IN_PROCESS_MAX_BYTES = 8 << 20
CHILD_PROCESSES = 2  # at a time; a large file's child runs range workers of its own
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Normalized:
    report: dataset_pb.ValidationReport
    statistics: dataset_pb.DatasetStatistics
    train_path: Path
    validation_path: Path | None


@dataclass
class Split:
    train_path: Path
    validation_path: Path | None
    train_records: int
    validation_records: int


class DatasetLibrary:
    def __init__(self, scratch: Path, python: str = sys.executable) -> None:
        self._scratch = scratch  # for inline content that goes to a child
        self._python = python
        self._children = asyncio.Semaphore(CHILD_PROCESSES)

    async def validate_file(
        self, path: str | os.PathLike, options: ValidationOptions
    ) -> dataset_pb.ValidationReport:
        request = {"op": "validate", "path": os.fspath(path), "options": _options(options)}
        answer = await self._run(path, options, request)
        return _report(answer)

    async def validate_bytes(
        self, data: bytes, options: ValidationOptions
    ) -> dataset_pb.ValidationReport:
        if _fits_here(len(data), data[:2], options):
            return _report(await asyncio.to_thread(isolated.validate_bytes, data, options))
        self._scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._scratch, prefix="inline-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return await self.validate_file(name, options)
        finally:
            os.unlink(name)

    async def normalize(
        self,
        path: str | os.PathLike,
        out_dir: Path,
        fraction: float,
        seed: int,
        options: ValidationOptions,
    ) -> Normalized:
        """Validates `path` and writes its valid records to out_dir/train.jsonl (+ valid.jsonl)."""
        request = {
            "op": "normalize",
            "path": os.fspath(path),
            "out_dir": os.fspath(out_dir),
            "fraction": fraction,
            "seed": seed,
            "options": _options(options),
        }
        answer = await self._run(path, options, request)
        return Normalized(
            _report(answer),
            dataset_pb.DatasetStatistics.FromString(base64.b64decode(answer["statistics"])),
            Path(answer["train_path"]),
            Path(answer["validation_path"]) if answer["validation_path"] else None,
        )

    async def split(
        self, canonical: str | os.PathLike, out_dir: Path, fraction: float, seed: int
    ) -> Split:
        """A canonical file's records split into out_dir/train.jsonl and valid.jsonl."""
        request = {
            "op": "split",
            "path": os.fspath(canonical),
            "out_dir": os.fspath(out_dir),
            "fraction": fraction,
            "seed": seed,
        }
        answer = await self._run(canonical, ValidationOptions(), request)
        return Split(
            Path(answer["train_path"]),
            Path(answer["validation_path"]) if answer["validation_path"] else None,
            answer["train_records"],
            answer["validation_records"],
        )

    async def _run(
        self, source: str | os.PathLike, options: ValidationOptions, request: dict
    ) -> dict:
        """Runs an operation of isolated.py on the file `source`, here or in a child;
        raises what it raised."""
        try:
            with open(source, "rb") as f:
                head = f.read(2)
                size = os.fstat(f.fileno()).st_size
        except OSError:
            head, size = b"", 0  # the operation reports it, wherever it runs
        if _fits_here(size, head, options):
            answer = await asyncio.to_thread(isolated.run, request)
        else:
            async with self._children:
                answer = await self._in_child(request)
        if "error" in answer:
            isolated.raise_error(answer["error"])
        return answer

    async def _in_child(self, request: dict) -> dict:
        proc = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "tunewire.trainer.datasets.isolated",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            out, _ = await proc.communicate(json.dumps(request).encode() + b"\n")
        finally:
            if proc.returncode is None:  # cancelled: the caller is gone
                proc.kill()
                await proc.wait()
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"the dataset process failed (exit status {proc.returncode})")
        return json.loads(out)


def _fits_here(size: int, head: bytes, options: ValidationOptions) -> bool:
    return size <= IN_PROCESS_MAX_BYTES and head != _GZIP_MAGIC and options.tokenizer is None


def _options(options: ValidationOptions) -> dict:
    return isolated.options_dict(options)


def _report(answer: dict) -> dataset_pb.ValidationReport:
    return dataset_pb.ValidationReport.FromString(base64.b64decode(answer["report"]))
