"""CreateTrainingJob refuses, with every violated field at once, a job that could not run."""

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .jobs_helpers import tiny_spec


def all_violations(err: grpc.aio.AioRpcError) -> list[str]:
    """Every BadRequest field violation as 'field: description'."""
    out = []
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return out


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The first violation of each field."""
    out = {}
    for line in all_violations(err):
        field, description = line.split(": ", 1)
        out.setdefault(field, description)
    return out


async def create(jobs, spec, request_id=""):
    return await jobs.CreateTrainingJob(
        training_service_pb.CreateTrainingJobRequest(spec=spec, request_id=request_id)
    )


async def test_every_problem_is_reported_at_once(jobs, tiny_model_dir, data_dir):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
    spec.lora.rank = 0
    spec.lora.target_modules.extend(["q_proj", "qkv_proj"])
    spec.hyperparameters.max_seq_length = 8
    spec.hyperparameters.batch_size = 3
    spec.distributed.world_size = 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    assert "between 1 and 1024, got 0" in found["spec.lora.rank"]
    assert (
        "'qkv_proj'" in found["spec.lora.target_modules"]
        and "q_proj" in found["spec.lora.target_modules"]
    )
    assert "between 16 and 131072, got 8" in found["spec.hyperparameters.max_seq_length"]
    assert "divisible" in found["spec.hyperparameters.batch_size"]


async def test_unusable_model_and_sequence_beyond_context(jobs, tmp_path, tiny_model_dir, data_dir):
    spec = tiny_spec(tmp_path / "no-such-model", data_dir / "alpaca.json")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert "spec.model" in violations(err.value)
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
    spec.hyperparameters.max_seq_length = 4096
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert "context is 2048" in violations(err.value)["spec.hyperparameters.max_seq_length"]


async def test_invalid_dataset_names_lines_and_fields(jobs, tiny_model_dir, data_dir):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, tiny_spec(tiny_model_dir, data_dir / "bad.jsonl"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = " ".join(all_violations(err.value))
    assert "line 2" in text and "instruction" in text
    assert "line 3" in text


async def test_dataset_smaller_than_the_batch(jobs, tiny_model_dir, data_dir):
    spec = tiny_spec(tiny_model_dir, data_dir / "sharegpt.jsonl", batch_size=64)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert "fewer than batch_size 64" in violations(err.value)["spec.hyperparameters.batch_size"]


async def test_paths_outside_the_data_roots_are_permission_denied(jobs, tiny_model_dir, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text("[]")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, tiny_spec(tiny_model_dir, outside))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_request_id_makes_create_idempotent(jobs, tiny_model_dir, data_dir):
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1)
    first = (await create(jobs, spec, "req-42")).job
    again = (await create(jobs, spec, "req-42")).job
    assert again.id == first.id
    listed = await jobs.ListTrainingJobs(training_service_pb.ListTrainingJobsRequest())
    assert [j.id for j in listed.jobs] == [first.id]
    assert first.spec.hyperparameters.learning_rate == pytest.approx(1e-3)
    assert first.spec.loss_masking == training_job_pb.LOSS_MASKING_ALL_ASSISTANT_TURNS
    assert first.dataset_details.format == dataset_pb.DATASET_FORMAT_ALPACA
    assert first.dataset_details.train_records == 16


async def test_hostfile_in_mlx_launch_form_sets_the_ranks(jobs, tiny_model_dir, data_dir):
    (data_dir / "hosts.json").write_text(
        '[{"ssh": "localhost", "ips": []}, {"ssh": "localhost", "ips": []}]'
    )
    spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json", max_steps=1, batch_size=4)
    spec.distributed.hostfile = str(data_dir / "hosts.json")
    job = (await create(jobs, spec)).job
    assert job.distributed.world_size == 2 and list(job.distributed.hosts) == [
        "localhost",
        "localhost",
    ]
    await jobs.CancelTrainingJob(
        training_service_pb.CancelTrainingJobRequest(job_id=job.id, force=True)
    )

    (data_dir / "broken.json").write_text('{"hosts": [{"ips": ["10.0.0.1"]}]}')
    spec.distributed.hostfile = str(data_dir / "broken.json")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert '"ssh"' in violations(err.value)["spec.distributed.hostfile"]

    spec.distributed.hostfile = "/etc/hosts"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    spec.ClearField("distributed")
    spec.distributed.world_size = 2
    spec.distributed.hosts.extend(["localhost", "10.0.0.6"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert "give the port" in violations(err.value)["spec.distributed.hosts[1]"]
    del spec.distributed.hosts[:]
    spec.distributed.hosts.extend(["10.0.0.5:5000", "localhost"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(jobs, spec)
    assert "list this host first" in violations(err.value)["spec.distributed.hosts[0]"]
