"""`GET /fine_tuning/jobs/{id}/checkpoints`: a job's checkpoints, newest first, with
OpenAI's `metrics`, each usable as a model (`fine_tuned_model_checkpoint`)."""

from __future__ import annotations

from aiohttp import web

from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TrainerCalls
from tunewire.gateway.openai.errors import bad_request
from tunewire.gateway.openai.pages import page_body
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb


def checkpoint_object(job: training_job_pb.TrainingJob, c: training_job_pb.Checkpoint) -> dict:
    valid = c.validation_loss if c.HasField("validation_loss") else None
    # An evaluation without max_batches covers the whole validation set: then
    # the valid loss is also OpenAI's "full" one.
    whole_set = job.spec.evaluation.max_batches == 0
    return {
        "id": names.checkpoint_id(job.id, c.step),
        "object": "fine_tuning.job.checkpoint",
        "created_at": c.create_time.seconds,
        "fine_tuned_model_checkpoint": names.checkpoint_model(job, c.step),
        "fine_tuning_job_id": job.id,
        "step_number": c.step,
        "metrics": {
            "step": float(c.step),
            "train_loss": c.train_loss,
            "train_mean_token_accuracy": None,
            "valid_loss": valid,
            "valid_mean_token_accuracy": None,
            "full_valid_loss": valid if whole_set else None,
            "full_valid_mean_token_accuracy": None,
        },
        "tunewire": {"best": c.best, "size_bytes": c.size_bytes},
    }


class CheckpointRoutes:
    def __init__(self, calls: TrainerCalls):
        self._calls = calls

    async def list(self, request: web.Request) -> web.Response:
        who = request[PRINCIPAL]
        job_id = request.match_info["job_id"]
        limit = fields.query_limit(request, default=10, high=100)
        job = (
            await self._calls.training(
                "GetTrainingJob", training_service_pb.GetTrainingJobRequest(job_id=job_id), who
            )
        ).job
        reply = await self._calls.training(
            "ListCheckpoints", training_service_pb.ListCheckpointsRequest(job_id=job.id), who
        )
        newest_first = sorted(reply.checkpoints, key=lambda c: c.step, reverse=True)
        after = request.query.get("after", "")
        if after:
            step = names.number_in(after, names.CHECKPOINT_PREFIX, job.id)
            if step is None:
                raise bad_request(f"after: {after!r} is not a checkpoint of job {job.id}", "after")
            newest_first = [c for c in newest_first if c.step < step]
        page = newest_first[:limit]
        data = [checkpoint_object(job, c) for c in page]
        return web.json_response(page_body(data, has_more=len(newest_first) > limit))

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/fine_tuning/jobs/{job_id}/checkpoints", authenticated_here(self.list))
