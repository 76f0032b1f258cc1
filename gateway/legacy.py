"""The seed's port-8200 routes, kept for its clients, as calls of the same RPCs.

    GET  /health                 no key; 503 with status "unhealthy" while the trainer is down
    GET  /status                 server info and your job counts
    POST /train/start            seed body → CreateTrainingJob
    GET  /train                  your jobs (?status=running&limit=20)
    GET  /train/{job_id}/status  one job, with the seed's field names
    POST /train/{job_id}/stop    CancelTrainingJob
    POST /datasets/validate      {"file_path"} inside the trainer's data roots → ValidateDataset
    POST /generate               {"prompt", "model": "fine-tuned/JOB" or a base model, ...} → Generate

Errors are the same google.rpc.Status JSON as everywhere, plus the `detail`
string FastAPI-era clients print.
"""

from __future__ import annotations

import asyncio
import json

import grpc
from aiohttp import web

from tunewire.errors import FieldViolation, invalid_argument
from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.http_errors import StatusError
from tunewire.gateway.legacy_translate import (
    FINE_TUNED_PREFIX,
    STATES_BY_OLD_STATUS,
    dataset_info,
    job_status,
    train_request_to_spec,
    validation_result,
    with_old_field_names,
)
from tunewire.gateway.methods import Method
from tunewire.gateway.trainer_link import TrainerLink
from tunewire.identity import Principal
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

# Long enough for a trainer's first server info (it waits for a one-off probe of
# mlx, seconds on a loaded machine); a trainer that is down answers at once.
HEALTH_TIMEOUT_SECONDS = 20.0
MAX_LIST = 1000


def _legacy(handler, public: bool = False):
    """The route handler for `handler`, marked for the middlewares: errors get
    the old `detail` field; `public` routes need no key."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    route.tunewire_legacy = True
    route.tunewire_public = public
    return route


async def _json_body(request: web.Request) -> dict:
    text = await request.text()
    try:
        body = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise invalid_argument(
            [
                FieldViolation(
                    "body", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                )
            ]
        ) from None
    if not isinstance(body, dict):
        raise invalid_argument([FieldViolation("body", "must be a JSON object")])
    return body


class LegacyApi:
    def __init__(self, link: TrainerLink, methods: dict[str, Method]):
        self._link = link
        self._methods = methods

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

    @staticmethod
    def _features(info: training_service_pb.GetServerInfoResponse) -> dict:
        features = {
            name: name in info.features
            for name in ("lora", "qlora", "dora", "full", "distributed", "wandb")
        }
        return {**features, "dataset_formats": list(info.dataset_formats), "streaming": True}

    async def health(self, request: web.Request) -> web.Response:
        try:
            info = await self._training(
                "GetServerInfo",
                training_service_pb.GetServerInfoRequest(),
                request[PRINCIPAL],
                HEALTH_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as err:
            status = self._link.status_of(err)
            return web.json_response(
                {"status": "unhealthy", "service": "tunewire", "detail": status.message}, status=503
            )
        return web.json_response(
            {
                "status": "healthy",
                "service": "tunewire",
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

    async def status(self, request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        info = await self._training(
            "GetServerInfo", training_service_pb.GetServerInfoRequest(), principal
        )
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
        return web.json_response(
            {
                "status": "running",
                "service": "tunewire",
                "version": info.version,
                "device": info.device,
                "features": self._features(info),
                "active_jobs": info.active_jobs,
                "queued_jobs": info.queued_jobs,
                "jobs": {**counts, "total": sum(counts.values())},
                "caller": {"name": principal.name, "role": principal.role},
                "timestamp": info.time.ToJsonString(),
            }
        )

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
        return web.json_response(
            {
                "job_id": job.id,
                "experiment_name": job.spec.display_name,
                "status": status["status"],
                "state": status["state"],
                "message": f"training job {job.id} queued"
                + (f" (position {job.queue_position})" if job.queue_position else ""),
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
                        "status", f"must be one of {', '.join(STATES_BY_OLD_STATUS)}, got {word!r}"
                    )
                ]
            )
        limit = request.query.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST:
            raise invalid_argument(
                [
                    FieldViolation(
                        "limit", f"must be a whole number from 1 to {MAX_LIST}, got {limit!r}"
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
            {"jobs": [job_status(j) for j in page.jobs], "total": page.total_size}
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
        return web.json_response(
            {
                "job_id": reply.job.id,
                "status": status["status"],
                "state": status["state"],
                "message": "stopped"
                if status["status"] == "cancelled"
                else "stopping: the current step finishes and a checkpoint is written",
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
        model = body.get("model", "")
        prompt = body.get("prompt", "")
        if not isinstance(model, str) or not model:
            raise invalid_argument(
                [
                    FieldViolation(
                        "model", f"is required: '{FINE_TUNED_PREFIX}JOB_ID' or a base model"
                    )
                ]
            )
        if not isinstance(prompt, str) or not prompt:
            raise invalid_argument([FieldViolation("prompt", "is required: the text to continue")])
        message = training_service_pb.GenerateRequest(prompt=prompt)
        if model.startswith(FINE_TUNED_PREFIX):
            message.job_id = model.removeprefix(FINE_TUNED_PREFIX)
        else:
            message.model = model
        for name, kind in (
            ("max_tokens", int),
            ("temperature", float),
            ("top_p", float),
            ("seed", int),
        ):
            value = body.get(name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
            ):
                raise invalid_argument(
                    [
                        FieldViolation(
                            name,
                            f"must be a {'whole ' if kind is int else ''}number, got {value!r}",
                        )
                    ]
                )
            setattr(message, name, value)
        reply = await self._training("Generate", message, request[PRINCIPAL])
        return web.json_response(
            {
                "generated_text": reply.text,
                "model": model,
                "base_model": reply.model,
                "adapter_path": reply.adapter_path or None,
                "prompt": prompt,
                "prompt_tokens": reply.prompt_tokens,
                "generated_tokens": reply.generated_tokens,
                "tokens_per_second": reply.tokens_per_second,
            }
        )


def add_routes(app: web.Application, link: TrainerLink, methods: dict[str, Method]) -> None:
    api = LegacyApi(link, methods)
    app.router.add_get("/health", _legacy(api.health, public=True))
    app.router.add_get("/status", _legacy(api.status))
    app.router.add_post("/train/start", _legacy(api.train_start))
    app.router.add_get("/train", _legacy(api.train_list))
    app.router.add_get("/train/{job_id}/status", _legacy(api.train_status))
    app.router.add_post("/train/{job_id}/stop", _legacy(api.train_stop))
    app.router.add_post("/datasets/validate", _legacy(api.validate))
    app.router.add_post("/generate", _legacy(api.generate))
