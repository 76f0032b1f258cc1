"""Which webhook event a job's end is, and the event's JSON body (OpenAI's shape)."""

from __future__ import annotations

import json
import secrets

from tunewire import enum_words
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb

EVENT_TYPE_OF_STATE = {
    training_job_pb.JOB_STATE_SUCCEEDED: webhook_service_pb.WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_SUCCEEDED,
    training_job_pb.JOB_STATE_FAILED: webhook_service_pb.WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_FAILED,
    training_job_pb.JOB_STATE_CANCELLED: webhook_service_pb.WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_CANCELLED,
}
ALL_EVENT_TYPES = tuple(EVENT_TYPE_OF_STATE.values())


def type_name(event_type: int) -> str:
    """`fine_tuning.job.succeeded` for WEBHOOK_EVENT_TYPE_FINE_TUNING_JOB_SUCCEEDED."""
    word = enum_words.word(
        webhook_service_pb.WebhookEventType, event_type
    )  # "fine_tuning_job_succeeded"
    return word.replace("fine_tuning_job_", "fine_tuning.job.")


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def payload(event_id: str, event_type: int, job_id: str, created_at: int) -> bytes:
    """The body every attempt of this delivery sends, byte for byte."""
    return json.dumps(
        {
            "object": "event",
            "id": event_id,
            "type": type_name(event_type),
            "created_at": created_at,
            "data": {"id": job_id},
        },
        separators=(",", ":"),
    ).encode()
