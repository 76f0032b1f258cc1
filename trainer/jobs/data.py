"""Turns a job's dataset sources into the normalized files its worker reads.

Runs at CreateTrainingJob: the data is validated and normalized before the job
is queued, so a job that would fail on its data is refused with every problem
(line, field, reason) instead of failing later.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire.errors import FieldViolation, ServiceError
from tunewire.identity import Principal
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets import ops as dataset_ops
from tunewire.trainer.paths import confine
from tunewire.trainer.store.datasets import DatasetStore
from tunewire.v1 import dataset_pb2
from tunewire.v1 import training_job_pb2 as job_pb

ISSUES_PER_SOURCE = 10


@dataclass
class PreparedData:
    train_path: Path
    validation_path: Path | None
    details: job_pb.DatasetDetails


class JobDataPreparer:
    def __init__(self, config: TrainerConfig, datasets: DatasetStore):
        self._config = config
        self._datasets = datasets

    def _raw_path(
        self, who: Principal, source: job_pb.DatasetSource, field: str
    ) -> tuple[Path | None, str, list[FieldViolation]]:
        """The file behind a source, the dataset id (when stored) and any violation."""
        kind = source.WhichOneof("source")
        if kind == "dataset_id":
            dataset = self._datasets.visible(who, source.dataset_id)
            if dataset is None:
                return (
                    None,
                    "",
                    [FieldViolation(f"{field}.dataset_id", f"no dataset {source.dataset_id!r}")],
                )
            return Path(dataset.raw_path), dataset.id, []
        try:
            return confine(source.path, self._config.allowed_roots, f"{field}.path"), "", []
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.PERMISSION_DENIED:
                raise
            return None, "", exc.violations or [FieldViolation(f"{field}.path", exc.message)]

    async def prepare(
        self, who: Principal, spec: job_pb.TrainingJobSpec, out_dir: Path
    ) -> tuple[PreparedData | None, list[FieldViolation]]:
        violations: list[FieldViolation] = []
        train_raw, dataset_id, v = self._raw_path(who, spec.dataset, "spec.dataset")
        violations += v
        valid_raw = None
        if spec.HasField("validation_dataset") and spec.validation_dataset.WhichOneof("source"):
            valid_raw, _, v = self._raw_path(
                who, spec.validation_dataset, "spec.validation_dataset"
            )
            violations += v
        if train_raw is None:
            return None, violations

        out_dir.mkdir(parents=True, exist_ok=True)
        seed = spec.hyperparameters.seed
        train = await asyncio.to_thread(
            dataset_ops.normalize_and_split,
            train_raw,
            out_dir,
            "train",
            spec.validation_fraction if valid_raw is None else 0.0,
            seed,
        )
        violations += _data_violations(train.report, _field(spec.dataset, "spec.dataset"))
        validation_path = train.validation_path
        validation_records = train.statistics.validation_records
        if valid_raw is not None:
            valid = await asyncio.to_thread(
                dataset_ops.normalize_and_split, valid_raw, out_dir, "validation", 0.0, seed
            )
            violations += _data_violations(
                valid.report, _field(spec.validation_dataset, "spec.validation_dataset")
            )
            validation_path = valid.train_path
            validation_records = valid.statistics.train_records
            if train.report.valid and valid.report.valid and valid.statistics.train_records == 0:
                violations.append(FieldViolation("spec.validation_dataset", "has no valid records"))

        batch = spec.hyperparameters.batch_size
        records = train.statistics.train_records
        if train.report.valid and records < batch:
            violations.append(
                FieldViolation(
                    "spec.hyperparameters.batch_size",
                    f"the training data has {records} record(s), fewer than batch_size {batch}",
                )
            )
        if (
            train.report.valid
            and spec.validation_fraction > 0
            and valid_raw is None
            and validation_records == 0
        ):
            violations.append(
                FieldViolation(
                    "spec.validation_fraction",
                    f"{spec.validation_fraction:g} of {records} record(s) leaves no validation record; "
                    "raise it or add records",
                )
            )
        details = job_pb.DatasetDetails(
            dataset_id=dataset_id,
            format=dataset_pb2.DatasetFormat.Name(train.report.format)
            .removeprefix("DATASET_FORMAT_")
            .lower()
            if train.report.format
            else "",
            train_records=records,
            validation_records=validation_records,
        )
        return PreparedData(train.train_path, validation_path, details), violations


def _field(source: job_pb.DatasetSource, base: str) -> str:
    return f"{base}.{source.WhichOneof('source') or 'path'}"


def _data_violations(report: dataset_pb2.ValidationReport, field: str) -> list[FieldViolation]:
    if report.valid:
        return []
    out = []
    for issue in list(report.errors)[:ISSUES_PER_SOURCE]:
        where = f"line {issue.line}" + (f", {issue.field}" if issue.field else "")
        out.append(FieldViolation(field, f"{where}: {issue.message} ({issue.code})"))
    if report.error_count > len(out):
        out.append(
            FieldViolation(
                field,
                f"{report.error_count} errors in total; run `tunewire validate` on the file for all of them",
            )
        )
    if not out:
        out.append(FieldViolation(field, "the data is not valid"))
    return out
