"""The dataset store: uploads read once, pages bound to their query, a full disk leaves nothing."""

import errno
import gzip
import tracemalloc
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tunewire.client.trainer_channel import trainer_channel
from tunewire.datasets.api import normalize_file
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets import library, uploads
from tunewire.trainer.server import start_trainer
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

from .conftest import as_user
from .jobs_helpers import tiny_spec

pytestmark = pytest.mark.timeout(120)


def chunks(data: bytes, size: int = 1 << 20, display_name: str = ""):
    yield dataset_service_pb.UploadDatasetRequest(
        metadata=dataset_service_pb.UploadMetadata(display_name=display_name)
    )
    for start in range(0, len(data), size):
        yield dataset_service_pb.UploadDatasetRequest(chunk=data[start : start + size])


def short_records(n: int) -> bytes:
    return b"".join(
        b'{"instruction": "Say %d.", "input": "", "output": "It is %d."}\n' % (i, i)
        for i in range(n)
    )


@pytest.fixture
async def idle_trainer(tmp_path, data_dir, database_target, tiny_model_dir):
    """A trainer that accepts jobs but never starts a worker (once per store driver)."""
    config = TrainerConfig(
        home=tmp_path / "home",
        database=database_target if database_target.startswith("postgresql:") else "",
        listen="127.0.0.1:0",
        data_roots=(data_dir,),
        model_roots=(tiny_model_dir.parent,),
        max_running_jobs=0,
    )
    server = await start_trainer(config)
    async with trainer_channel(server.address, server.credential) as channel:
        yield (
            server,
            dataset_service_grpc.DatasetServiceStub(channel),
            training_service_grpc.TrainingServiceStub(channel),
        )
    await server.stop(grace=2)


def reason_and_free(err: grpc.aio.AioRpcError) -> tuple[str, str]:
    status = rpc_status.from_call(err)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, info.metadata.get("free_bytes", "")
    return "", ""


def leftovers(home: Path) -> list[str]:
    root = home / "datasets"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".incoming")


async def test_jobs_and_normalize_split_the_stored_records_not_the_raw_upload(
    idle_trainer, data_dir, tiny_model_dir, tmp_path
):
    _, datasets, training = idle_trainer
    raw = (data_dir / "sharegpt.jsonl").read_bytes() * 3  # 24 records (duplicates: warnings)
    dataset = (await datasets.UploadDataset(chunks(raw, 100))).dataset
    assert dataset.report.valid and dataset.report.statistics.records == 24
    # Were the raw upload read again, this would fail: jobs and splits read the canonical file.
    Path(dataset.raw_path).write_bytes(b"not a dataset\n")

    source = tmp_path / "again.jsonl"  # what normalizing the upload for each job gave
    source.write_bytes(raw)
    whole = normalize_file(source, tmp_path / "whole", 0.0, 0)
    same_split = normalize_file(source, tmp_path / "direct", 0.25, 11)
    assert Path(dataset.normalized_path).read_bytes() == whole.train_path.read_bytes()

    split = await datasets.NormalizeDataset(
        dataset_service_pb.NormalizeDatasetRequest(
            dataset_id=dataset.id, validation_fraction=0.25, seed=11
        )
    )
    assert Path(split.train_path).read_bytes() == same_split.train_path.read_bytes()
    assert Path(split.validation_path).read_bytes() == same_split.validation_path.read_bytes()
    assert (split.statistics.train_records, split.statistics.validation_records) == (
        same_split.statistics.train_records,
        same_split.statistics.validation_records,
    )
    assert split.statistics.turns == same_split.statistics.turns

    spec = tiny_spec(tiny_model_dir, "", seed=11, validation_fraction=0.25)
    spec.dataset.CopyFrom(training_job_pb.DatasetSource(dataset_id=dataset.id))
    job = (
        await training.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    ).job
    data = Path(job.artifacts.output_dir) / "data" / "train"
    assert (data / "train.jsonl").read_bytes() == same_split.train_path.read_bytes()
    assert (data / "valid.jsonl").read_bytes() == same_split.validation_path.read_bytes()
    assert job.dataset_details.format == dataset_pb.DATASET_FORMAT_SHAREGPT
    assert job.dataset_details.dataset_id == dataset.id

    # Unsplit, a job shares the stored file instead of copying it.
    unsplit = tiny_spec(tiny_model_dir, "", seed=11)
    unsplit.dataset.CopyFrom(training_job_pb.DatasetSource(dataset_id=dataset.id))
    job = (
        await training.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=unsplit))
    ).job
    shared = Path(job.artifacts.output_dir) / "data" / "train" / "train.jsonl"
    assert shared.stat().st_ino == Path(dataset.normalized_path).stat().st_ino
    assert shared.read_bytes() == whole.train_path.read_bytes()
    assert job.dataset_details.train_records == 24


async def test_page_tokens_are_opaque_and_bound_to_their_query(
    idle_trainer, data_dir, tiny_model_dir
):
    _, datasets, training = idle_trainer
    for n in (3, 4, 5):
        await datasets.UploadDataset(chunks(short_records(n)), metadata=as_user("alice"))
    first = await datasets.ListDatasets(
        dataset_service_pb.ListDatasetsRequest(page_size=2), metadata=as_user("alice")
    )
    assert len(first.datasets) == 2 and first.next_page_token
    assert not first.next_page_token.isdigit()
    rest = await datasets.ListDatasets(
        dataset_service_pb.ListDatasetsRequest(page_size=2, page_token=first.next_page_token),
        metadata=as_user("alice"),
    )
    assert len(rest.datasets) == 1 and rest.next_page_token == ""
    assert {d.id for d in first.datasets}.isdisjoint(d.id for d in rest.datasets)

    async def refused(call, request, who="alice"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=as_user(who))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in err.value.details()
        return err.value.details()

    # Another caller, a made-up offset, garbage.
    said = await refused(
        datasets.ListDatasets,
        dataset_service_pb.ListDatasetsRequest(page_size=2, page_token=first.next_page_token),
        "bob",
    )
    assert "different query" in said
    for token in ("2", "bm90IGEgdG9rZW4", "é"):
        await refused(
            datasets.ListDatasets, dataset_service_pb.ListDatasetsRequest(page_token=token)
        )

    for _ in range(3):
        spec = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
        await training.CreateTrainingJob(training_service_pb.CreateTrainingJobRequest(spec=spec))
    queued = training_service_pb.ListTrainingJobsRequest(
        page_size=2, states=[training_job_pb.JOB_STATE_QUEUED]
    )
    page = await training.ListTrainingJobs(queued)
    assert len(page.jobs) == 2 and page.next_page_token
    queued.page_token = page.next_page_token
    assert len((await training.ListTrainingJobs(queued)).jobs) == 1
    # The same token with a changed filter.
    changed = training_service_pb.ListTrainingJobsRequest(
        page_size=2, page_token=page.next_page_token, states=[training_job_pb.JOB_STATE_FAILED]
    )
    assert "different query" in await refused(training.ListTrainingJobs, changed, "local")


async def test_a_large_upload_is_handled_in_a_child_and_the_daemon_keeps_nothing(
    idle_trainer, monkeypatch
):
    """Records stream to disk: the daemon's Python allocations during an upload do not grow
    with its records (validation and normalization of a large file run in a child)."""
    _, datasets, _ = idle_trainer
    monkeypatch.setattr(library, "IN_PROCESS_MAX_BYTES", 256 << 10)
    peaks = []
    for n in (10_000, 40_000):  # 0.6 MB and 2.5 MB of records
        data = short_records(n)
        tracemalloc.start()
        try:
            reply = await datasets.UploadDataset(chunks(data, 128 << 10))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert reply.dataset.report.valid and reply.dataset.report.total_samples == n
        lines = Path(reply.dataset.normalized_path).read_bytes().count(b"\n")
        assert lines == n
    # A few chunks in flight at most (128 KiB each), whatever the upload's size.
    assert peaks[1] < 2 << 20, peaks
    assert peaks[1] < peaks[0] * 1.5 + (512 << 10), peaks


async def test_gzip_goes_to_the_child_and_reports_as_the_plain_file(datasets_stub, data_dir):
    plain = (data_dir / "sharegpt.jsonl").read_bytes()
    packed = gzip.compress(plain)
    a = (await datasets_stub.UploadDataset(chunks(plain))).dataset
    b = (await datasets_stub.UploadDataset(chunks(packed))).dataset
    assert a.id != b.id and b.report.valid
    assert Path(a.normalized_path).read_bytes() == Path(b.normalized_path).read_bytes()
    inline = await datasets_stub.ValidateDataset(
        dataset_service_pb.ValidateDatasetRequest(content=packed)
    )
    for report in (b.report, inline.report):
        assert (report.total_samples, report.valid_samples) == (8, 8)
        stats = report.statistics
        assert (stats.records, stats.turns, stats.characters) == (
            8,
            40,
            a.report.statistics.characters,
        )


def _fail_writes_after(monkeypatch, target, name: str, budget: int) -> None:
    """The storage layer's write fails with ENOSPC once `budget` bytes went through it."""
    original = getattr(target, name)
    written = [0]

    def write(*args):
        data = args[-1]
        written[0] += len(data)
        if written[0] > budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args)

    monkeypatch.setattr(target, name, write)


@pytest.mark.parametrize("where", ["receiving", "normalizing"])
async def test_a_full_disk_leaves_nothing_and_says_how_much_is_free(
    idle_trainer, monkeypatch, where
):
    server, datasets, _ = idle_trainer
    if where == "receiving":
        _fail_writes_after(monkeypatch, uploads, "_write_all", 2000)
    else:
        from tunewire.datasets import output  # the library's canonical writer

        _fail_writes_after(monkeypatch, output._WritebackFile, "write", 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await datasets.UploadDataset(chunks(short_records(500), 1000))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "bytes free" in err.value.details()
    reason, free = reason_and_free(err.value)
    assert reason == "NO_SPACE" and int(free) > 0
    assert leftovers(server.config.home) == []
    assert (await datasets.ListDatasets(dataset_service_pb.ListDatasetsRequest())).datasets == []

    monkeypatch.undo()  # space again: the same upload works
    again = await datasets.UploadDataset(chunks(short_records(500), 1000))
    assert again.dataset.report.valid


async def test_a_full_disk_during_a_split_leaves_no_split(idle_trainer, monkeypatch):
    server, datasets, _ = idle_trainer
    dataset = (await datasets.UploadDataset(chunks(short_records(200)))).dataset
    from tunewire.datasets import output

    _fail_writes_after(monkeypatch, output._WritebackFile, "write", 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await datasets.NormalizeDataset(
            dataset_service_pb.NormalizeDatasetRequest(
                dataset_id=dataset.id, validation_fraction=0.1
            )
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    splits = server.config.home / "datasets" / dataset.id / "splits"
    assert [p for p in splits.rglob("*") if p.is_file()] == []


def test_a_database_from_before_per_owner_names_keeps_them(tmp_path):
    from tunewire.identity import ADMIN, Principal
    from tunewire.trainer.store import db
    from tunewire.trainer.store.database import open_database
    from tunewire.trainer.store.datasets import DatasetStore, Ownership

    path = tmp_path / "state.db"
    conn = db.connect(path)
    old = dataset_pb.Dataset(id="ds-1", display_name="first name", owner="alice")
    old.create_time.FromSeconds(1_700_000_000)
    conn.executescript(
        "CREATE TABLE datasets (id TEXT PRIMARY KEY, created REAL NOT NULL, dataset BLOB NOT NULL);"
        "CREATE TABLE dataset_owners (dataset_id TEXT NOT NULL REFERENCES datasets(id),"
        " owner TEXT NOT NULL, PRIMARY KEY (dataset_id, owner)) WITHOUT ROWID;"
    )
    conn.execute("INSERT INTO datasets VALUES ('ds-1', 1700000000, ?)", (old.SerializeToString(),))
    conn.execute("INSERT INTO dataset_owners VALUES ('ds-1', 'alice')")
    conn.close()
    store = DatasetStore(open_database(path))
    store.add_owner("ds-1", Ownership("bob", "bob's name", 1_800_000_000.5))
    seen = store.visible(Principal("alice"), "ds-1")
    assert (seen.display_name, seen.create_time.seconds) == ("first name", 1_700_000_000)
    seen = store.visible(Principal("bob"), "ds-1")
    assert (seen.display_name, seen.create_time.ToNanoseconds()) == (
        "bob's name",
        1_800_000_000_500_000_000,
    )
    assert store.visible(Principal("carol"), "ds-1") is None
    assert store.visible(Principal("root", ADMIN), "ds-1").owner == "alice"


async def test_a_job_whose_data_finds_the_disk_full_leaves_no_job_behind(
    idle_trainer, data_dir, tiny_model_dir, monkeypatch
):
    server, datasets, training = idle_trainer
    dataset = (await datasets.UploadDataset(chunks(short_records(200)))).dataset
    from tunewire.datasets import output

    _fail_writes_after(monkeypatch, output._WritebackFile, "write", 0)
    by_path = tiny_spec(tiny_model_dir, data_dir / "alpaca.json")
    by_id = tiny_spec(tiny_model_dir, "", validation_fraction=0.2)
    by_id.dataset.CopyFrom(training_job_pb.DatasetSource(dataset_id=dataset.id))
    for spec in (by_path, by_id):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await training.CreateTrainingJob(
                training_service_pb.CreateTrainingJobRequest(spec=spec)
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_and_free(err.value)[0] == "NO_SPACE"
    assert list(server.config.jobs_dir.iterdir()) == []
    assert (
        await training.ListTrainingJobs(training_service_pb.ListTrainingJobsRequest())
    ).jobs == []
