"""Claims, heartbeats and fencing in the store, on both drivers: a stale lease cannot write."""

import threading
import time

import pytest

from tunewire.trainer.resources import Offer
from tunewire.trainer.store.database import open_database
from tunewire.trainer.store.jobs import JobStore, now_timestamp
from tunewire.trainer.store.leases import LeaseLost, LeaseStore
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

QUEUED = training_job_pb.JOB_STATE_QUEUED
RUNNING = training_job_pb.JOB_STATE_RUNNING


def _log(message: str) -> training_event_pb.TrainingEvent:
    return training_event_pb.TrainingEvent(log=training_event_pb.LogLine(message=message))


def _set(state: int):
    return lambda job: setattr(job, "state", state)


@pytest.fixture
def stores(database_target):
    database = open_database(database_target)
    jobs = JobStore(database)
    for i in range(3):
        jobs.insert(
            training_job_pb.TrainingJob(
                id=f"job-{i}", owner="alice", state=QUEUED, create_time=now_timestamp()
            ),
            _log("created"),
        )
    yield jobs, LeaseStore(database, ttl_seconds=0.5)
    database.close()


def test_claims_go_in_queue_order_and_never_twice(stores):
    _, leases = stores
    (a,) = leases.claim("trainer-a")
    (b,) = leases.claim("trainer-b")
    assert (a.job_id, a.attempt, b.job_id) == ("job-0", 1, "job-1")
    assert [lease.job_id for lease in leases.claim("trainer-a", limit=5)] == ["job-2"]
    assert leases.claim("trainer-b") == []


def test_a_stale_lease_cannot_write_after_its_job_was_taken_back(stores):
    jobs, leases = stores
    (first,) = leases.claim("trainer-a")
    jobs.update(first.job_id, _set(RUNNING), _log("step 1"), first)
    jobs.put_checkpoint(first.job_id, training_job_pb.Checkpoint(step=1), first)
    time.sleep(0.7)  # trainer-a misses its beats
    (dead,) = [e for e in leases.expired() if e.lease.job_id == first.job_id]
    assert dead.lease == first and dead.state == RUNNING
    jobs.update(first.job_id, _set(QUEUED), _log("re-queued"), dead.lease, expired=True)

    with pytest.raises(LeaseLost, match="attempt 1 of trainer-a lost its lease"):
        jobs.update(first.job_id, None, _log("from the dead"), first)
    with pytest.raises(LeaseLost):
        jobs.put_checkpoint(first.job_id, training_job_pb.Checkpoint(step=2), first)
    (second,) = leases.claim("trainer-b")
    assert (second.job_id, second.attempt) == (first.job_id, 2)
    with pytest.raises(LeaseLost, match="held by trainer-b \\(attempt 2\\)"):
        jobs.update(first.job_id, None, _log("from the dead"), first)
    jobs.update(first.job_id, _set(RUNNING), _log("resumed"), second)
    assert [e.sequence for e in jobs.events_after(first.job_id, 0)] == [1, 2, 3, 4]
    assert [c.step for c in jobs.checkpoints(first.job_id)] == [1]


def test_heartbeats_keep_leases_and_a_renewed_lease_is_not_taken(stores):
    jobs, leases = stores
    (lease,) = leases.claim("trainer-a")
    for _ in range(4):
        time.sleep(0.2)
        held = leases.renew("trainer-a", "10.0.0.1:50052")
        assert [h.job_id for h in held] == [lease.job_id]
    assert leases.expired() == []
    with pytest.raises(LeaseLost):  # taking it back needs the lease to have run out
        jobs.update(lease.job_id, _set(QUEUED), None, lease, expired=True)
    assert [(t["id"], t["address"]) for t in leases.trainers()] == [("trainer-a", "10.0.0.1:50052")]


def test_finishing_releases_the_lease(stores):
    jobs, leases = stores
    (lease,) = leases.claim("trainer-a")
    jobs.update(lease.job_id, _set(training_job_pb.JOB_STATE_SUCCEEDED), _log("done"), lease)
    assert leases.renew("trainer-a") == []
    with pytest.raises(LeaseLost):
        jobs.update(lease.job_id, None, _log("late"), lease)


def test_a_pause_asked_elsewhere_reaches_the_holder_once_and_ends_with_the_attempt(stores):
    jobs, leases = stores
    running = (training_job_pb.JOB_STATE_STARTING, RUNNING)
    assert not leases.request_pause("job-0", "bob", running)  # queued, nobody runs it
    (lease,) = leases.claim("trainer-a")
    jobs.update(lease.job_id, _set(RUNNING), None, lease)
    assert leases.request_pause(lease.job_id, "bob", running)
    assert not leases.request_pause(lease.job_id, "carol", running)  # already on its way
    (held,) = leases.renew("trainer-a")
    assert (held.job_id, held.state, held.pause_requested_by) == (lease.job_id, RUNNING, "bob")
    # The holder's worker checkpointed and stopped: PAUSED ends the attempt and the request.
    jobs.update(lease.job_id, _set(training_job_pb.JOB_STATE_PAUSED), _log("paused"), lease)
    assert leases.renew("trainer-a") == []
    jobs.update(lease.job_id, _set(QUEUED), _log("resumed"))
    (again,) = [c for c in leases.claim("trainer-b", limit=3) if c.job_id == lease.job_id]
    jobs.update(again.job_id, _set(RUNNING), None, again)
    assert [
        h.pause_requested_by for h in leases.renew("trainer-b") if h.job_id == again.job_id
    ] == [""]


def test_trainers_claiming_at_once_share_the_queue_without_overlap(database_target, stores):
    jobs, _ = stores
    for i in range(3, 40):
        jobs.insert(
            training_job_pb.TrainingJob(
                id=f"job-{i}", owner="alice", state=QUEUED, create_time=now_timestamp()
            ),
            _log("created"),
        )
    claimed: dict[str, list[str]] = {}

    def claimer(name: str) -> None:
        database = open_database(database_target)
        store = LeaseStore(database, ttl_seconds=30)
        mine = claimed.setdefault(name, [])
        while batch := store.claim(name, limit=2):
            mine.extend(lease.job_id for lease in batch)
        database.close()

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    every = [job for mine in claimed.values() for job in mine]
    assert sorted(every) == sorted(f"job-{i}" for i in range(40))


def test_claims_pass_over_the_jobs_a_trainer_cannot_run(stores):
    _, leases = stores
    (lease,) = leases.claim("trainer-a", passed_over={"job-0", "job-1"})
    assert lease.job_id == "job-2"


async def test_a_trainer_never_starts_a_job_whose_files_it_cannot_see(tmp_path, postgres_url):
    from tunewire.trainer.config import TrainerConfig
    from tunewire.trainer.server import start_trainer

    database = open_database(postgres_url)
    JobStore(database).insert(
        training_job_pb.TrainingJob(
            id="job-elsewhere", owner="alice", state=QUEUED, create_time=now_timestamp()
        ),
        _log("created on a trainer with another artifact root"),
    )
    server = await start_trainer(
        TrainerConfig(
            home=tmp_path / "home",
            listen="127.0.0.1:0",
            database=postgres_url,
            artifact_root=tmp_path / "not-shared",
            heartbeat_seconds=0.1,
        )
    )
    try:
        for _ in range(5):
            await server.keeper.beat()
        job = JobStore(database).get("job-elsewhere")
        assert job.state == QUEUED and job.last_event_sequence == 1
        row = database.query_one("SELECT lease_owner FROM jobs WHERE id = 'job-elsewhere'")
        assert row["lease_owner"] is None  # free for a trainer that sees its files
    finally:
        await server.stop(grace=1)
        database.close()


def _distributed_job(job_id: str, ranks: int) -> training_job_pb.TrainingJob:
    job = training_job_pb.TrainingJob(
        id=job_id, owner="alice", state=QUEUED, create_time=now_timestamp()
    )
    job.distributed.world_size = ranks
    job.distributed.hosts.extend(["localhost"] * ranks)
    return job


def _lease_owner(database, job_id: str):
    return database.query_one("SELECT lease_owner FROM jobs WHERE id = ?", (job_id,))["lease_owner"]


def test_a_distributed_job_claims_all_its_slots_at_once_or_none(database_target):
    """Two 2-rank jobs, 3 slots in all (trainer-a 2, trainer-b 1): exactly one is
    claimed; the other stays queued holding no slot, and is claimed once the first ends."""
    database = open_database(database_target)
    try:
        jobs = JobStore(database)
        for job_id in ("big-1", "big-2"):
            jobs.insert(_distributed_job(job_id, 2), _log("created"))
        leases = LeaseStore(database, ttl_seconds=30)
        (first,) = leases.claim("trainer-a", limit=5, slots=2)
        assert first.job_id == "big-1"
        assert leases.claim("trainer-b", limit=5, slots=1) == []  # 1 free slot of 2 needed
        assert leases.claim("trainer-a", limit=5, slots=2) == []  # both of a's slots held
        assert _lease_owner(database, "big-2") is None
        assert jobs.get("big-2").state == QUEUED

        # A 1-rank job queued behind big-2 may pass it: it fits in b's one slot.
        jobs.insert(_distributed_job("small", 1), _log("created"))
        assert [lease.job_id for lease in leases.claim("trainer-b", limit=5, slots=1)] == ["small"]

        jobs.update("big-1", _set(training_job_pb.JOB_STATE_SUCCEEDED), _log("done"), first)
        assert _lease_owner(database, "big-1") is None
        (second,) = leases.claim("trainer-a", limit=5, slots=2)
        assert (second.job_id, _lease_owner(database, "big-2")) == ("big-2", "trainer-a")
    finally:
        database.close()


def test_one_claim_never_takes_more_slots_than_it_has(database_target):
    """Several jobs in one claim: each is taken whole while room is left, none in part."""
    database = open_database(database_target)
    try:
        jobs = JobStore(database)
        for job_id, ranks in (("two", 2), ("three", 3), ("one", 1), ("another-one", 1)):
            jobs.insert(_distributed_job(job_id, ranks), _log("created"))
        leases = LeaseStore(database, ttl_seconds=30)
        claimed = leases.claim("trainer-a", limit=10, slots=4)
        assert [lease.job_id for lease in claimed] == ["two", "one", "another-one"]
        assert _lease_owner(database, "three") is None
        # No limit (0, the default): every queued job, whatever its ranks.
        assert [lease.job_id for lease in leases.claim("trainer-b", limit=10)] == ["three"]
    finally:
        database.close()


def test_a_trainer_claims_only_jobs_its_device_and_memory_meet(database_target):
    database = open_database(database_target)
    try:
        jobs = JobStore(database)
        wants = {
            "gpu": (training_job_pb.RESOURCE_DEVICE_GPU, 0.0),
            "cpu-16": (training_job_pb.RESOURCE_DEVICE_CPU, 16.0),
            "any-4": (training_job_pb.RESOURCE_DEVICE_ANY, 4.0),
        }
        for job_id, (device, memory) in wants.items():
            job = _distributed_job(job_id, 1)
            job.spec.resources.device = device
            job.spec.resources.min_memory_gib = memory
            jobs.insert(job, _log("created"))
        leases = LeaseStore(database, ttl_seconds=30)
        small_cpu = Offer(training_job_pb.RESOURCE_DEVICE_CPU, 8.0)
        gpu = Offer(training_job_pb.RESOURCE_DEVICE_GPU, 64.0)
        assert [x.job_id for x in leases.claim("cpu", limit=5, offer=small_cpu)] == ["any-4"]
        assert [x.job_id for x in leases.claim("gpu", limit=5, offer=gpu)] == ["gpu"]
        assert _lease_owner(database, "cpu-16") is None  # neither offers it enough

        # The heartbeat advertises the offer; only live trainers' offers count.
        leases.renew("cpu", "10.0.0.1:1", small_cpu)
        leases.renew("gpu", "10.0.0.2:1", gpu)
        assert sorted(o.memory_gib for o in leases.offers()) == [8.0, 64.0]
        assert LeaseStore(database, ttl_seconds=-1).offers() == []
    finally:
        database.close()


def test_a_big_job_waiting_too_long_is_no_longer_passed(database_target):
    """trainer-a (3 slots) runs a 2-rank job; a second 2-rank job waits. A 1-rank job
    behind it may pass it while it is fresh, not once it waited past `reserve_after`:
    then the trainer claims nothing behind it, drains, and claims it next."""
    database = open_database(database_target)
    try:
        jobs = JobStore(database)
        for job_id, ranks in (("big-1", 2), ("big-2", 2), ("small-1", 1), ("small-2", 1)):
            jobs.insert(_distributed_job(job_id, ranks), _log("created"))
        leases = LeaseStore(database, ttl_seconds=30)
        (first,) = leases.claim("trainer-a", slots=3, reserve_after=60)
        assert first.job_id == "big-1"
        # big-2 is fresh: small-1 passes it.
        (passing,) = leases.claim("trainer-a", slots=3, reserve_after=60)
        assert passing.job_id == "small-1"
        jobs.update("small-1", _set(training_job_pb.JOB_STATE_SUCCEEDED), _log("done"), passing)

        # big-2 has waited longer than reserve_after: small-2 no longer passes it...
        database.execute("UPDATE jobs SET created = created - 120 WHERE id = 'big-2'")
        assert leases.claim("trainer-a", slots=3, reserve_after=60) == []
        assert _lease_owner(database, "small-2") is None
        # ...on a trainer that could ever run it; one with 1 slot cannot, and takes small-2.
        assert [x.job_id for x in leases.claim("trainer-b", slots=1, reserve_after=60)] == [
            "small-2"
        ]
        # trainer-a drained: once big-1 ends, big-2 fits and is claimed.
        jobs.update("big-1", _set(training_job_pb.JOB_STATE_SUCCEEDED), _log("done"), first)
        (second,) = leases.claim("trainer-a", slots=3, reserve_after=60)
        assert second.job_id == "big-2"
    finally:
        database.close()
