"""`GET /fine_tuning/jobs/{id}/events`: the job's event log, newest first, as OpenAI pages it.

One tunewire event is one OpenAI event: state changes, log lines and checkpoints
are `message` events, training and validation numbers `metrics` events with
OpenAI's `data` keys (`step`, `train_loss`, `valid_loss`, `total_steps`, ...).
Events are sequence-numbered without gaps, so a page is a range of sequences,
read from the trainer's replay (WatchTrainingJob from a sequence, stopped at
the page's end).
"""

from __future__ import annotations

from aiohttp import web
from google.protobuf import json_format

from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TRAINING, TrainerCalls
from tunewire.gateway.openai.errors import bad_request
from tunewire.gateway.openai.pages import page_body
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

LEVELS = {
    training_event_pb.LOG_LEVEL_WARNING: "warn",
    training_event_pb.LOG_LEVEL_ERROR: "error",
}
STATE_MESSAGES = {
    training_job_pb.JOB_STATE_QUEUED: "Fine-tuning job created and queued",
    training_job_pb.JOB_STATE_STARTING: "Fine-tuning job started: loading the model and data",
    training_job_pb.JOB_STATE_RUNNING: "Training is running",
    training_job_pb.JOB_STATE_CANCELLING: "Cancelling: the current step finishes and a checkpoint is written",
    training_job_pb.JOB_STATE_SUCCEEDED: "The job has successfully completed",
    training_job_pb.JOB_STATE_CANCELLED: "The job was cancelled",
    training_job_pb.JOB_STATE_PAUSED: "The job was paused",
}


def _state_message(change: training_event_pb.StateChange) -> tuple[str, str]:
    if change.state == training_job_pb.JOB_STATE_FAILED:
        return "error", f"The job failed: {change.error.message or change.reason}".splitlines()[0]
    text = STATE_MESSAGES.get(change.state, training_job_pb.JobState.Name(change.state))
    return "info", f"{text} ({change.reason})" if change.reason else text


def event_object(event: training_event_pb.TrainingEvent, total_steps: int) -> dict:
    kind = event.WhichOneof("payload")
    level, message, data, type_ = "info", "", None, "message"
    if kind == "state_change":
        level, message = _state_message(event.state_change)
    elif kind == "training_metrics":
        m = event.training_metrics
        type_ = "metrics"
        message = f"Step {m.step}/{total_steps}: training loss={m.loss:.4f}"
        data = {"step": m.step, "train_loss": m.loss, "total_steps": total_steps}
    elif kind == "evaluation_metrics":
        e = event.evaluation_metrics
        type_ = "metrics"
        message = f"Step {e.step}/{total_steps}: validation loss={e.validation_loss:.4f}"
        data = {
            "step": e.step,
            "valid_loss": e.validation_loss,
            "full_valid_loss": e.validation_loss,
            "total_steps": total_steps,
        }
    elif kind == "checkpoint_saved":
        message = f"Checkpoint created at step {event.checkpoint_saved.checkpoint.step}"
    elif kind == "log":
        level = LEVELS.get(event.log.level, "info")
        message = event.log.message
    return {
        "id": names.event_id(event.job_id, event.sequence),
        "object": "fine_tuning.job.event",
        "created_at": event.time.seconds,
        "level": level,
        "message": message,
        "data": data,
        "type": type_,
        "tunewire": json_format.MessageToDict(event, preserving_proto_field_name=True),
    }


class EventRoutes:
    def __init__(self, calls: TrainerCalls):
        self._calls = calls

    async def list(self, request: web.Request) -> web.Response:
        who = request[PRINCIPAL]
        job_id = request.match_info["job_id"]
        limit = fields.query_limit(request, default=20, high=1000)
        job = (
            await self._calls.training(
                "GetTrainingJob", training_service_pb.GetTrainingJobRequest(job_id=job_id), who
            )
        ).job
        newest = job.last_event_sequence
        after = request.query.get("after", "")
        if after:
            sequence = names.number_in(after, names.EVENT_PREFIX, job.id)
            if sequence is None:
                raise bad_request(f"after: {after!r} is not an event of job {job.id}", "after")
            newest = min(newest, sequence - 1)
        oldest = max(1, newest - limit + 1)
        events: list[training_event_pb.TrainingEvent] = []
        if newest >= 1:
            stream = self._calls.stream(
                TRAINING,
                "WatchTrainingJob",
                training_service_pb.WatchTrainingJobRequest(
                    job_id=job.id, after_sequence=oldest - 1
                ),
                who,
            )
            async for reply in stream:
                if reply.event.sequence > newest:
                    break
                events.append(reply.event)
                if reply.event.sequence == newest:
                    break
            await stream.aclose()
        total = job.progress.total_steps
        data = [event_object(e, total) for e in reversed(events)]
        return web.json_response(page_body(data, has_more=oldest > 1))

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/fine_tuning/jobs/{job_id}/events", authenticated_here(self.list))
