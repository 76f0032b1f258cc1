"""Content-addressed uploads keep each tenant's name and time: the same bytes uploaded by two
keys are stored once, and neither sees what the other called it or when they uploaded it."""

import asyncio

import pytest

from tunewire.v1 import dataset_service_pb2 as dataset_service_pb

pytestmark = pytest.mark.timeout(120)


def upload(data: bytes, name: str):
    yield dataset_service_pb.UploadDatasetRequest(
        metadata=dataset_service_pb.UploadMetadata(display_name=name)
    )
    yield dataset_service_pb.UploadDatasetRequest(chunk=data)


async def test_a_second_uploader_never_sees_the_first_ones_name_or_time(stack, http):
    datasets = stack.datasets()
    data = (stack.data_dir / "alpaca.json").read_bytes()
    alice = (
        await datasets.UploadDataset(
            upload(data, "alice-board-minutes"), metadata=stack.md("alice")
        )
    ).dataset
    await asyncio.sleep(0.05)
    bob = (await datasets.UploadDataset(upload(data, ""), metadata=stack.md("bob"))).dataset
    assert bob.id == alice.id and bob.sha256 == alice.sha256  # stored once
    assert (bob.owner, bob.display_name) == ("bob", "upload")
    assert bob.create_time.ToNanoseconds() > alice.create_time.ToNanoseconds()

    got = (
        await datasets.GetDataset(
            dataset_service_pb.GetDatasetRequest(dataset_id=bob.id), metadata=stack.md("bob")
        )
    ).dataset
    listed = (
        await datasets.ListDatasets(
            dataset_service_pb.ListDatasetsRequest(), metadata=stack.md("bob")
        )
    ).datasets
    async with http.get(f"{stack.url}/v1/datasets/{bob.id}", headers=stack.headers("bob")) as r:
        assert r.status == 200
        as_json = await r.text()
    alice_time = alice.create_time.ToJsonString()
    for seen in (got, *listed):
        assert (seen.owner, seen.display_name, seen.create_time) == (
            "bob",
            "upload",
            bob.create_time,
        )
        assert b"alice" not in seen.SerializeToString()
    assert "alice" not in as_json and alice_time not in as_json

    # Alice keeps hers; uploading again changes neither.
    await datasets.UploadDataset(upload(data, "renamed?"), metadata=stack.md("alice"))
    mine = (
        await datasets.GetDataset(
            dataset_service_pb.GetDatasetRequest(dataset_id=alice.id), metadata=stack.md("alice")
        )
    ).dataset
    assert (mine.display_name, mine.create_time) == ("alice-board-minutes", alice.create_time)
    # An admin sees the dataset once, through its first uploader.
    everyone = (
        await datasets.ListDatasets(
            dataset_service_pb.ListDatasetsRequest(), metadata=stack.md("root")
        )
    ).datasets
    assert [(d.id, d.owner) for d in everyone] == [(alice.id, "alice")]
