"""`GET /models` and `GET /models/{model}`: base models and each succeeded job's
fine-tuned model (`ft:{base}:{suffix}:{job id}`), and what a `model` parameter names.
"""

from __future__ import annotations

from aiohttp import web

from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.keys import Principal
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TrainerCalls
from tunewire.gateway.openai.fine_tuned import fine_tuned_job, model_not_found
from tunewire.gateway.openai.jobs import all_jobs
from tunewire.gateway.openai.pages import page_body
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.v1 import training_job_pb2 as training_job_pb

BASE_OWNER = "tunewire"


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
