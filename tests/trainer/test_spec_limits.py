"""No spec a client sends makes the trainer fail: every float is finite and in range,
huge lists are refused in a status that fits gRPC's metadata, a violation that only
follows from another is not reported, and a request_id names one spec."""

from __future__ import annotations

import math

import grpc
import pytest
from grpc_status import rpc_status

from tunewire.errors import reason_of
from tunewire.reasons import Reason
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .jobs_helpers import tiny_spec
from .test_create_checks import all_violations, create, violations

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "field, value",
    [
        ("lora.alpha", math.inf),
        ("lora.alpha", math.nan),
        ("lora.alpha", 1e30),
        ("lora.dropout", math.nan),
        ("hyperparameters.weight_decay", math.nan),
        ("hyperparameters.weight_decay", 1e308),
        ("hyperparameters.learning_rate", math.nan),
        ("hyperparameters.learning_rate", -math.inf),
        ("hyperparameters.max_grad_norm", math.inf),
        ("validation_fraction", math.nan),
        ("validation_fraction", -1.0),
        ("validation_fraction", 1e308),
        ("validation_fraction", math.inf),
        ("evaluation.early_stopping.min_delta", math.nan),
    ],
)
async def test_every_float_is_finite_and_in_range(jobs, tiny_model_dir, data_dir, field, value):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    holder = spec
    *parents, name = field.split(".")
    for part in parents:
        holder = getattr(holder, part)
    setattr(holder, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = all_violations(err.value)
    # Exactly one violation, on the field itself: nothing that follows from it.
    assert [line.split(": ", 1)[0] for line in found] == [f"spec.{field}"], found
    if not math.isfinite(value):
        assert "must be a finite number" in found[0]


async def test_a_violation_that_follows_from_another_is_not_reported(
    jobs, tiny_model_dir, data_dir
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    spec.hyperparameters.learning_rate = 0
    spec.lora.rank = 1 << 20  # its default alpha (2 x rank) would be out of range too
    spec.hyperparameters.batch_size = 1 << 30  # and a batch larger than the data
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert sorted(violations(err.value)) == [
        "spec.hyperparameters.batch_size",
        "spec.hyperparameters.learning_rate",
        "spec.lora.rank",
    ]
    assert len(all_violations(err.value)) == 3


async def test_warmup_is_bounded_when_the_job_runs_by_epochs(jobs, tiny_model_dir, data_dir):
    """With max_steps 0 (epochs decide) warmup_steps has no max_steps to stay under:
    it still has the step limit, instead of a 2^40-step warm-up accepted."""
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=0)
    spec.hyperparameters.epochs = 1
    spec.hyperparameters.warmup_steps = 2**40
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    assert found == {
        "spec.hyperparameters.warmup_steps": f"must be between 0 and 10000000, got {2**40}"
    }


@pytest.mark.parametrize("which", ["target_modules", "hosts", "both"])
async def test_ten_thousand_names_are_refused_in_a_status_that_fits(
    jobs, tiny_model_dir, data_dir, which
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    if which in ("target_modules", "both"):
        spec.lora.target_modules.extend(f"module_{i}_{'x' * 50}" for i in range(10_000))
    if which in ("hosts", "both"):
        spec.distributed.hosts.extend(f"host-{i}.example:{1000 + i % 60000}" for i in range(10_000))
        spec.distributed.world_size = 10_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    if which != "hosts":
        assert found["spec.lora.target_modules"] == "at most 256 names, got 10000"
    if which != "target_modules":
        assert found["spec.distributed.hosts"] == "at most 1024 hosts, got 10000"
    status = rpc_status.from_call(err.value)
    assert len(status.SerializeToString()) < 6000


async def test_many_bad_hosts_are_listed_up_to_a_bound(jobs, tiny_model_dir, data_dir):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    spec.distributed.hosts.extend(["not a host!" + "y" * 1000] * 1024)
    spec.distributed.world_size = 1024
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = all_violations(err.value)
    assert 10 < len(found) < 100
    assert "more violation(s)" in found[-1]
    assert len(rpc_status.from_call(err.value).SerializeToString()) < 6000


async def test_a_request_id_reused_with_another_spec_names_the_first_job(
    jobs, tiny_model_dir, data_dir
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    first = (await create(jobs, spec, "req-7")).job
    assert (await create(jobs, spec, "req-7")).job.id == first.id  # the same spec: the same job
    other = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, other, "req-7")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.id in err.value.details()
    assert reason_of(rpc_status.from_call(err.value)) == Reason.REQUEST_ID_REUSED
    listed = await jobs.ListTrainingJobs(training_service_pb.ListTrainingJobsRequest())
    assert [j.id for j in listed.jobs] == [first.id]
    await jobs.CancelTrainingJob(
        training_service_pb.CancelTrainingJobRequest(job_id=first.id, force=True)
    )


async def test_packing_is_refused_for_a_preference_job(jobs, tiny_model_dir, data_dir):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    spec.preference.method = training_job_pb.PREFERENCE_METHOD_DPO
    spec.hyperparameters.packing = True
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err.value)["spec.hyperparameters.packing"] == (
        "packs supervised records only; set it false for DPO/ORPO"
    )


@pytest.mark.parametrize(
    "checkpointing, blocks, message",
    [
        (True, 3, "the model has 2 blocks, got 3"),
        (True, -1, "must be 0 (every block) or a number of blocks, got -1"),
        (False, 1, "is 1 but hyperparameters.gradient_checkpointing is false; set it true"),
    ],
)
async def test_checkpointed_blocks_are_bounded_by_the_model(
    jobs, tiny_model_dir, data_dir, checkpointing, blocks, message
):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    spec.hyperparameters.gradient_checkpointing = checkpointing
    spec.hyperparameters.gradient_checkpointing_blocks = blocks
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err.value)["spec.hyperparameters.gradient_checkpointing_blocks"] == message
