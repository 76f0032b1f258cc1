"""Webhook deliveries in the store, on both drivers: queued in the transaction that ends
a job (or not at all), once per endpoint and end, claimed by one trainer at a time."""

import pytest

from tunewire.trainer.store.database import open_database
from tunewire.trainer.store.jobs import JobStore, now_timestamp
from tunewire.trainer.store.webhooks import DELIVERED, PENDING, WebhookStore, timestamp
from tunewire.trainer.webhooks.manager import WebhookManager
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb

SUCCEEDED = webhook_service_pb.WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_SUCCEEDED


@pytest.fixture
def stores(database_target):
    database = open_database(database_target)
    jobs, webhooks = JobStore(database), WebhookStore(database)
    manager = WebhookManager(webhooks, allow_private=True)
    jobs.on_end_in_transaction.append(manager.queue_for_ended_job)
    yield jobs, webhooks, database
    database.close()


def endpoint(webhook_id: str, owner: str = "alice", *types) -> webhook_service_pb.Webhook:
    return webhook_service_pb.Webhook(
        webhook_id=webhook_id,
        url="http://127.0.0.1:9/hook",
        owner=owner,
        secret="whsec_AAAA",
        event_types=list(types),
        create_time=now_timestamp(),
    )


def new_job(job_id: str, owner: str = "alice") -> training_job_pb.TrainingJob:
    return training_job_pb.TrainingJob(
        id=job_id, owner=owner, state=training_job_pb.JOB_STATE_QUEUED, create_time=now_timestamp()
    )


def end(job, state=training_job_pb.JOB_STATE_SUCCEEDED):
    job.state = state


def state_event():
    return training_event_pb.TrainingEvent(log=training_event_pb.LogLine(message="ended"))


def test_a_job_that_ends_queues_one_delivery_per_matching_endpoint_once(stores):
    jobs, webhooks, _ = stores
    webhooks.insert(endpoint("wh-all"))
    webhooks.insert(endpoint("wh-succeeded", "alice", SUCCEEDED))
    webhooks.insert(
        endpoint("wh-failed", "alice", webhook_service_pb.WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_FAILED)
    )
    webhooks.insert(endpoint("wh-bob", "bob"))
    jobs.insert(new_job("job-1"), state_event())
    jobs.update("job-1", end, state_event())
    # A later update of an ended job (a late event) queues nothing more.
    jobs.update("job-1", None, state_event())
    queued = {
        hook: [d.job_id for d in webhooks.deliveries(hook, 0, 10)]
        for hook in ("wh-all", "wh-succeeded", "wh-failed", "wh-bob")
    }
    assert queued == {"wh-all": ["job-1"], "wh-succeeded": ["job-1"], "wh-failed": [], "wh-bob": []}


def test_a_rolled_back_end_queues_nothing(stores):
    jobs, webhooks, _ = stores
    webhooks.insert(endpoint("wh-all"))
    jobs.insert(new_job("job-1"), state_event())

    def end_then_fail(job):
        end(job)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        jobs.update("job-1", end_then_fail, state_event())
    assert webhooks.deliveries("wh-all", 0, 10) == []
    assert webhooks.next_due() is None


def test_a_claimed_delivery_is_not_claimed_again_until_its_hold_ends(stores):
    jobs, webhooks, _ = stores
    webhooks.insert(endpoint("wh-all"))
    jobs.insert(new_job("job-1"), state_event())
    jobs.update("job-1", end, state_event())
    due = webhooks.next_due()
    (claimed,) = webhooks.claim_due(due + 1, hold_seconds=60, limit=10)
    delivery, payload, hook = claimed
    assert delivery.state == PENDING and hook.webhook_id == "wh-all"
    assert b'"type":"fine_tuning.job.succeeded"' in payload and b'"id":"job-1"' in payload
    assert webhooks.claim_due(due + 2, hold_seconds=60, limit=10) == []  # held
    # The same payload, byte for byte, when the hold runs out (a trainer died mid-attempt).
    (again,) = webhooks.claim_due(due + 62, hold_seconds=60, limit=10)
    assert again[1] == payload and again[0].delivery_id == delivery.delivery_id
    delivery.state = DELIVERED
    delivery.attempts = 1
    delivery.delivered_time.CopyFrom(timestamp(due + 63))
    webhooks.record(delivery)
    assert webhooks.claim_due(due + 10_000, hold_seconds=60, limit=10) == []
    (stored,) = webhooks.deliveries("wh-all", 0, 10)
    assert stored.state == DELIVERED and stored.attempts == 1
