"""The webhook operations behind `WebhookService`, with ownership, and the outbox writer
that queues deliveries when a job ends."""

from __future__ import annotations

import secrets
import time

import grpc

from tunewire.errors import FieldViolation, ServiceError, invalid_argument, not_found
from tunewire.identity import Principal
from tunewire.reasons import Reason
from tunewire.trainer.api import paging
from tunewire.trainer.store import db
from tunewire.trainer.store.webhooks import WebhookStore, timestamp
from tunewire.trainer.webhooks import events, signing, urls
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb

MAX_WEBHOOKS_PER_OWNER = 20
MAX_DESCRIPTION_CHARS = 256


class WebhookManager:
    def __init__(self, store: WebhookStore, allow_private: bool):
        self._store = store
        self._allow_private = allow_private

    async def create(
        self, who: Principal, asked: webhook_service_pb.Webhook
    ) -> webhook_service_pb.Webhook:
        violations = []
        if not asked.url:
            violations.append(FieldViolation("webhook.url", "is required"))
        else:
            try:
                await urls.check_reachable(asked.url, self._allow_private)
            except urls.UrlRefused as exc:
                violations.append(FieldViolation("webhook.url", str(exc)))
        for i, kind in enumerate(asked.event_types):
            if kind not in events.ALL_EVENT_TYPES:
                violations.append(
                    FieldViolation(
                        f"webhook.event_types[{i}]",
                        f"unknown event type {kind}; one of "
                        + ", ".join(
                            webhook_service_pb.WebhookEventType.Name(t)
                            for t in events.ALL_EVENT_TYPES
                        ),
                    )
                )
        if len(asked.description) > MAX_DESCRIPTION_CHARS:
            violations.append(
                FieldViolation(
                    "webhook.description",
                    f"is {len(asked.description)} characters; the limit is {MAX_DESCRIPTION_CHARS}",
                )
            )
        if violations:
            raise invalid_argument(violations)
        if self._store.count(who.name) >= MAX_WEBHOOKS_PER_OWNER:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{who.name} has {MAX_WEBHOOKS_PER_OWNER} webhooks, the most allowed; "
                "delete one first",
                reason=Reason.TOO_MANY_WEBHOOKS,
                metadata={"limit": str(MAX_WEBHOOKS_PER_OWNER)},
            )
        webhook = webhook_service_pb.Webhook(
            webhook_id="wh-" + secrets.token_hex(8),
            url=asked.url,
            event_types=sorted(set(asked.event_types)),
            description=asked.description,
            secret=signing.new_secret(),
            create_time=timestamp(time.time()),
            owner=who.name,
        )
        self._store.insert(webhook)
        return webhook

    def list(self, who: Principal) -> list[webhook_service_pb.Webhook]:
        return [_public(w) for w in self._store.list(None if who.admin else who.name)]

    def _visible(self, who: Principal, webhook_id: str) -> webhook_service_pb.Webhook:
        webhook = self._store.get(webhook_id) if webhook_id else None
        # Another tenant's webhook is "not found", as if it did not exist.
        if webhook is None or not who.can_see(webhook.owner):
            raise not_found("webhook", webhook_id)
        return webhook

    def delete(self, who: Principal, webhook_id: str) -> None:
        self._store.delete(self._visible(who, webhook_id).webhook_id)

    def deliveries(
        self, who: Principal, webhook_id: str, page_size: int, page_token: str
    ) -> tuple[list[webhook_service_pb.WebhookDelivery], str]:
        webhook = self._visible(who, webhook_id)
        asked = paging.page(page_size, page_token, "webhook-deliveries", webhook.webhook_id)
        rows = self._store.deliveries(webhook.webhook_id, asked.offset, asked.limit)
        return rows[: asked.limit], asked.next_token(len(rows) > asked.limit)

    def queue_for_ended_job(self, tx: db.Session, job: training_job_pb.TrainingJob) -> None:
        """JobStore's in-transaction hook: the ended job's deliveries, in its transaction."""
        event_type = events.EVENT_TYPE_OF_STATE.get(job.state)
        if event_type is None:
            return
        now = time.time()
        ended = int(job.end_time.seconds) if job.HasField("end_time") else int(now)
        self._store.enqueue(
            tx,
            job.owner,
            event_type,
            job.id,
            events.new_event_id,
            lambda event_id: events.payload(event_id, event_type, job.id, ended),
            now,
        )


def _public(webhook: webhook_service_pb.Webhook) -> webhook_service_pb.Webhook:
    shown = webhook_service_pb.Webhook()
    shown.CopyFrom(webhook)
    shown.ClearField("secret")
    return shown
