"""`GET /models` and `GET /models/{model}`: base models and each succeeded job's
fine-tuned model (`ft:{base}:{suffix}:{job id}`), and what a `model` parameter names.
"""

from __future__ import annotations

import grpc
from aiohttp import web

from tunewire.errors import build_status
from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.keys import Principal
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TrainerCalls
from tunewire.gateway.openai.errors import OpenAIError
from tunewire.gateway.openai.jobs import all_jobs
from tunewire.gateway.openai.pages import page_body
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.reasons import Reason
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

BASE_OWNER = "tunewire"


def model_not_found(name: str) -> OpenAIError:
    status = build_status(
        grpc.StatusCode.NOT_FOUND,
        f"The model `{name}` does not exist or you do not have access to it.",
        Reason.MODEL_NOT_FOUND,
        resource_type="model",
        resource_name=name,
    )
    return OpenAIError(status, "model")


async def fine_tuned_job(
    calls: TrainerCalls, who: Principal, ref: names.ModelRef
) -> training_job_pb.TrainingJob:
    """The succeeded job a `ft:` name stands for; the whole name must match."""
    try:
        reply = await calls.training(
            "GetTrainingJob", training_service_pb.GetTrainingJobRequest(job_id=ref.job_id), who
        )
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise model_not_found(ref.name) from None
        raise
    job = reply.job
    expected = names.checkpoint_model(job, ref.step) if ref.step else names.fine_tuned_model(job)
    if job.state != training_job_pb.JOB_STATE_SUCCEEDED or ref.name != expected:
        raise model_not_found(ref.name)
    return job


def _model(model_id: str, created: int, owner: str) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


class ModelRoutes:
    def __init__(self, calls: TrainerCalls):
        self._calls = calls

    async def _models(self, who: Principal) -> list[dict]:
        fine_tuned, bases = [], {}
        async for job in all_jobs(self._calls, who):
            bases.setdefault(job.spec.model, job.create_time.seconds)
            if job.state == training_job_pb.JOB_STATE_SUCCEEDED:
                fine_tuned.append(
                    _model(names.fine_tuned_model(job), job.end_time.seconds, job.owner)
                )
        base = [_model(model, created, BASE_OWNER) for model, created in bases.items()]
        return fine_tuned + base

    async def list(self, request: web.Request) -> web.Response:
        body = page_body(await self._models(request[PRINCIPAL]), False)
        return web.json_response({"object": "list", "data": body["data"]})

    async def retrieve(self, request: web.Request) -> web.Response:
        who, name = request[PRINCIPAL], request.match_info["model"]
        ref = names.parse_model(name)
        if ref.fine_tuned:
            job = await fine_tuned_job(self._calls, who, ref)
            return web.json_response(_model(name, job.end_time.seconds, job.owner))
        for model in await self._models(who):
            if model["id"] == name:
                return web.json_response(model)
        raise model_not_found(name)

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/models", authenticated_here(self.list))
        router.add_get("/models/{model:.+}", authenticated_here(self.retrieve))
