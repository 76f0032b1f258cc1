"""DatasetService over a real server: uploads in chunks, validation by id / inline / path,
path confinement, limits, normalization and ownership."""

import json
from pathlib import Path

import grpc
import pytest

from tunewire.client.trainer_channel import trainer_channel
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.server import start_trainer
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc

from .conftest import as_user


def _chunks(data: bytes, size: int, display_name: str = "", **options):
    yield dataset_service_pb.UploadDatasetRequest(
        metadata=dataset_service_pb.UploadMetadata(
            display_name=display_name, options=dataset_service_pb.ValidationOptions(**options)
        )
    )
    for start in range(0, len(data), size):
        yield dataset_service_pb.UploadDatasetRequest(chunk=data[start : start + size])


async def test_upload_in_chunks_validates_normalizes_and_dedupes(datasets_stub, data_dir, trainer):
    data = (data_dir / "sharegpt.jsonl").read_bytes()
    reply = await datasets_stub.UploadDataset(_chunks(data, 97, "tutor chats"))
    dataset = reply.dataset
    assert dataset.id.startswith("ds-") and dataset.size_bytes == len(data)
    assert dataset.display_name == "tutor chats" and dataset.owner == "local"
    assert dataset.report.valid and dataset.format == dataset_pb.DATASET_FORMAT_SHAREGPT
    assert dataset.report.total_samples == 8
    records = [json.loads(line) for line in Path(dataset.normalized_path).read_text().splitlines()]
    assert len(records) == 8
    assert [m["role"] for m in records[0]["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert [m["trainable"] for m in records[0]["messages"]] == [False, False, True, False, True]

    again = await datasets_stub.UploadDataset(_chunks(data, 1 << 20))
    assert again.dataset.id == dataset.id
    listed = await datasets_stub.ListDatasets(dataset_service_pb.ListDatasetsRequest())
    assert [d.id for d in listed.datasets] == [dataset.id]
    got = await datasets_stub.GetDataset(
        dataset_service_pb.GetDatasetRequest(dataset_id=dataset.id)
    )
    assert got.dataset.sha256 == dataset.sha256


async def test_invalid_upload_is_a_report_not_an_error(datasets_stub, data_dir):
    reply = await datasets_stub.UploadDataset(_chunks((data_dir / "bad.jsonl").read_bytes(), 10))
    report = reply.dataset.report
    assert not report.valid and reply.dataset.normalized_path == ""
    assert [(e.line, e.code) for e in report.errors] == [(2, "WRONG_TYPE"), (3, "INVALID_JSON")]
    assert report.errors[0].field == "instruction"


async def test_validate_by_id_inline_and_path(datasets_stub, data_dir):
    data = (data_dir / "alpaca.json").read_bytes()
    uploaded = (await datasets_stub.UploadDataset(_chunks(data, 4096))).dataset
    by_id = (
        await datasets_stub.ValidateDataset(
            dataset_service_pb.ValidateDatasetRequest(dataset_id=uploaded.id)
        )
    ).report
    inline = (
        await datasets_stub.ValidateDataset(dataset_service_pb.ValidateDatasetRequest(content=data))
    ).report
    by_path = (
        await datasets_stub.ValidateDataset(
            dataset_service_pb.ValidateDatasetRequest(
                path=str(data_dir / "alpaca.json"),
                options=dataset_service_pb.ValidationOptions(preview_records=2),
            )
        )
    ).report
    for report in (by_id, inline, by_path):
        assert (
            report.valid
            and report.total_samples == 16
            and report.format == dataset_pb.DATASET_FORMAT_ALPACA
        )
    assert len(by_path.sample_preview) == 2
    assert by_path.sample_preview[0].conversation.messages[-1].trainable


async def test_validate_with_a_tokenizer_counts_tokens_and_marks_trained_spans(
    datasets_stub, data_dir, tiny_model_dir
):
    report = (
        await datasets_stub.ValidateDataset(
            dataset_service_pb.ValidateDatasetRequest(
                path=str(data_dir / "sharegpt.jsonl"),
                options=dataset_service_pb.ValidationOptions(
                    tokenizer=str(tiny_model_dir), max_tokens=20, preview_records=1
                ),
            )
        )
    ).report
    assert report.statistics.tokens > 0
    preview = report.sample_preview[0]
    assert preview.rendered.count("<<<") == 2 and 0 < preview.trained_tokens < preview.tokens
    assert report.valid and any(c.code == "TOO_MANY_TOKENS" for c in report.issue_counts)


@pytest.mark.parametrize("path", ["../outside.json", "/etc/passwd", "sub/../../x.json"])
async def test_paths_outside_the_roots_are_refused(datasets_stub, path):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await datasets_stub.ValidateDataset(dataset_service_pb.ValidateDatasetRequest(path=path))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_requests_are_invalid_argument_with_the_field(datasets_stub):
    cases = [
        (dataset_service_pb.ValidateDatasetRequest(), "source"),
        (
            dataset_service_pb.ValidateDatasetRequest(
                content=b"{}", options=dataset_service_pb.ValidationOptions(max_issues=-1)
            ),
            "options.max_issues",
        ),
        (
            dataset_service_pb.ValidateDatasetRequest(
                content=b"{}", options=dataset_service_pb.ValidationOptions(max_tokens=10)
            ),
            "options.max_tokens",
        ),
        (
            dataset_service_pb.ValidateDatasetRequest(
                content=b"{}",
                options=dataset_service_pb.ValidationOptions(tokenizer="no-such-model"),
            ),
            "options.tokenizer",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await datasets_stub.ValidateDataset(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()


async def test_size_limits(tmp_path):
    config = TrainerConfig(
        home=tmp_path / "home",
        listen="127.0.0.1:0",
        data_roots=(tmp_path,),
        max_upload_bytes=1000,
        max_inline_bytes=100,
    )
    trainer = await start_trainer(config)
    try:
        async with trainer_channel(trainer.address, trainer.credential) as ch:
            stub = dataset_service_grpc.DatasetServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UploadDataset(_chunks(b"x" * 5000, 300))
            assert (
                err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                and "1,000 bytes" in err.value.details()
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ValidateDataset(
                    dataset_service_pb.ValidateDatasetRequest(content=b"x" * 101)
                )
            assert (
                err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "100 bytes" in err.value.details()
            )
        assert not any((config.datasets_dir / ".incoming").iterdir()), (
            "a refused upload left a file behind"
        )
    finally:
        await trainer.stop(grace=5)


async def test_datasets_belong_to_their_uploaders(datasets_stub, data_dir):
    data = (data_dir / "alpaca.json").read_bytes()
    alice = (
        await datasets_stub.UploadDataset(_chunks(data, 512), metadata=as_user("alice"))
    ).dataset
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await datasets_stub.GetDataset(
            dataset_service_pb.GetDatasetRequest(dataset_id=alice.id), metadata=as_user("bob")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await datasets_stub.ListDatasets(
            dataset_service_pb.ListDatasetsRequest(), metadata=as_user("bob")
        )
    ).datasets == []
    # Bob uploading the same bytes gets the same dataset, now his too.
    bob = (await datasets_stub.UploadDataset(_chunks(data, 512), metadata=as_user("bob"))).dataset
    assert bob.id == alice.id and bob.owner == "bob"
    assert (
        await datasets_stub.GetDataset(
            dataset_service_pb.GetDatasetRequest(dataset_id=alice.id), metadata=as_user("bob")
        )
    ).dataset.id == alice.id


async def test_normalize_splits_deterministically(datasets_stub, data_dir):
    data = (data_dir / "alpaca.json").read_bytes()
    dataset = (await datasets_stub.UploadDataset(_chunks(data, 512))).dataset
    first = await datasets_stub.NormalizeDataset(
        dataset_service_pb.NormalizeDatasetRequest(
            dataset_id=dataset.id, validation_fraction=0.25, seed=7
        )
    )
    second = await datasets_stub.NormalizeDataset(
        dataset_service_pb.NormalizeDatasetRequest(
            dataset_id=dataset.id, validation_fraction=0.25, seed=7
        )
    )
    assert first.statistics.train_records + first.statistics.validation_records == 16
    assert first.statistics.validation_records > 0
    assert Path(first.validation_path).read_bytes() == Path(second.validation_path).read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await datasets_stub.NormalizeDataset(
            dataset_service_pb.NormalizeDatasetRequest(
                dataset_id=dataset.id, validation_fraction=0.9
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
