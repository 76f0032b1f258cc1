"""Turns a job's dataset sources into the normalized files its worker reads.

Runs at CreateTrainingJob, before the job is queued, so a job that would fail
on its data is refused with every problem (line, field, reason) instead of
failing later. A stored dataset was validated and normalized at upload: its
canonical file is split (or, unsplit, shared), never read from its raw bytes
again. A file given by path is validated and normalized here, once for the job.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import grpc

from tunewire import enum_words
from tunewire.datasets.api import ValidationOptions
from tunewire.errors import FieldViolation, ServiceError
from tunewire.identity import Principal
from tunewire.spec_defaults import uses_preference
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets import files
from tunewire.trainer.datasets.manager import DatasetManager
from tunewire.trainer.jobs import checks
from tunewire.trainer.paths import confine
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

ISSUES_PER_SOURCE = 10


@dataclass
class PreparedData:
    train_path: Path
    validation_path: Path | None
    details: training_job_pb.DatasetDetails


@dataclass
class _Source:
    """A resolved dataset source: a stored dataset, or a confined path."""

    field: str  # "spec.dataset.dataset_id" or "spec.dataset.path", for violations
    dataset: dataset_pb.Dataset | None = None
    path: Path | None = None


@dataclass
class _Data:
    report: dataset_pb.ValidationReport
    train_path: Path
    validation_path: Path | None
    train_records: int
    validation_records: int


class JobDataPreparer:
    def __init__(self, config: TrainerConfig, datasets: DatasetManager):
        self._config = config
        self._datasets = datasets

    def _resolve(
        self, who: Principal, source: training_job_pb.DatasetSource, field: str
    ) -> tuple[_Source | None, list[FieldViolation]]:
        kind = source.WhichOneof("source")
        if kind == "dataset_id":
            where = f"{field}.dataset_id"
            try:
                dataset = self._datasets.visible(who, source.dataset_id, where)
            except ServiceError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    return None, [FieldViolation(where, f"no dataset {source.dataset_id!r}")]
                if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                    return None, exc.violations
                raise
            return _Source(where, dataset=dataset), []
        where = f"{field}.path"
        try:
            return _Source(where, path=confine(source.path, self._config.allowed_roots, where)), []
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.PERMISSION_DENIED:
                raise
            return None, exc.violations or [FieldViolation(where, exc.message)]

    async def prepare(
        self, who: Principal, spec: training_job_pb.TrainingJobSpec, out_dir: Path
    ) -> tuple[PreparedData | None, list[FieldViolation]]:
        violations: list[FieldViolation] = []
        train_source, v = self._resolve(who, spec.dataset, "spec.dataset")
        violations += v
        valid_source = None
        if spec.HasField("validation_dataset") and spec.validation_dataset.WhichOneof("source"):
            valid_source, v = self._resolve(who, spec.validation_dataset, "spec.validation_dataset")
            violations += v
        if train_source is None:
            return None, violations

        created = not out_dir.exists()
        try:
            return await self._prepare(spec, out_dir, train_source, valid_source, violations)
        except Exception as exc:
            if created:  # the job's data directory (and its job directory, if we made it)
                shutil.rmtree(out_dir, ignore_errors=True)
                _remove_if_empty(out_dir.parent)
            if files.is_disk_full(exc):
                raise files.no_space(out_dir.parent, "this job's data") from exc
            raise

    async def _prepare(
        self,
        spec: training_job_pb.TrainingJobSpec,
        out_dir: Path,
        train_source: _Source,
        valid_source: _Source | None,
        violations: list[FieldViolation],
    ) -> tuple[PreparedData | None, list[FieldViolation]]:
        seed = spec.hyperparameters.seed
        # A fraction checks.py refuses (NaN, -1, 1e308) is not split by: the job will not
        # run, and the library would raise on it.
        fraction_ok = (
            math.isfinite(spec.validation_fraction) and 0 <= spec.validation_fraction <= 0.5
        )
        fraction = spec.validation_fraction if valid_source is None and fraction_ok else 0.0
        train = await self._data(train_source, out_dir / "train", fraction, seed)
        violations += _data_violations(train.report, train_source.field)
        validation_path = train.validation_path
        validation_records = train.validation_records
        if valid_source is not None:
            valid = await self._data(valid_source, out_dir / "validation", 0.0, seed)
            violations += _data_violations(valid.report, valid_source.field)
            validation_path = valid.train_path
            validation_records = valid.train_records
            if train.report.valid and valid.report.valid and valid.train_records == 0:
                violations.append(FieldViolation("spec.validation_dataset", "has no valid records"))

        if uses_preference(spec):
            violations += _pairs_needed(spec, train.report, train_source.field)
            if valid_source is not None:
                violations += _pairs_needed(spec, valid.report, valid_source.field)
        batch = spec.hyperparameters.batch_size
        records = train.train_records
        if train.report.valid and 1 <= batch <= checks.MAX_BATCH and records < batch:
            violations.append(
                FieldViolation(
                    "spec.hyperparameters.batch_size",
                    f"the training data has {records} record(s), fewer than batch_size {batch}",
                )
            )
        if train.report.valid and fraction > 0 and valid_source is None and validation_records == 0:
            violations.append(
                FieldViolation(
                    "spec.validation_fraction",
                    f"{spec.validation_fraction:g} of {records} record(s) leaves no validation record; "
                    "raise it or add records",
                )
            )
        details = training_job_pb.DatasetDetails(
            dataset_id=train_source.dataset.id if train_source.dataset else "",
            format=train.report.format,
            train_records=records,
            validation_records=validation_records,
        )
        return PreparedData(train.train_path, validation_path, details), violations

    async def _data(self, source: _Source, out_dir: Path, fraction: float, seed: int) -> _Data:
        """The source's valid records under out_dir, split by `fraction`, and its report."""
        if source.dataset is not None:
            dataset = source.dataset
            if not dataset.report.valid:  # refused below with the upload's report
                return _Data(dataset.report, out_dir / files.TRAIN_FILE, None, 0, 0)
            split = await self._datasets.split(dataset, out_dir, fraction, seed)
            return _Data(
                dataset.report,
                split.train_path,
                split.validation_path,
                split.train_records,
                split.validation_records,
            )
        done = await self._datasets.library.normalize(
            source.path, out_dir, fraction, seed, ValidationOptions()
        )
        return _Data(
            done.report,
            done.train_path,
            done.validation_path,
            done.statistics.train_records,
            done.statistics.validation_records,
        )


def _pairs_needed(
    spec: training_job_pb.TrainingJobSpec, report: dataset_pb.ValidationReport, field: str
) -> list[FieldViolation]:
    """DPO and ORPO compare two replies: the data must be preference pairs."""
    pairs = (dataset_pb.DATASET_FORMAT_OPENAI_PREFERENCE, dataset_pb.DATASET_FORMAT_CHOSEN_REJECTED)
    if not report.valid or report.format in pairs:
        return []
    method = enum_words.display_word(
        training_job_pb.PreferenceMethod, spec.preference.method
    ).upper()
    found = enum_words.display_word(dataset_pb.DatasetFormat, report.format)
    return [
        FieldViolation(
            field,
            f"{method} trains on preference pairs (prompt/chosen/rejected, or OpenAI's "
            f"input/preferred_output/non_preferred_output), but this dataset is {found}",
        )
    ]


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def _data_violations(report: dataset_pb.ValidationReport, field: str) -> list[FieldViolation]:
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
