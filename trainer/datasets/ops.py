"""The trainer's calls into the datasets library, with reports as protos.

The library (`tunewire.datasets`) is pure Python with its own dataclasses; the
services speak protos. This is the one seam between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tunewire.datasets import api as ds_api
from tunewire.v1 import dataset_pb2


@dataclass(frozen=True)
class Options:
    max_issues: int = 100
    preview_records: int = 3
    tokenizer: str | None = None
    max_tokens: int = 0

    def library(self) -> ds_api.ValidationOptions:
        return ds_api.ValidationOptions(
            max_issues=self.max_issues,
            preview_records=self.preview_records,
            tokenizer=self.tokenizer,
            max_tokens=self.max_tokens,
        )


@dataclass
class Normalized:
    report: dataset_pb2.ValidationReport
    train_path: Path
    validation_path: Path | None
    statistics: dataset_pb2.DatasetStatistics


def validate_path(path: str | os.PathLike, options: Options) -> dataset_pb2.ValidationReport:
    return ds_api.report_to_proto(ds_api.validate_file(path, options.library()))


def validate_bytes(data: bytes, options: Options) -> dataset_pb2.ValidationReport:
    return ds_api.report_to_proto(ds_api.validate_bytes(data, options.library()))


def normalize_and_split(
    raw: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str,
    fraction: float,
    seed: int,
    options: Options = Options(),
) -> Normalized:
    """Validates `raw` and writes its valid records, split by `fraction`, under `out_dir`/`name`/."""
    result = ds_api.normalize_file(raw, Path(out_dir) / name, fraction, seed, options.library())
    return Normalized(
        ds_api.report_to_proto(result.report),
        result.train_path,
        result.validation_path,
        ds_api.statistics_to_proto(result.statistics),
    )


def normalize(raw: str | os.PathLike, out_path: Path, options: Options) -> Normalized:
    """Validates and normalizes an upload into one canonical JSONL file at `out_path`."""
    result = normalize_and_split(raw, out_path.parent / ".normalizing", "all", 0.0, 0, options)
    os.replace(result.train_path, out_path)
    os.rmdir(result.train_path.parent)
    os.rmdir(result.train_path.parent.parent)
    result.train_path = out_path
    return result


def split(raw: str | os.PathLike, out_dir: Path, fraction: float, seed: int) -> Normalized:
    """Training and validation files of a stored dataset (re-read from its raw upload)."""
    return normalize_and_split(raw, out_dir.parent, out_dir.name, fraction, seed)
