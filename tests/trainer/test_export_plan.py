"""What ExportArtifact refuses before any export runs: each case named, the field or the job."""

from __future__ import annotations

import grpc
import pytest

from tunewire.errors import ServiceError
from tunewire.reasons import Reason
from tunewire.trainer.artifacts import export
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

pytestmark = pytest.mark.timeout(30)


def finished_job(tmp_path, method=training_job_pb.TRAINING_METHOD_LORA, gguf_base=True):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    if gguf_base:
        (model / "source.gguf").write_bytes(b"GGUF")
    adapters = tmp_path / "jobs" / "job-1" / "adapters"
    adapters.mkdir(parents=True)
    (adapters / "adapters.safetensors").write_bytes(b"")
    job = training_job_pb.TrainingJob(id="job-1", state=training_job_pb.JOB_STATE_SUCCEEDED)
    job.spec.method = method
    job.spec.model = str(model)
    job.resolved.model_path = str(model)
    job.artifacts.adapter_path = str(adapters)
    return job


def request(fmt=training_service_pb.EXPORT_FORMAT_GGUF, tensor_type=""):
    return training_service_pb.ExportArtifactRequest(
        job_id="job-1", format=fmt, tensor_type=tensor_type
    )


def test_each_format_has_its_default_type_and_a_file_beside_the_job(tmp_path):
    job = finished_job(tmp_path)
    plans = {
        fmt: export.plan(job, request(fmt))
        for fmt in (
            training_service_pb.EXPORT_FORMAT_GGUF_ADAPTER,
            training_service_pb.EXPORT_FORMAT_GGUF,
            training_service_pb.EXPORT_FORMAT_MLX,
        )
    }
    names = {p.fmt: (p.kind, p.target.name) for p in plans.values()}
    assert names == {
        "gguf-adapter": ("f32", "job-1.lora-f32.gguf"),
        "gguf": ("f16", "job-1.f16.gguf"),
        "mlx": ("", "job-1.mlx"),
    }
    assert {p.target.parent for p in plans.values()} == {tmp_path / "jobs" / "job-1" / "exports"}


@pytest.mark.parametrize(
    ("fmt", "tensor_type", "field"),
    [
        (training_service_pb.EXPORT_FORMAT_UNSPECIFIED, "", "format"),
        (training_service_pb.EXPORT_FORMAT_GGUF, "q4_k", "tensor_type"),
        (training_service_pb.EXPORT_FORMAT_MLX, "q8_0", "tensor_type"),
    ],
)
def test_a_bad_format_or_type_is_a_field_violation(tmp_path, fmt, tensor_type, field):
    with pytest.raises(ServiceError) as caught:
        export.plan(finished_job(tmp_path), request(fmt, tensor_type))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == [field]


@pytest.mark.parametrize(
    ("method", "gguf_base", "fmt", "words"),
    [
        (training_job_pb.TRAINING_METHOD_FULL, True, training_service_pb.EXPORT_FORMAT_GGUF, "FULL"),
        (training_job_pb.TRAINING_METHOD_LORA, False, training_service_pb.EXPORT_FORMAT_GGUF, "not imported"),
        (training_job_pb.TRAINING_METHOD_DORA, True, training_service_pb.EXPORT_FORMAT_GGUF_ADAPTER, "DoRA"),
    ],
)  # fmt: skip
def test_what_a_job_cannot_be_exported_as_is_said(tmp_path, method, gguf_base, fmt, words):
    with pytest.raises(ServiceError) as caught:
        export.plan(finished_job(tmp_path, method, gguf_base), request(fmt))
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == Reason.UNSUPPORTED and words in caught.value.message
    assert str(tmp_path) not in caught.value.message  # no server path to a client


def test_a_job_without_an_adapter_yet_has_no_artifacts(tmp_path):
    job = finished_job(tmp_path)
    job.state = training_job_pb.JOB_STATE_RUNNING
    job.artifacts.adapter_path = ""
    with pytest.raises(ServiceError) as caught:
        export.plan(job, request())
    assert caught.value.reason == Reason.NO_ARTIFACTS


def test_a_dora_job_merges_and_fuses(tmp_path):
    job = finished_job(tmp_path, training_job_pb.TRAINING_METHOD_DORA)
    assert export.plan(job, request(training_service_pb.EXPORT_FORMAT_GGUF)).fmt == "gguf"
    assert export.plan(job, request(training_service_pb.EXPORT_FORMAT_MLX)).fmt == "mlx"
