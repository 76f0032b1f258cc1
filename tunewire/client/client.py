"""`Client`: tunewire's API from Python, synchronous, over the generated stubs.

    from tunewire.client import Client

    with Client("localhost:50051") as tw:          # key: TUNEWIRE_API_KEY
        job = tw.create_job(model="Qwen/Qwen2.5-0.5B-Instruct",
                            dataset={"path": "data/train.jsonl"},
                            hyperparameters={"max_steps": 100})
        for event in tw.watch(job.id):             # reconnects by itself
            print(event)

Works against the gateway (with a key) and against the trainer directly (with
the trainer's internal credential, found by itself on the trainer's host).
Every failure is a `TunewireError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunewire import addresses
from tunewire.client.adapters import upload_adapter
from tunewire.client.dev_key import resolve_api_key, resolve_credential
from tunewire.client.download import ArtifactDownloader, Downloaded
from tunewire.client.errors import TunewireError, Violation, from_rpc_error
from tunewire.client.export import Exported
from tunewire.client.export import export as export_artifact
from tunewire.client.spec import SpecError, spec_from_dict
from tunewire.client.watch import watch_events
from tunewire.identity import AUTHORIZATION_HEADER, INTERNAL_TOKEN_HEADER
from tunewire.reasons import Reason
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

DEFAULT_ADDRESS = addresses.DEFAULT_CLIENT
DEFAULT_TIMEOUT = 30.0
GENERATE_TIMEOUT = 600.0
UPLOAD_CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 64 << 20
TERMINAL_STATES = frozenset(
    {
        training_job_pb.JOB_STATE_SUCCEEDED,
        training_job_pb.JOB_STATE_FAILED,
        training_job_pb.JOB_STATE_CANCELLED,
    }
)
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A server that comes back is found within ~2 s, not after gRPC's default
    # backoff of up to two minutes (the watch's reconnects rely on it).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def default_address(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("TUNEWIRE_ADDRESS") or DEFAULT_ADDRESS


class Client:
    """A connection to a tunewire gateway or trainer.

    address: host:port (default $TUNEWIRE_ADDRESS or localhost:50051).
    api_key: default $TUNEWIRE_API_KEY (or $MLX_TRAINING_API_KEY), else the
        development key of a `tunewire server` on this machine; "" sends none.
    timeout: seconds for each unary call (generation and uploads get longer).
    credential: the trainer's internal credential, for calls to the trainer
        itself; default $TUNEWIRE_INTERNAL_TOKEN, else $TUNEWIRE_HOME/internal-token
        for an address on this host; "" sends none.
    """

    def __init__(
        self,
        address: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credential: str | None = None,
    ):
        self.address = address or default_address()
        self.timeout = timeout
        key = resolve_api_key(api_key, self.address)
        token = resolve_credential(credential, self.address)
        self._metadata = ((AUTHORIZATION_HEADER, f"Bearer {key}"),) if key else ()
        if token:
            self._metadata += ((INTERNAL_TOKEN_HEADER, token),)
        self._channel = grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self._training = training_service_grpc.TrainingServiceStub(self._channel)
        self._datasets = dataset_service_grpc.DatasetServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # ---- plumbing --------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self.address) from None

    # ---- server --------------------------------------------------------------------

    def server_info(self) -> training_service_pb.GetServerInfoResponse:
        return self._call(self._training.GetServerInfo, training_service_pb.GetServerInfoRequest())

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status ("SERVING", "NOT_SERVING", ...) of `service` ("" = the server)."""
        reply = self._call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout=5.0
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # ---- jobs --------------------------------------------------------------------------

    def create_job(
        self,
        spec: training_job_pb.TrainingJobSpec | Mapping | None = None,
        *,
        request_id: str | None = None,
        **fields,
    ) -> training_job_pb.TrainingJob:
        """Queues a job. `spec` is a TrainingJobSpec or a mapping with its keys
        (`{"model": ..., "dataset": {"path": ...}, "method": "qlora"}`); keyword
        arguments are the same keys. Keys or values that cannot be a spec raise
        INVALID_ARGUMENT before any call, with violations as the server words them."""
        if isinstance(spec, training_job_pb.TrainingJobSpec):
            if fields:
                raise TypeError("give either a TrainingJobSpec or keyword fields, not both")
        else:
            try:
                spec = spec_from_dict({**(spec or {}), **fields})
            except SpecError as error:
                raise TunewireError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"invalid spec: {error}",
                    violations=[Violation(f"spec.{path}", why) for path, why in error.problems],
                    reason=Reason.INVALID_ARGUMENT,
                    address=self.address,
                ) from None
        request = training_service_pb.CreateTrainingJobRequest(
            spec=spec, request_id=request_id or ""
        )
        return self._call(self._training.CreateTrainingJob, request).job

    def get_job(self, job_id: str) -> training_job_pb.TrainingJob:
        return self._call(
            self._training.GetTrainingJob, training_service_pb.GetTrainingJobRequest(job_id=job_id)
        ).job

    def list_jobs(
        self, states: Iterable[int] = (), *, limit: int | None = None
    ) -> list[training_job_pb.TrainingJob]:
        """Jobs, newest first, every page (or the first `limit`)."""
        jobs: list[training_job_pb.TrainingJob] = []
        token = ""
        while True:
            size = min(1000, limit - len(jobs)) if limit else 200
            request = training_service_pb.ListTrainingJobsRequest(
                page_size=size, page_token=token, states=list(states)
            )
            page = self._call(self._training.ListTrainingJobs, request)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token or (limit and len(jobs) >= limit):
                return jobs

    def cancel_job(self, job_id: str, *, force: bool = False) -> training_job_pb.TrainingJob:
        request = training_service_pb.CancelTrainingJobRequest(job_id=job_id, force=force)
        return self._call(self._training.CancelTrainingJob, request).job

    def pause_job(self, job_id: str) -> training_job_pb.TrainingJob:
        """Pauses a job: it checkpoints and stops; `resume_job` continues it."""
        request = training_service_pb.PauseTrainingJobRequest(job_id=job_id)
        return self._call(self._training.PauseTrainingJob, request).job

    def resume_job(self, job_id: str) -> training_job_pb.TrainingJob:
        """Queues a PAUSED job again, to continue from its last checkpoint."""
        request = training_service_pb.ResumeTrainingJobRequest(job_id=job_id)
        return self._call(self._training.ResumeTrainingJob, request).job

    def log_page(
        self,
        job_id: str,
        *,
        rank: int = 0,
        lines: int = 0,
        page_token: str = "",
        tail: bool = False,
    ) -> training_service_pb.GetTrainingJobLogResponse:
        """A page of a job's log (yours, or any as an admin); see GetTrainingJobLog."""
        request = training_service_pb.GetTrainingJobLogRequest(
            job_id=job_id, rank=rank, page_size=lines, page_token=page_token, tail=tail
        )
        return self._call(self._training.GetTrainingJobLog, request)

    def checkpoints(self, job_id: str) -> training_service_pb.ListCheckpointsResponse:
        return self._call(
            self._training.ListCheckpoints,
            training_service_pb.ListCheckpointsRequest(job_id=job_id),
        )

    def watch(
        self,
        job_id: str,
        after_sequence: int = 0,
        *,
        reconnect: bool = True,
        give_up_after: float = 120.0,
        on_reconnect: Callable[[TunewireError, int], None] | None = None,
    ) -> Iterator[training_event_pb.TrainingEvent]:
        """The job's events after `after_sequence`, then live ones, until the
        terminal one. When the stream breaks (server restarting, connection
        dropped, subscriber too slow) it reconnects with the last sequence it
        yielded, so every event comes exactly once; it gives up after
        `give_up_after` seconds without getting through. `on_reconnect(error,
        last_sequence)` is called before each new attempt."""

        def opener(after):
            return self._training.WatchTrainingJob(
                training_service_pb.WatchTrainingJobRequest(job_id=job_id, after_sequence=after),
                metadata=self._metadata,
            )

        return watch_events(
            opener,
            after_sequence,
            address=self.address,
            job_finished=lambda: self._finished(job_id),
            reconnect=reconnect,
            give_up_after=give_up_after,
            on_reconnect=on_reconnect,
        )

    def _finished(self, job_id: str) -> bool:
        try:
            return self.get_job(job_id).state in TERMINAL_STATES
        except TunewireError as error:
            if error.retryable:
                return False  # cannot tell yet: the watch reconnects and asks again
            raise

    def wait(self, job_id: str, **watch_options) -> training_job_pb.TrainingJob:
        """Blocks until the job ends; returns it in its terminal state."""
        for _ in self.watch(job_id, **watch_options):
            pass
        return self.get_job(job_id)

    def generate(
        self,
        job_id: str = "",
        prompt: str = "",
        *,
        messages: Iterable[Mapping[str, str]] = (),
        model: str = "",
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> training_service_pb.GenerateResponse:
        """Text from a job's adapter (or a base `model`), for a plain `prompt` or
        chat `messages` ([{"role": "user", "content": ...}])."""
        request = training_service_pb.GenerateRequest(
            job_id=job_id,
            model=model,
            prompt=prompt,
            messages=[
                training_service_pb.ChatMessage(role=m["role"], content=m["content"])
                for m in messages
            ],
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        return self._call(self._training.Generate, request, timeout=GENERATE_TIMEOUT)

    # ---- datasets ----------------------------------------------------------------------

    def download(
        self,
        job_id: str,
        folder: str | Path,
        *,
        checkpoint: int | None = None,
        kind: str = "",
        progress=None,
    ) -> Downloaded:
        """Downloads a job's adapter (or FULL model; `kind="model"`), or with
        `checkpoint` that checkpoint's adapter, into `folder`, each file checked
        against the server's SHA-256; an interrupted download resumes."""
        request = training_service_pb.DownloadArtifactRequest(job_id=job_id)
        if checkpoint is not None:
            request.kind, request.checkpoint_step = (
                training_service_pb.ARTIFACT_KIND_CHECKPOINT,
                checkpoint,
            )
        elif kind:
            request.kind = training_service_pb.ArtifactKind.Value(f"ARTIFACT_KIND_{kind.upper()}")
        downloader = ArtifactDownloader(self._training, self._metadata, self.address)
        return downloader.download(request, Path(folder), progress)

    def export(
        self, job_id: str, fmt: str, path: str | os.PathLike, *, tensor_type: str = ""
    ) -> Exported:
        """A finished job's adapter as `fmt` ("gguf-adapter", "gguf" merged, "mlx" fused
        folder) at `path`, checked against the server's SHA-256; `tensor_type` as the
        server's ExportArtifact takes it ("f16", "q8_0", ...). Made on the server on the
        first request; an interrupted transfer resumes."""
        return export_artifact(
            self._training, self._metadata, self.address, job_id, fmt, Path(path), tensor_type
        )

    def upload_dataset(
        self,
        path: str | os.PathLike,
        *,
        display_name: str | None = None,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        timeout: float = 3600.0,
    ) -> dataset_pb.Dataset:
        """Streams a local file to the server in chunks; returns the stored
        dataset with its validation report (uploading the same bytes again
        returns the same dataset)."""
        path = Path(path)
        with path.open("rb") as f:  # opened here so a missing file fails before any call
            metadata = dataset_service_pb.UploadMetadata(display_name=display_name or path.name)

            def requests() -> Iterator[dataset_service_pb.UploadDatasetRequest]:
                yield dataset_service_pb.UploadDatasetRequest(metadata=metadata)
                while chunk := f.read(chunk_bytes):
                    yield dataset_service_pb.UploadDatasetRequest(chunk=chunk)

            return self._call(self._datasets.UploadDataset, requests(), timeout=timeout).dataset

    def upload_adapter(
        self, folder: str | os.PathLike, *, display_name: str | None = None, timeout: float = 3600.0
    ) -> training_service_pb.Adapter:
        """Uploads an adapter folder (adapters.safetensors, adapter_config.json) to start jobs
        from with `initial_adapter.adapter_id`; the same files again give the same id."""
        return upload_adapter(
            self._call, self._training, Path(folder), display_name, UPLOAD_CHUNK_BYTES, timeout
        )

    def validate_dataset(
        self,
        *,
        dataset_id: str = "",
        content: bytes | None = None,
        path: str = "",
        max_issues: int = 100,
        preview_records: int = 3,
        tokenizer: str = "",
        max_tokens: int = 0,
    ) -> dataset_pb.ValidationReport:
        """Validates a stored dataset, inline `content`, or a `path` on the server."""
        given = [
            name
            for name, value in (("dataset_id", dataset_id), ("content", content), ("path", path))
            if value not in ("", None)
        ]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of dataset_id, content and path (got {', '.join(given) or 'none'})"
            )
        options = dataset_service_pb.ValidationOptions(
            max_issues=max_issues,
            preview_records=preview_records,
            tokenizer=tokenizer,
            max_tokens=max_tokens,
        )
        request = dataset_service_pb.ValidateDatasetRequest(options=options)
        if dataset_id:
            request.dataset_id = dataset_id
        elif content is not None:
            request.content = content
        else:
            request.path = path
        return self._call(self._datasets.ValidateDataset, request, timeout=600.0).report

    def list_datasets(self, *, limit: int | None = None) -> list[dataset_pb.Dataset]:
        datasets: list[dataset_pb.Dataset] = []
        token = ""
        while True:
            size = min(1000, limit - len(datasets)) if limit else 200
            page = self._call(
                self._datasets.ListDatasets,
                dataset_service_pb.ListDatasetsRequest(page_size=size, page_token=token),
            )
            datasets.extend(page.datasets)
            token = page.next_page_token
            if not token or (limit and len(datasets) >= limit):
                return datasets

    def get_dataset(self, dataset_id: str) -> dataset_pb.Dataset:
        return self._call(
            self._datasets.GetDataset, dataset_service_pb.GetDatasetRequest(dataset_id=dataset_id)
        ).dataset
