"""The thin gRPC servicer of `TrainingService`: proto in, domain call, proto out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

import grpc
from google.protobuf import timestamp_pb2

from tunewire import enum_words
from tunewire.datasets.api import DatasetFormat
from tunewire.errors import handles_errors
from tunewire.trainer.artifacts import download as artifact_download
from tunewire.trainer.artifacts import export as artifact_export
from tunewire.trainer.capabilities import Capabilities
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.identity import identify
from tunewire.trainer.inference.worker_link import InferenceWorker
from tunewire.trainer.jobs import generation
from tunewire.trainer.jobs.manager import JobManager
from tunewire.trainer.protocol import inference
from tunewire.trainer.store.jobs import ACTIVE_STATES
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc
from tunewire.version import __version__

GENERATE_TIMEOUT_SECONDS = 600
# Serialized watch responses kept for subscribers that are a little behind.
WIRE_CACHE_SIZE = 4096
# Every training method the proto has (by its word), then what else this server does.
FEATURES = (*enum_words.words(training_job_pb.TrainingMethod), "distributed", "wandb")
DATASET_FORMATS = tuple(found.value for found in DatasetFormat)  # the library's, in its order


class TrainingService(training_service_grpc.TrainingServiceServicer):
    def __init__(
        self,
        config: TrainerConfig,
        jobs: JobManager,
        capabilities: asyncio.Future[Capabilities],
        inference_worker: InferenceWorker,
    ):
        self._config = config
        self._jobs = jobs
        self._capabilities = capabilities
        self._inference = inference_worker
        self._wire_cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def _who(self, context):
        return identify(context, self._config.internal_token)

    @handles_errors
    async def CreateTrainingJob(self, request, context):
        job = await self._jobs.create(self._who(context), request.spec, request.request_id)
        return training_service_pb.CreateTrainingJobResponse(job=job)

    @handles_errors
    async def UploadAdapter(self, request_iterator, context):
        adapter = await self._jobs.adapters.upload(self._who(context), request_iterator)
        return training_service_pb.UploadAdapterResponse(adapter=adapter)

    @handles_errors
    async def GetTrainingJob(self, request, context):
        return training_service_pb.GetTrainingJobResponse(
            job=self._jobs.get(self._who(context), request.job_id)
        )

    @handles_errors
    async def ListTrainingJobs(self, request, context):
        jobs, token, total = self._jobs.list(
            self._who(context), request.page_size, request.page_token, list(request.states)
        )
        return training_service_pb.ListTrainingJobsResponse(
            jobs=jobs, next_page_token=token, total_size=total
        )

    @handles_errors
    async def CancelTrainingJob(self, request, context):
        job = await self._jobs.cancel(self._who(context), request.job_id, request.force)
        return training_service_pb.CancelTrainingJobResponse(job=job)

    @handles_errors
    async def PauseTrainingJob(self, request, context):
        job = await self._jobs.pause(self._who(context), request.job_id)
        return training_service_pb.PauseTrainingJobResponse(job=job)

    @handles_errors
    async def ResumeTrainingJob(self, request, context):
        job = await self._jobs.resume(self._who(context), request.job_id)
        return training_service_pb.ResumeTrainingJobResponse(job=job)

    @handles_errors
    async def WatchTrainingJob(self, request, context):
        # Responses go out pre-serialized (see `register`): a live event is
        # encoded once, however many subscribers receive it.
        async for event in self._jobs.watch(
            self._who(context), request.job_id, request.after_sequence
        ):
            yield self._wire(event)

    def _wire(self, event) -> bytes:
        key = (event.job_id, event.sequence)
        data = self._wire_cache.get(key)
        if data is None:
            data = training_service_pb.WatchTrainingJobResponse(event=event).SerializeToString()
            self._wire_cache[key] = data
            if len(self._wire_cache) > WIRE_CACHE_SIZE:
                self._wire_cache.popitem(last=False)
        return data

    @handles_errors
    async def GetTrainingJobLog(self, request, context):
        return await asyncio.to_thread(self._jobs.log, self._who(context), request)

    @handles_errors
    async def ListCheckpoints(self, request, context):
        checkpoints = self._jobs.checkpoints(self._who(context), request.job_id)
        best = next((c.step for c in checkpoints if c.best), 0)
        return training_service_pb.ListCheckpointsResponse(checkpoints=checkpoints, best_step=best)

    async def _generation(self, context, request):
        """(model, adapter, the worker's request) for a GenerateRequest."""
        generation.check_request(request)
        who = self._who(context)
        if request.job_id:
            job = self._jobs.get(who, request.job_id)
            model, adapter = generation.model_for_job(job)
            if request.checkpoint_step:
                checkpoints = self._jobs.checkpoints(who, job.id)
                adapter = generation.adapter_at_step(job, checkpoints, request.checkpoint_step)
        else:
            model = await asyncio.to_thread(
                generation.base_model, request.model, self._config.allowed_model_roots
            )
            adapter = None
        call = await asyncio.to_thread(generation.worker_request, model, adapter, request)
        return model, adapter, call

    @handles_errors
    async def Generate(self, request, context):
        model, adapter, call = await self._generation(context, request)
        replies = self._inference.generate(call, GENERATE_TIMEOUT_SECONDS)
        async with contextlib.aclosing(replies):
            async for reply in replies:
                if isinstance(reply, inference.Finished):
                    return generation.summary(reply, model, adapter)
        raise AssertionError("the inference stream ended without a summary")

    @handles_errors
    async def StreamGenerate(self, request, context):
        model, adapter, call = await self._generation(context, request.generate)
        replies = self._inference.generate(call, GENERATE_TIMEOUT_SECONDS)
        async with contextlib.aclosing(replies):
            async for reply in replies:
                if isinstance(reply, inference.Finished):
                    done = generation.summary(reply, model, adapter)
                    yield training_service_pb.StreamGenerateResponse(done=done)
                else:
                    yield training_service_pb.StreamGenerateResponse(text=reply.text)

    @handles_errors
    async def DownloadArtifact(self, request, context):
        who = self._who(context)
        job = self._jobs.get(who, request.job_id)
        checkpoints = (
            self._jobs.checkpoints(who, job.id)
            if request.kind == training_service_pb.ARTIFACT_KIND_CHECKPOINT
            else []
        )
        async for message in artifact_download.stream(job, request, checkpoints):
            yield message

    @handles_errors
    async def ExportArtifact(self, request, context):
        job = self._jobs.get(self._who(context), request.job_id)
        async for message in artifact_export.stream(self._config.python, job, request):
            yield message

    @handles_errors
    async def GetServerInfo(self, request, context):
        caps = await asyncio.shield(self._capabilities)
        active = self._jobs.count_in_states(ACTIVE_STATES)
        queued = self._jobs.count_in_states([training_job_pb.JOB_STATE_QUEUED])
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        return training_service_pb.GetServerInfoResponse(
            version=__version__,
            service="tunewire-trainer",
            features=list(FEATURES),
            dataset_formats=list(DATASET_FORMATS),
            device=caps.device,
            mlx_version=caps.mlx_version,
            mlx_lm_version=caps.mlx_lm_version,
            fast_blas=caps.fast_blas,
            active_jobs=active,
            queued_jobs=queued,
            time=now,
            distributed_backends=caps.backends,
            inference=self._inference.info(),
        )


class _HandlerCapture:
    """Stands in for a server to collect the generated code's method handlers."""

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.service, self.handlers = service, handlers


def register(servicer: TrainingService, server: grpc.aio.Server) -> None:
    """Adds the service to `server` as the generated code does, except that
    WatchTrainingJob's responses are bytes already (no serializer)."""
    capture = _HandlerCapture()
    training_service_grpc.add_TrainingServiceServicer_to_server(servicer, capture)
    capture.handlers["WatchTrainingJob"] = grpc.unary_stream_rpc_method_handler(
        servicer.WatchTrainingJob,
        request_deserializer=training_service_pb.WatchTrainingJobRequest.FromString,
        response_serializer=None,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, capture.handlers),)
    )
    server.add_registered_method_handlers(capture.service, capture.handlers)
