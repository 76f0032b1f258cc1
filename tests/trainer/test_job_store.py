"""Jobs and their event logs, on both drivers: contiguous sequences, atomic with job changes, durable."""

import pytest

from tunewire.trainer.store import db
from tunewire.trainer.store.database import open_database
from tunewire.trainer.store.jobs import JobStore, now_timestamp
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb


def _new_job(
    job_id: str, owner: str = "alice", request_id: str = ""
) -> training_job_pb.TrainingJob:
    return training_job_pb.TrainingJob(
        id=job_id,
        owner=owner,
        state=training_job_pb.JOB_STATE_QUEUED,
        request_id=request_id,
        create_time=now_timestamp(),
    )


def _log(message: str) -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(log=training_event_pb.LogLine(message=message))


@pytest.fixture
def store(database_target):
    database = open_database(database_target)
    yield JobStore(database)
    database.close()


def test_events_get_contiguous_sequences_and_survive_reopening(database_target, store):
    store.insert(_new_job("job-1"), _log("created"))
    for i in range(5):
        _, event = store.update("job-1", None, _log(f"line {i}"))
        assert event.sequence == i + 2
    database = open_database(database_target)
    reopened = JobStore(database)
    events = reopened.events_after("job-1", 0)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.log.message for e in reopened.events_after("job-1", 4)] == ["line 3", "line 4"]
    assert reopened.get("job-1").last_event_sequence == 6
    database.close()


def test_a_failing_change_stores_neither_the_change_nor_the_event(store):
    store.insert(_new_job("job-1"), _log("created"))

    def broken(job):
        job.state = training_job_pb.JOB_STATE_RUNNING
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.update("job-1", broken, _log("never"))
    assert store.get("job-1").state == training_job_pb.JOB_STATE_QUEUED
    assert [e.sequence for e in store.events_after("job-1", 0)] == [1]


def test_request_ids_are_unique_per_owner(store):
    store.insert(_new_job("job-1", "alice", "req-1"), _log("created"))
    store.insert(_new_job("job-2", "bob", "req-1"), _log("created"))
    with pytest.raises(db.IntegrityError):
        store.insert(_new_job("job-3", "alice", "req-1"), _log("created"))
    assert store.find_by_request_id("alice", "req-1").id == "job-1"
    assert store.events_after("job-3", 0) == []


def test_listing_pages_filters_by_owner_and_state(store):
    for i in range(7):
        store.insert(_new_job(f"job-{i}", "alice" if i % 2 else "bob"), _log("created"))
    store.update("job-1", lambda j: setattr(j, "state", training_job_pb.JOB_STATE_RUNNING))
    page = store.list(owner="alice", limit=2)
    assert page.total == 3 and len(page.jobs) == 2 and page.next_offset == 2
    rest = store.list(owner="alice", offset=2, limit=2)
    assert rest.next_offset is None and len(rest.jobs) == 1
    assert {j.id for j in page.jobs + rest.jobs} == {"job-1", "job-3", "job-5"}
    running = store.list(owner=None, states=[training_job_pb.JOB_STATE_RUNNING])
    assert [j.id for j in running.jobs] == ["job-1"]
    assert store.queued_ids() == ["job-0", "job-2", "job-3", "job-4", "job-5", "job-6"]
