"""Webhook endpoints and their deliveries, in the trainer's database (either driver).

A delivery row is written in the same transaction that stores a job's final state
(`enqueue`, hooked into JobStore.update), with its payload fixed then: every attempt,
before or after a restart, sends the same bytes under the same `webhook-id`, and a
unique index keeps one row per (endpoint, job, event type). Trainers sharing a
database take due deliveries with `claim_due`, which pushes their next attempt past
the attempt's timeout in the same transaction, so two trainers never send one
attempt twice and a trainer that dies mid-attempt leaves it to be retried.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

from google.protobuf import timestamp_pb2

from tunewire.trainer.store import db
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb

PENDING = webhook_service_pb.WEBHOOK_DELIVERY_STATE_PENDING
DELIVERED = webhook_service_pb.WEBHOOK_DELIVERY_STATE_DELIVERED
FAILED = webhook_service_pb.WEBHOOK_DELIVERY_STATE_FAILED


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _webhook(row: db.Row) -> webhook_service_pb.Webhook:
    return webhook_service_pb.Webhook.FromString(bytes(row["webhook"]))


def _delivery(row: db.Row) -> webhook_service_pb.WebhookDelivery:
    return webhook_service_pb.WebhookDelivery.FromString(bytes(row["delivery"]))


class WebhookStore:
    def __init__(self, database: db.Database):
        self._db = database

    # ---- endpoints -----------------------------------------------------------

    def insert(self, webhook: webhook_service_pb.Webhook) -> None:
        """Stores an endpoint, its secret included (the dispatcher signs with it)."""
        self._db.execute(
            "INSERT INTO webhooks (id, owner, created, webhook) VALUES (?, ?, ?, ?)",
            (
                webhook.webhook_id,
                webhook.owner,
                webhook.create_time.ToNanoseconds() / 1e9,
                webhook.SerializeToString(),
            ),
        )

    def get(self, webhook_id: str) -> webhook_service_pb.Webhook | None:
        row = self._db.query_one("SELECT webhook FROM webhooks WHERE id = ?", (webhook_id,))
        return _webhook(row) if row else None

    def list(self, owner: str | None) -> builtins.list[webhook_service_pb.Webhook]:
        """`owner`'s endpoints (None: everyone's), oldest first."""
        if owner is None:
            rows = self._db.query("SELECT webhook FROM webhooks ORDER BY created, id")
        else:
            rows = self._db.query(
                "SELECT webhook FROM webhooks WHERE owner = ? ORDER BY created, id", (owner,)
            )
        return [_webhook(r) for r in rows]

    def count(self, owner: str) -> int:
        row = self._db.query_one("SELECT COUNT(*) AS n FROM webhooks WHERE owner = ?", (owner,))
        return int(row["n"]) if row else 0

    def delete(self, webhook_id: str) -> None:
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
            tx.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))

    # ---- deliveries ----------------------------------------------------------

    def enqueue(
        self,
        tx: db.Session,
        owner: str,
        event_type: webhook_service_pb.WebhookEventType,
        job_id: str,
        new_id: Callable[[], str],
        payload_for: Callable[[str], bytes],
        now: float,
    ) -> int:
        """Inside the transaction that ends job `job_id`: one pending delivery for each of
        `owner`'s endpoints that takes `event_type`. `new_id()` makes a delivery id,
        `payload_for(delivery_id)` its body. Returns how many were queued."""
        queued = 0
        for row in tx.query("SELECT webhook FROM webhooks WHERE owner = ?", (owner,)):
            webhook = _webhook(row)
            if webhook.event_types and event_type not in webhook.event_types:
                continue
            existing = tx.query_one(
                "SELECT id FROM webhook_deliveries"
                " WHERE webhook_id = ? AND job_id = ? AND event_type = ?",
                (webhook.webhook_id, job_id, event_type),
            )
            if existing is not None:
                continue  # a job ends once; never a second event for the same end
            delivery = webhook_service_pb.WebhookDelivery(
                delivery_id=new_id(),
                webhook_id=webhook.webhook_id,
                event_type=event_type,
                job_id=job_id,
                state=PENDING,
                create_time=timestamp(now),
                next_attempt_time=timestamp(now),
            )
            tx.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, job_id, event_type, state,"
                " next_attempt, created, payload, delivery) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.delivery_id,
                    webhook.webhook_id,
                    job_id,
                    event_type,
                    PENDING,
                    now,
                    now,
                    payload_for(delivery.delivery_id),
                    delivery.SerializeToString(),
                ),
            )
            queued += 1
        return queued

    def claim_due(
        self, now: float, hold_seconds: float, limit: int
    ) -> builtins.list[
        tuple[webhook_service_pb.WebhookDelivery, bytes, webhook_service_pb.Webhook]
    ]:
        """Pending deliveries due by `now`, each with its payload and endpoint, claimed
        for `hold_seconds` (their next attempt moved that far ahead)."""
        claimed = []
        with self._db.transaction() as tx:
            rows = tx.query(
                "SELECT d.id, d.payload, d.delivery, w.webhook FROM webhook_deliveries d"
                " JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.state = ? AND d.next_attempt <= ?"
                f" ORDER BY d.next_attempt, d.id LIMIT ?{self._db.skip_locked}",
                (PENDING, now, limit),
            )
            for row in rows:
                tx.execute(
                    "UPDATE webhook_deliveries SET next_attempt = ? WHERE id = ?",
                    (now + hold_seconds, row["id"]),
                )
                claimed.append((_delivery(row), bytes(row["payload"]), _webhook(row)))
        return claimed

    def record(self, delivery: webhook_service_pb.WebhookDelivery) -> None:
        """Stores an attempt's outcome (state, counts, times) as the dispatcher set it."""
        next_attempt = (
            delivery.next_attempt_time.ToNanoseconds() / 1e9
            if delivery.state == PENDING
            else time.time()
        )
        self._db.execute(
            "UPDATE webhook_deliveries SET state = ?, next_attempt = ?, delivery = ? WHERE id = ?",
            (delivery.state, next_attempt, delivery.SerializeToString(), delivery.delivery_id),
        )

    def next_due(self) -> float | None:
        """When the soonest pending delivery is due (None: nothing pending)."""
        row = self._db.query_one(
            "SELECT MIN(next_attempt) AS due FROM webhook_deliveries WHERE state = ?", (PENDING,)
        )
        return float(row["due"]) if row and row["due"] is not None else None

    def deliveries(
        self, webhook_id: str, offset: int, limit: int
    ) -> builtins.list[webhook_service_pb.WebhookDelivery]:
        """An endpoint's deliveries, newest first; one more than `limit` tells of a next page."""
        rows = self._db.query(
            "SELECT delivery FROM webhook_deliveries WHERE webhook_id = ?"
            " ORDER BY created DESC, id DESC LIMIT ? OFFSET ?",
            (webhook_id, limit + 1, offset),
        )
        return [_delivery(r) for r in rows]
