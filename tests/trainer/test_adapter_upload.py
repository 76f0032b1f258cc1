"""An adapter uploaded with UploadAdapter starts a job (`initial_adapter.adapter_id`);
another tenant's id is NOT_FOUND; a bad config or safetensors file is refused on
arrival, naming the part, and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

from .conftest import as_user
from .jobs_helpers import tiny_spec, watch_all

pytestmark = pytest.mark.timeout(300)


def parts(config: str, weights: bytes, name: str = "mine", chunk: int = 1000):
    async def stream():
        yield training_service_pb.UploadAdapterRequest(
            metadata=training_service_pb.AdapterUploadMetadata(
                display_name=name, adapter_config=config
            )
        )
        for start in range(0, len(weights), chunk):
            yield training_service_pb.UploadAdapterRequest(chunk=weights[start : start + chunk])

    return stream()


async def upload(jobs, config, weights, metadata=None, name="mine"):
    return (await jobs.UploadAdapter(parts(config, weights, name), metadata=metadata)).adapter


async def refused_upload(jobs, config, weights) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await upload(jobs, config, weights)
    return err.value


async def test_an_uploaded_adapter_starts_a_job(jobs, tiny_model_dir, data_dir, tmp_path):
    data = data_dir / "alpaca.json"
    first = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(
                spec=tiny_spec(tiny_model_dir, data, max_steps=2)
            ),
            metadata=as_user("alice"),
        )
    ).job
    await watch_all(jobs, first.id)
    first = (
        await jobs.GetTrainingJob(
            training_service_pb.GetTrainingJobRequest(job_id=first.id), metadata=as_user("alice")
        )
    ).job
    assert first.state == training_job_pb.JOB_STATE_SUCCEEDED
    folder = Path(first.artifacts.adapter_path)
    config = (folder / "adapter_config.json").read_text()
    weights = (folder / "adapters.safetensors").read_bytes()

    adapter = await upload(jobs, config, weights, metadata=as_user("alice"))
    assert adapter.adapter_id.startswith("ad-")
    assert (adapter.display_name, adapter.kind, adapter.rank) == ("mine", "lora", 4)
    assert adapter.size_bytes == len(weights) and len(adapter.sha256) == 64
    assert adapter.create_time.seconds > 0
    again = await upload(jobs, config, weights, metadata=as_user("alice"), name="other")
    assert again.adapter_id == adapter.adapter_id and again.display_name == "mine"

    spec = tiny_spec(tiny_model_dir, data, max_steps=1)
    spec.initial_adapter.adapter_id = adapter.adapter_id
    second = (
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=as_user("alice")
        )
    ).job
    assert adapter.adapter_id in second.resolved.initial_adapter_path
    events = await watch_all(jobs, second.id)
    assert events[-1].state_change.state == training_job_pb.JOB_STATE_SUCCEEDED
    assert any("adapters start from" in e.log.message for e in events if e.HasField("log"))

    # Bob may not use alice's adapter, nor learn that it exists.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=as_user("bob")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    spec.initial_adapter.adapter_id = "ad-000000000000000000000000"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=spec), metadata=as_user("alice")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Once bob uploads the same bytes it is his too.
    assert (await upload(jobs, config, weights, metadata=as_user("bob"))).display_name == "mine"

    # The shape checks apply as to any initial adapter.
    wrong_rank = tiny_spec(tiny_model_dir, data, max_steps=1)
    wrong_rank.lora.rank = 8
    wrong_rank.initial_adapter.adapter_id = adapter.adapter_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await jobs.CreateTrainingJob(
            training_service_pb.CreateTrainingJobRequest(spec=wrong_rank),
            metadata=as_user("alice"),
        )
    assert "the initial adapter's rank is 4" in err.value.details()

    # Refused on arrival, naming the part; nothing is kept.
    rank_two = json.loads(config)
    rank_two["lora_parameters"]["rank"] = 2
    bad = [
        ("", weights, "metadata.adapter_config"),
        ("{not json", weights, "metadata.adapter_config"),
        (json.dumps({"fine_tune_type": "full"}), weights, "fine_tune_type"),
        (json.dumps({"lora_parameters": {"rank": 0}}), weights, "lora_parameters.rank"),
        (config, b"\x00" * 40, "chunk"),
        (config, weights[:100], "chunk"),
        (json.dumps(rank_two), weights, "not [*, 2]"),
    ]
    for bad_config, bad_weights, named in bad:
        err = await refused_upload(jobs, bad_config, bad_weights)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, named
        assert named in err.details(), err.details()
    root = tmp_path / "home" / "adapters"
    assert sorted(p.name for p in root.iterdir()) == [".incoming", adapter.adapter_id]
    assert not list((root / ".incoming").iterdir())
