"""The seed's port-8200 routes, kept for its clients, as calls of the same RPCs.

    GET  /health                 no key; 503 with status "unhealthy" while the trainer is down
    GET  /status                 server info (no key needed); with a key, your job counts too
    GET  /providers              no key; the LLM providers (the local MLX one)
    POST /train/start            seed body → CreateTrainingJob
    GET  /train                  your jobs (?status=running&limit=20)
    GET  /train/{job_id}/status  one job, with the seed's field names
    POST /train/{job_id}/stop    CancelTrainingJob
    POST /datasets/validate      {"file_path"} inside the trainer's data roots → ValidateDataset
    POST /generate               {"prompt", "model": "fine-tuned/JOB" or a base model, ...} → Generate

Errors are the same google.rpc.Status JSON as everywhere, plus the seed's
`detail`, `status_code` and `error_type`; a body or query the gateway cannot
read is 422 (as FastAPI answered), the trainer's refusals keep their status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
from aiohttp import web

from tunewire.errors import FieldViolation, ServiceError, clip, invalid_argument
from tunewire.gateway import json_body
from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.http_errors import StatusError
from tunewire.gateway.legacy_translate import (
    generate_request,
    train_request_to_spec,
    with_old_field_names,
)
from tunewire.gateway.legacy_views import (
    PROVIDER,
    STATES_BY_OLD_STATUS,
    dataset_info,
    job_status,
    job_summary,
    providers,
    validation_result,
)
from tunewire.gateway.methods import Method
from tunewire.gateway.server_info import ServerInfoCache
from tunewire.gateway.trainer_link import TrainerLink
from tunewire.identity import ANONYMOUS, Principal
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.version import __version__

# How long /health and /status wait for fresh server info before answering with
# the last known (the trainer's first answer waits for its probe of mlx, which
# takes long on a loaded machine; liveness must not).
INFO_WAIT_SECONDS = 2.0
MAX_LIST = 1000
# The seed's status code for a body or query that does not fit the route (FastAPI's).
UNPROCESSABLE = 422


def _legacy(handler, public: bool = False):
    """The route handler for `handler`, marked for the middlewares: errors get
    the seed's fields; `public` routes need no key. The gateway's own refusals
    of a request (its body, its query) are 422."""

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            raise StatusError(exc.to_status(), http_status=UNPROCESSABLE) from None

    route.tunewire_legacy = True
    route.tunewire_public = public
    return route


async def _json_body(request: web.Request) -> dict:
    data = await request.read()
    if not data.strip():
        return {}
    body = json_body.loads(data)
    if not isinstance(body, dict):
        raise invalid_argument([FieldViolation("body", "must be a JSON object")])
    return body


def _is_anonymous(principal: Principal) -> bool:
    return principal is ANONYMOUS or principal == ANONYMOUS


def _local_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


class LegacyApi:
    def __init__(
        self, link: TrainerLink, methods: dict[str, Method], serving: Callable[[], bool | None]
    ):
        self._link = link
        self._methods = methods
        self._serving = serving
        self._info = ServerInfoCache(self._fetch_info)

    def close(self) -> None:
        self._info.close()

    async def _call(
        self, service: str, name: str, message, principal: Principal, timeout: float | None = None
    ):
        method = self._methods[f"/tunewire.v1.{service}/{name}"]
        data = await self._link.unary(method, message.SerializeToString(), principal, timeout)
        return method.response_class.FromString(data)

    async def _training(
        self, name: str, message, principal: Principal, timeout: float | None = None
    ):
        return await self._call("TrainingService", name, message, principal, timeout)

    async def _fetch_info(self, timeout: float) -> training_service_pb.GetServerInfoResponse:
        return await self._training(
            "GetServerInfo", training_service_pb.GetServerInfoRequest(), ANONYMOUS, timeout
        )

    @staticmethod
    def _features(info: training_service_pb.GetServerInfoResponse) -> dict:
        features = {
            name: name in info.features
            for name in ("lora", "qlora", "dora", "full", "distributed", "wandb")
        }
        return {**features, "dataset_formats": list(info.dataset_formats), "streaming": True}

    def _trainer_down(self) -> str | None:
        """Why the trainer cannot be reached now (None while it serves)."""
        if self._serving() is False:
            return "the trainer is not serving (down, starting or stopping)"
        error = self._info.error
        if isinstance(error, grpc.aio.AioRpcError) and self._info.last is None:
            return self._link.status_of(error).message
        return None

    async def health(self, request: web.Request) -> web.Response:
        info = await self._info.get(INFO_WAIT_SECONDS)
        down = self._trainer_down()
        if down:
            return web.json_response(
                {"status": "unhealthy", "service": "tunewire", "detail": down}, status=503
            )
        body: dict = {"status": "healthy", "service": "tunewire", "version": __version__}
        if info is None:
            # Alive and serving; its capabilities are not known yet.
            body["detail"] = "the trainer is still probing its worker environment"
            return web.json_response(body)
        body.update(
            {
                "version": info.version,
                "features": self._features(info),
                "active_jobs": info.active_jobs,
                "queued_jobs": info.queued_jobs,
                "device": info.device,
                "mlx_version": info.mlx_version,
                "mlx_lm_version": info.mlx_lm_version,
                "fast_blas": info.fast_blas,
                "timestamp": info.time.ToJsonString(),
            }
        )
        return web.json_response(body)

    async def providers(self, request: web.Request) -> web.Response:
        info = await self._info.get(INFO_WAIT_SECONDS)
        available = self._trainer_down() is None and bool(info is None or info.mlx_version)
        return web.json_response(providers(available))

    async def status(self, request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        info = await self._info.get(INFO_WAIT_SECONDS)
        if info is None:  # nothing known yet: wait for the trainer, as a call would
            info = await self._fetch_info(INFO_WAIT_SECONDS * 10)
        body = {
            "status": "running",
            "service": "tunewire",
            "version": info.version,
            "port": _local_port(request),
            "active_training_jobs": info.active_jobs,
            "llm_providers": {"active_provider": PROVIDER, "available_providers": [PROVIDER]},
            "device": info.device,
            "features": self._features(info),
            "active_jobs": info.active_jobs,
            "queued_jobs": info.queued_jobs,
            "timestamp": info.time.ToJsonString(),
        }
        if _is_anonymous(principal):  # the seed's quick start calls it without a key
            return web.json_response(body)
        words = list(STATES_BY_OLD_STATUS)
        pages = await asyncio.gather(
            *(
                self._training(
                    "ListTrainingJobs",
                    training_service_pb.ListTrainingJobsRequest(
                        page_size=1, states=STATES_BY_OLD_STATUS[w]
                    ),
                    principal,
                )
                for w in words
            )
        )
        counts = {w: page.total_size for w, page in zip(words, pages)}
        body["jobs"] = {**counts, "total": sum(counts.values())}
        body["caller"] = {"name": principal.name, "role": principal.role}
        return web.json_response(body)

    async def train_start(self, request: web.Request) -> web.Response:
        spec, given, warnings = train_request_to_spec(await _json_body(request))
        try:
            reply = await self._training(
                "CreateTrainingJob",
                training_service_pb.CreateTrainingJobRequest(spec=spec),
                request[PRINCIPAL],
            )
        except grpc.aio.AioRpcError as err:
            raise StatusError(with_old_field_names(self._link.status_of(err))) from None
        job = reply.job
        info = dataset_info(job)
        declared = given["dataset_format"]
        if declared != "auto" and info["format"] and declared != info["format"]:
            warnings.append(
                f"dataset_format says {declared!r} but the records are {info['format']!r}; "
                f"trained as {info['format']!r}"
            )
        status = job_status(job)
        eta = status["progress"]["eta_seconds"]
        return web.json_response(
            {
                "job_id": job.id,
                "experiment_name": job.spec.display_name,
                "status": status["status"],
                "message": f"training job {job.id} queued"
                + (f" (position {job.queue_position})" if job.queue_position else ""),
                # Known once the first steps have run; the status route says it then.
                "estimated_time": f"{eta} s"
                if eta is not None
                else f"known after the first steps: GET /train/{job.id}/status, progress.eta_seconds",
                "state": status["state"],
                "method": status["method"],
                "lora_enabled": status["lora_enabled"],
                "queue_position": job.queue_position,
                "dataset_info": {**info, "declared_format": declared},
                "output_dir": job.artifacts.output_dir,
                "requested_output_dir": given["output_dir"],
                "created_at": status["created_at"],
                "warnings": warnings,
            }
        )

    async def train_list(self, request: web.Request) -> web.Response:
        word = request.query.get("status", "")
        if word and word not in STATES_BY_OLD_STATUS:
            raise invalid_argument(
                [
                    FieldViolation(
                        "status",
                        f"must be one of {', '.join(STATES_BY_OLD_STATUS)}, "
                        f"got {clip(repr(word), 60)}",
                    )
                ]
            )
        limit = request.query.get("limit", "50")
        if not limit.isdigit() or len(limit) > 6 or not 1 <= int(limit) <= MAX_LIST:
            raise invalid_argument(
                [
                    FieldViolation(
                        "limit",
                        f"must be a whole number from 1 to {MAX_LIST}, got {clip(repr(limit), 60)}",
                    )
                ]
            )
        page = await self._training(
            "ListTrainingJobs",
            training_service_pb.ListTrainingJobsRequest(
                page_size=int(limit), states=STATES_BY_OLD_STATUS.get(word, [])
            ),
            request[PRINCIPAL],
        )
        return web.json_response(
            {
                "training_jobs": [job_summary(j) for j in page.jobs],
                "jobs": [job_status(j) for j in page.jobs],
                "total": page.total_size,
            }
        )

    async def train_status(self, request: web.Request) -> web.Response:
        reply = await self._training(
            "GetTrainingJob",
            training_service_pb.GetTrainingJobRequest(job_id=request.match_info["job_id"]),
            request[PRINCIPAL],
        )
        return web.json_response(job_status(reply.job))

    async def train_stop(self, request: web.Request) -> web.Response:
        force = request.query.get("force", "false").lower() in ("1", "true")
        reply = await self._training(
            "CancelTrainingJob",
            training_service_pb.CancelTrainingJobRequest(
                job_id=request.match_info["job_id"], force=force
            ),
            request[PRINCIPAL],
        )
        status = job_status(reply.job)
        stopped = status["status"] == "cancelled"
        return web.json_response(
            {
                "experiment_name": reply.job.spec.display_name,
                # The seed's word for an accepted stop; `state` says where it is.
                "status": "stopping",
                "message": "stopped before it started"
                if stopped
                else "stopping: the current step finishes and a checkpoint is written",
                "job_id": reply.job.id,
                "state": status["state"],
                "stopped": stopped,
            }
        )

    async def validate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        path = body.get("file_path")
        if not isinstance(path, str) or not path:
            raise invalid_argument(
                [
                    FieldViolation(
                        "file_path", "is required: a path on the server inside its data roots"
                    )
                ]
            )
        reply = await self._call(
            "DatasetService",
            "ValidateDataset",
            dataset_service_pb.ValidateDatasetRequest(
                path=path, options=dataset_service_pb.ValidationOptions(preview_records=3)
            ),
            request[PRINCIPAL],
        )
        return web.json_response(validation_result(reply.report, path))

    async def generate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        message = generate_request(body)
        model = body["model"]
        started = time.monotonic()
        reply = await self._training("Generate", message, request[PRINCIPAL])
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        return web.json_response(
            {
                "text": reply.text,
                "model": model,
                "provider": PROVIDER,
                "tokens_generated": reply.generated_tokens,
                "generation_time_ms": elapsed_ms,
                "generated_text": reply.text,
                "base_model": reply.model,
                "adapter_path": reply.adapter_path or None,
                "prompt": message.prompt,
                "prompt_tokens": reply.prompt_tokens,
                "generated_tokens": reply.generated_tokens,
                "tokens_per_second": reply.tokens_per_second,
            }
        )


def add_routes(
    app: web.Application,
    link: TrainerLink,
    methods: dict[str, Method],
    serving: Callable[[], bool | None],
) -> LegacyApi:
    """The seed's routes; `serving` says whether the trainer's health is SERVING."""
    api = LegacyApi(link, methods, serving)
    app.router.add_get("/health", _legacy(api.health, public=True))
    app.router.add_get("/status", _legacy(api.status, public=True))
    app.router.add_get("/providers", _legacy(api.providers, public=True))
    app.router.add_post("/train/start", _legacy(api.train_start))
    app.router.add_get("/train", _legacy(api.train_list))
    app.router.add_get("/train/{job_id}/status", _legacy(api.train_status))
    app.router.add_post("/train/{job_id}/stop", _legacy(api.train_stop))
    app.router.add_post("/datasets/validate", _legacy(api.validate))
    app.router.add_post("/generate", _legacy(api.generate))

    async def close(_app: web.Application) -> None:
        api.close()

    app.on_cleanup.append(close)
    return api
