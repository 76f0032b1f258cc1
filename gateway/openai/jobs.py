"""`/fine_tuning/jobs`: create, list, retrieve, cancel, as calls of TrainingService.

POST /fine_tuning/jobs                 CreateTrainingJob (`Idempotency-Key` → request_id)
GET  /fine_tuning/jobs                 ListTrainingJobs (?after=&limit=&metadata[k]=v)
GET  /fine_tuning/jobs/{id}            GetTrainingJob
POST /fine_tuning/jobs/{id}/cancel     CancelTrainingJob
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
from aiohttp import web

from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.keys import Principal
from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TrainerCalls
from tunewire.gateway.openai.errors import OpenAIError, details
from tunewire.gateway.openai.fine_tuned import fine_tuned_job
from tunewire.gateway.openai.job_create import requested_spec, resolve
from tunewire.gateway.openai.job_object import job_object, openai_param
from tunewire.gateway.openai.pages import cursor_page, page_body
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

MAX_REQUEST_ID = 128
LIST_PAGE = 200


def request_id_from(request: web.Request) -> str:
    """The SDKs' `Idempotency-Key` (sent with every POST, kept across retries) as the
    trainer's request_id, so a retried create makes one job."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > MAX_REQUEST_ID:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


async def all_jobs(
    calls: TrainerCalls, who: Principal, states=()
) -> AsyncIterator[training_job_pb.TrainingJob]:
    token = ""
    while True:
        page = await calls.training(
            "ListTrainingJobs",
            training_service_pb.ListTrainingJobsRequest(
                page_size=LIST_PAGE, page_token=token, states=states
            ),
            who,
        )
        for job in page.jobs:
            yield job
        token = page.next_page_token
        if not token:
            return


def _metadata_filter(request: web.Request) -> dict[str, str]:
    wanted = {}
    for key, value in request.query.items():
        if key.startswith("metadata[") and key.endswith("]"):
            wanted[key[len("metadata[") : -1]] = value
    return wanted


class JobRoutes:
    def __init__(self, calls: TrainerCalls):
        self._calls = calls

    async def _job(self, who: Principal, job_id: str) -> training_job_pb.TrainingJob:
        reply = await self._calls.training(
            "GetTrainingJob", training_service_pb.GetTrainingJobRequest(job_id=job_id), who
        )
        return reply.job

    async def _train_records(self, who: Principal, dataset_id: str) -> int | None:
        try:
            reply = await self._calls.datasets(
                "GetDataset", dataset_service_pb.GetDatasetRequest(dataset_id=dataset_id), who
            )
        except grpc.aio.AioRpcError:
            return None  # CreateTrainingJob says what is wrong with the file
        return reply.dataset.report.valid_samples or None

    async def create(self, request: web.Request) -> web.Response:
        who = request[PRINCIPAL]
        requested = requested_spec(await fields.json_object(request))
        await self._from_fine_tuned(who, requested.spec)
        records = None
        if requested.auto_epochs or requested.auto_batch_size:
            records = await self._train_records(who, requested.spec.dataset.dataset_id)
        spec = resolve(requested, records)
        try:
            reply = await self._calls.training(
                "CreateTrainingJob",
                training_service_pb.CreateTrainingJobRequest(
                    spec=spec, request_id=request_id_from(request)
                ),
                who,
            )
        except grpc.aio.AioRpcError as err:
            status = self._calls.link.status_of(err)
            _, violations = details(status)
            field = violations[0]["field"] if violations else ""
            raise OpenAIError(status, openai_param(field) if field else None) from None
        return web.json_response(job_object(reply.job))

    async def _from_fine_tuned(self, who: Principal, spec: training_job_pb.TrainingJobSpec) -> None:
        """Fine-tuning a fine-tuned model (`ft:…`, or one of its checkpoints), as OpenAI
        allows: the same base, and the job's adapter as the start, with its settings
        unless the request gives its own under `tunewire`."""
        ref = names.parse_model(spec.model)
        if not ref.fine_tuned:
            return
        job = await fine_tuned_job(self._calls, who, ref)
        spec.model = job.spec.model
        spec.initial_adapter.job_id = job.id
        spec.initial_adapter.checkpoint_step = ref.step
        if not spec.method:
            spec.method = job.spec.method
        if not spec.HasField("lora"):
            spec.lora.CopyFrom(job.spec.lora)
        if not spec.HasField("quantization") and job.spec.HasField("quantization"):
            spec.quantization.CopyFrom(job.spec.quantization)

    async def list(self, request: web.Request) -> web.Response:
        who = request[PRINCIPAL]
        limit = fields.query_limit(request, default=20, high=100)
        wanted = _metadata_filter(request)

        async def matching():
            async for job in all_jobs(self._calls, who):
                if all(job.spec.metadata.get(k) == v for k, v in wanted.items()):
                    yield job

        jobs, more = await cursor_page(
            matching(), lambda j: j.id, request.query.get("after", ""), limit
        )
        return web.json_response(page_body([job_object(j) for j in jobs], more))

    async def retrieve(self, request: web.Request) -> web.Response:
        job = await self._job(request[PRINCIPAL], request.match_info["job_id"])
        return web.json_response(job_object(job))

    async def cancel(self, request: web.Request) -> web.Response:
        reply = await self._calls.training(
            "CancelTrainingJob",
            training_service_pb.CancelTrainingJobRequest(job_id=request.match_info["job_id"]),
            request[PRINCIPAL],
        )
        return web.json_response(job_object(reply.job))

    async def pause(self, request: web.Request) -> web.Response:
        reply = await self._calls.training(
            "PauseTrainingJob",
            training_service_pb.PauseTrainingJobRequest(job_id=request.match_info["job_id"]),
            request[PRINCIPAL],
        )
        return web.json_response(job_object(reply.job))

    async def resume(self, request: web.Request) -> web.Response:
        reply = await self._calls.training(
            "ResumeTrainingJob",
            training_service_pb.ResumeTrainingJobRequest(job_id=request.match_info["job_id"]),
            request[PRINCIPAL],
        )
        return web.json_response(job_object(reply.job))

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/fine_tuning/jobs", authenticated_here(self.create))
        router.add_get("/fine_tuning/jobs", authenticated_here(self.list))
        router.add_get("/fine_tuning/jobs/{job_id}", authenticated_here(self.retrieve))
        router.add_post("/fine_tuning/jobs/{job_id}/cancel", authenticated_here(self.cancel))
        router.add_post("/fine_tuning/jobs/{job_id}/pause", authenticated_here(self.pause))
        router.add_post("/fine_tuning/jobs/{job_id}/resume", authenticated_here(self.resume))
