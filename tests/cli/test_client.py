"""`tunewire.client.Client` against the real services: through the gateway with a
key and straight to the trainer with its internal credential, errors decoded
from google.rpc.Status, uploads streamed in chunks, watch with replay."""

from __future__ import annotations

import grpc
import pytest

from tunewire.client import Client, TunewireError, Violation
from tunewire.identity import read_credential
from tunewire.v1 import training_job_pb2 as training_job_pb

from .services import API_KEY, free_port

pytestmark = pytest.mark.timeout(180)


def test_an_upload_in_small_chunks_is_the_same_dataset_as_in_one(services):
    with services.client() as client:
        whole = client.upload_dataset(services.root / "alpaca_example.json")
        chunked = client.upload_dataset(services.root / "alpaca_example.json", chunk_bytes=100)
        assert chunked.id == whole.id and chunked.sha256 == whole.sha256
        assert chunked.report.valid and chunked.report.valid_samples == 5
        assert client.get_dataset(whole.id).display_name == "alpaca_example.json"
        assert whole.id in [d.id for d in client.list_datasets()]
        report = client.validate_dataset(dataset_id=whole.id, preview_records=1)
        assert report.valid and len(report.sample_preview) == 1


def test_a_bad_spec_is_one_error_with_every_field_violation(services, tiny_model_dir):
    with services.client() as client, pytest.raises(TunewireError) as caught:
        client.create_job(
            model=str(tiny_model_dir),
            dataset={"path": str(services.root / "alpaca_example.json")},
            lora={"rank": 0},
            hyperparameters={"batch_size": 64, "max_seq_length": 8},
        )
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "INVALID_ARGUMENT"
    fields = {v.field for v in error.violations}
    assert {"spec.lora.rank", "spec.hyperparameters.max_seq_length"} <= fields
    assert not error.unreachable and error.address == services.address


def test_misspelt_keys_fail_before_any_call():
    # Nothing listens on this port: an answer proves no call was made.
    with Client(f"127.0.0.1:{free_port()}", "k") as client, pytest.raises(TunewireError) as caught:
        client.create_job(model="m", hyperparameters={"batch_sise": 2}, method="qlroa")
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and not error.unreachable
    assert error.violations == [
        Violation("spec.hyperparameters.batch_sise", "unknown key (did you mean 'batch_size'?)"),
        Violation(
            "spec.method",
            "must be one of lora, qlora, dora, full, got 'qlroa' (did you mean 'qlora'?)",
        ),
    ]


def test_not_found_and_unauthenticated_carry_their_details(services):
    with services.client() as client, pytest.raises(TunewireError) as missing:
        client.get_job("job-0123456789ab")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.resource_name == "job-0123456789ab"

    with (
        Client(services.address, "tw_wrong_key") as client,
        pytest.raises(TunewireError) as refused,
    ):
        client.list_jobs()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "tw_wrong_key" not in str(refused.value)

    with Client(f"127.0.0.1:{free_port()}", "k") as client, pytest.raises(TunewireError) as down:
        client.list_jobs()
    assert down.value.unreachable and down.value.connection_problem == "connection refused"


def test_the_trainer_directly_needs_its_credential_and_agrees_with_the_gateway(
    services, tiny_model_dir
):
    trainer = f"127.0.0.1:{services.trainer_port}"
    # No anonymous local admin: without the credential the trainer refuses, even
    # when the caller claims to be someone.
    with Client(trainer, api_key="", credential="") as anonymous:
        with pytest.raises(TunewireError) as refused:
            anonymous.list_jobs()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.reason == "INTERNAL_TOKEN_REQUIRED"

    with Client(trainer, api_key="", credential=read_credential(services.home)) as direct:
        assert direct.server_info().service == "tunewire-trainer"
        job = direct.create_job(
            training_job_pb.TrainingJobSpec(
                model=str(tiny_model_dir),
                dataset=training_job_pb.DatasetSource(
                    path=str(services.root / "alpaca_example.json")
                ),
                hyperparameters=training_job_pb.Hyperparameters(
                    max_steps=4, batch_size=2, max_seq_length=64, learning_rate=1e-3
                ),
                report_interval_steps=1,
            ),
            request_id="direct-1",
        )
        again = direct.create_job(job.spec, request_id="direct-1")
        assert again.id == job.id  # idempotent on request_id
        finished = direct.wait(job.id)
        assert finished.state == training_job_pb.JOB_STATE_SUCCEEDED and finished.owner == "local"

    # The trainer's local caller is an admin; through the gateway the env key is one too.
    with Client(services.address, API_KEY) as gateway:
        events = list(gateway.watch(job.id))
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        steps = [e.training_metrics.step for e in events if e.HasField("training_metrics")]
        assert steps == [1, 2, 3, 4]
        tail = list(gateway.watch(job.id, after_sequence=events[-2].sequence))
        assert [e.sequence for e in tail] == [events[-1].sequence]
        assert list(gateway.watch(job.id, after_sequence=events[-1].sequence)) == []
        assert gateway.checkpoints(job.id).checkpoints[-1].step == 4


def test_an_adapter_folder_uploads_by_client_and_cli(services, tmp_path):
    import json

    folder = tmp_path / "my-adapter"
    folder.mkdir()
    header = json.dumps(
        {"a.lora_a": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}}
    ).encode()
    (folder / "adapters.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + b"\0" * 32
    )
    (folder / "adapter_config.json").write_text(json.dumps({"lora_parameters": {"rank": 4}}))
    with services.client() as client:
        adapter = client.upload_adapter(folder)
    assert adapter.adapter_id.startswith("ad-") and adapter.display_name == "my-adapter"
    assert (adapter.kind, adapter.rank) == ("lora", 4)
    done = services.cli("adapters", "upload", str(folder), "--name", "x")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(adapter.adapter_id) and "lora rank 4" in done.stdout
    missing = services.cli("adapters", "upload", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "cannot read" in missing.stderr
