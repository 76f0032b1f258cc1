"""The training-job operations behind `TrainingService`, with ownership.

A caller sees only its own jobs unless it is an admin; anyone else's job is
NOT_FOUND (never PERMISSION_DENIED), so existence does not leak.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator

import grpc
from google.rpc import code_pb2

from tunewire import enum_words
from tunewire.errors import (
    FieldViolation,
    ServiceError,
    build_status,
    invalid_argument,
    not_found,
)
from tunewire.identity import Principal
from tunewire.reasons import Reason
from tunewire.trainer.api import paging
from tunewire.trainer.artifacts.uploaded_adapters import UploadedAdapters
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets import files
from tunewire.trainer.jobs import initial_adapter, logs
from tunewire.trainer.jobs import spec as spec_path
from tunewire.trainer.jobs.data import JobDataPreparer
from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.trainer.jobs.runner import JobRunner, state_event
from tunewire.trainer.protocol import job_layout
from tunewire.trainer.store import db
from tunewire.trainer.store.jobs import TERMINAL_STATES, JobStore, now_timestamp
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

MAX_REQUEST_ID = 128
REPLAY_PAGE = 500


class JobManager:
    def __init__(
        self,
        config: TrainerConfig,
        store: JobStore,
        bus: EventBus,
        runner: JobRunner,
        data: JobDataPreparer,
    ):
        self._config = config
        self._store = store
        self._bus = bus
        self._runner = runner
        self._data = data
        self.adapters = UploadedAdapters(config.adapters_dir, config.max_upload_bytes)

    # ---- create ----------------------------------------------------------------

    async def create(
        self, who: Principal, spec: training_job_pb.TrainingJobSpec, request_id: str
    ) -> training_job_pb.TrainingJob:
        if len(request_id) > MAX_REQUEST_ID:
            raise invalid_argument(
                [
                    FieldViolation(
                        "request_id", f"at most {MAX_REQUEST_ID} characters, got {len(request_id)}"
                    )
                ]
            )
        fingerprint = spec_fingerprint(spec)
        if request_id:
            earlier = self._store.find_by_request_id(who.name, request_id)
            if earlier is not None:
                return self._same_request(earlier, request_id, fingerprint)

        job_id = f"job-{secrets.token_hex(6)}"
        job_dir = self._config.jobs_dir / job_id
        resolved = await asyncio.to_thread(
            spec_path.resolve,
            spec,
            job_id=job_id,
            wandb_online_allowed=bool(self._config.wandb_api_key),
            roots=self._config.allowed_roots,
            model_roots=self._config.allowed_model_roots,
        )
        violations = list(resolved.violations)
        slots = self._config.rank_slots
        if slots and not self._config.database and len(resolved.hosts) > slots:
            # Alone on its database, no other trainer could ever claim it: it would wait forever.
            violations.append(
                FieldViolation(
                    "spec.distributed.world_size",
                    f"{len(resolved.hosts)} ranks, but this trainer runs at most {slots} at once "
                    "(--rank-slots)",
                )
            )
        unfit = None if violations else self._runner.no_trainer_for(resolved.spec)
        if unfit is not None and not self._config.database:
            # Alone on its database: nothing could ever claim it.
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                unfit,
                reason=Reason.NO_TRAINER_CAN_RUN,
                violations=[FieldViolation("spec.resources", unfit)],
            )
        initial_file = ""
        if not violations and spec.HasField("initial_adapter") and resolved.model is not None:
            initial_file, adapter_violations = await asyncio.to_thread(
                self._initial_adapter, who, resolved
            )
            violations += adapter_violations
        prepared = None
        # Splitting the data needs a valid fraction; with a refused one the split
        # would fail inside the dataset library (a 500), so the violation stands alone.
        fraction_refused = any(v.field.endswith("validation_fraction") for v in violations)
        if spec.HasField("dataset") and spec.dataset.WhichOneof("source") and not fraction_refused:
            prepared, data_violations = await self._data.prepare(
                who, resolved.spec, job_dir / job_layout.DATA_DIR
            )
            violations += data_violations
        if violations or prepared is None:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise invalid_argument(violations, _summary(violations))

        job = spec_path.new_job(
            resolved,
            job_id=job_id,
            job_dir=job_dir,
            train_path=prepared.train_path,
            validation_path=prepared.validation_path,
        )
        job.state = training_job_pb.JOB_STATE_QUEUED
        if unfit is not None:  # shared: queued, its error saying why it waits
            job.error.CopyFrom(
                build_status(code_pb2.FAILED_PRECONDITION, unfit, Reason.NO_TRAINER_CAN_RUN)
            )
        job.owner = who.name
        job.request_id = request_id
        job.resolved.spec_sha256 = fingerprint
        job.resolved.initial_adapter_path = initial_file
        job.create_time.CopyFrom(now_timestamp())
        job.update_time.CopyFrom(job.create_time)
        job.dataset_details.CopyFrom(prepared.details)
        try:
            self._store.insert(
                job,
                state_event(
                    training_job_pb.JOB_STATE_UNSPECIFIED,
                    training_job_pb.JOB_STATE_QUEUED,
                    f"created by {who.name}",
                ),
            )
        except db.IntegrityError:
            # The same request_id raced with us; the other call created the job.
            shutil.rmtree(job_dir, ignore_errors=True)
            earlier = self._store.find_by_request_id(who.name, request_id)
            if earlier is None:
                raise
            return self._same_request(earlier, request_id, fingerprint)
        except Exception as exc:
            # The database's disk is full (or the write failed otherwise): no job, and
            # none of its files, are left behind.
            shutil.rmtree(job_dir, ignore_errors=True)
            if files.is_disk_full(exc):
                raise files.no_space(self._config.db_path.parent, "the new job") from exc
            raise
        await self._runner.schedule()
        return self._with_queue_position(self._store.get(job_id))

    def _same_request(
        self, earlier: training_job_pb.TrainingJob, request_id: str, fingerprint: str
    ) -> training_job_pb.TrainingJob:
        """The job an earlier create with this request_id made, if it had this spec: the
        spec as first sent, or the job's own resolved spec sent back (what Get returns)."""
        same = fingerprint in (earlier.resolved.spec_sha256, spec_fingerprint(earlier.spec))
        if earlier.resolved.spec_sha256 and not same:
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"request_id {request_id!r} was used for job {earlier.id} with a different "
                "spec; use a new request_id for a new job",
                reason=Reason.REQUEST_ID_REUSED,
                resource_type="training job",
                resource_name=earlier.id,
                violations=[
                    FieldViolation("request_id", f"already names job {earlier.id} (another spec)")
                ],
            )
        return self._with_queue_position(earlier)

    # ---- read --------------------------------------------------------------------

    def _visible(self, who: Principal, job_id: str) -> training_job_pb.TrainingJob:
        if not job_id:
            raise invalid_argument([FieldViolation("job_id", "is required")])
        job = self._store.get(job_id)
        if job is None or not who.can_see(job.owner):
            raise not_found("training job", job_id)
        return job

    def _with_queue_position(self, job: training_job_pb.TrainingJob) -> training_job_pb.TrainingJob:
        if job.state == training_job_pb.JOB_STATE_QUEUED:
            queued = self._store.queued_ids()
            job.queue_position = queued.index(job.id) + 1 if job.id in queued else 0
        return job

    def get(self, who: Principal, job_id: str) -> training_job_pb.TrainingJob:
        return self._with_queue_position(self._visible(who, job_id))

    def list(
        self, who: Principal, page_size: int, page_token: str, states
    ) -> tuple[list, str, int]:
        for i, state in enumerate(states):
            if state not in training_job_pb.JobState.values():
                raise invalid_argument([FieldViolation(f"states[{i}]", f"unknown state {state}")])
        owner = None if who.admin else who.name
        asked = paging.page(page_size, page_token, "jobs", owner, sorted(states))
        page = self._store.list(owner=owner, states=states, offset=asked.offset, limit=asked.limit)
        queued = self._store.queued_ids()
        for job in page.jobs:
            if job.state == training_job_pb.JOB_STATE_QUEUED and job.id in queued:
                job.queue_position = queued.index(job.id) + 1
        return page.jobs, asked.next_token(page.next_offset is not None), page.total

    def count_in_states(self, states) -> int:
        return self._store.count(states)

    def log(
        self, who: Principal, request: training_service_pb.GetTrainingJobLogRequest
    ) -> training_service_pb.GetTrainingJobLogResponse:
        """A page of the job's log, for its owner or an admin (others: NOT_FOUND)."""
        job = self._visible(who, request.job_id)
        world = max(1, job.distributed.world_size)
        if not 0 <= request.rank < world:
            raise invalid_argument(
                [FieldViolation("rank", f"the job has ranks 0 to {world - 1}, got {request.rank}")]
            )
        where = paging.page(
            request.page_size or logs.DEFAULT_LINES,
            request.page_token,
            who.name,
            job.id,
            request.rank,
        )
        path = self._config.jobs_dir / job.id / job_layout.rank_log_file(request.rank)
        got = logs.read_page(
            path,
            where.offset,
            where.limit,
            tail=request.tail and not request.page_token,
            secrets=(self._config.internal_token, self._config.wandb_api_key),
        )
        return training_service_pb.GetTrainingJobLogResponse(
            lines=got.lines,
            next_page_token=where.token_at(got.next_offset),
            size_bytes=got.size,
            at_end=got.at_end,
        )

    def checkpoints(self, who: Principal, job_id: str) -> list[training_job_pb.Checkpoint]:
        self._visible(who, job_id)
        kept = []
        for checkpoint in self._store.checkpoints(job_id):
            if os.path.isdir(checkpoint.path):
                kept.append(checkpoint)
            else:  # pruned by the worker (keep_last)
                self._store.delete_checkpoint(job_id, checkpoint.step)
        return kept

    # ---- cancel --------------------------------------------------------------------

    async def cancel(self, who: Principal, job_id: str, force: bool) -> training_job_pb.TrainingJob:
        job = self._visible(who, job_id)
        if job.state in TERMINAL_STATES:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {job_id} already ended ({enum_words.display_word(training_job_pb.JobState, job.state).upper()})",
                reason=Reason.JOB_ALREADY_ENDED,
                resource_type="training job",
                resource_name=job_id,
            )
        job = await self._runner.cancel(job_id, who.name, force)
        await self._runner.schedule()
        return self._with_queue_position(self._store.get(job_id))

    def _initial_adapter(self, who: Principal, resolved) -> tuple[str, list[FieldViolation]]:
        def job_adapter(job_id: str, step: int) -> str:
            job = self._visible(who, job_id)
            if step:
                found = next((c for c in self._store.checkpoints(job_id) if c.step == step), None)
                if found is None:
                    raise initial_adapter.AdapterUnusable(
                        f"job {job_id} has no checkpoint at step {step}"
                    )
                return found.path
            if not job.artifacts.adapter_path:
                state = enum_words.display_word(training_job_pb.JobState, job.state).upper()
                raise initial_adapter.AdapterUnusable(
                    f"job {job_id} has no adapter (state {state}); name one of its checkpoints"
                )
            return job.artifacts.adapter_path

        try:
            folder = initial_adapter.source_dir(
                resolved.spec.initial_adapter,
                job_adapter,
                self._config.allowed_roots,
                lambda adapter_id: self.adapters.folder(who, adapter_id),
            )
        except initial_adapter.AdapterUnusable as exc:
            return "", [FieldViolation(initial_adapter.FIELD, str(exc))]
        return initial_adapter.check(folder, resolved.spec, resolved.model)

    async def pause(self, who: Principal, job_id: str) -> training_job_pb.TrainingJob:
        job = self._visible(who, job_id)
        pausable = (training_job_pb.JOB_STATE_PAUSED, training_job_pb.JOB_STATE_CANCELLING)
        if job.state in TERMINAL_STATES or job.state == pausable[1]:
            raise _state_conflict(job, "paused: it is not queued or running")
        if job.state != pausable[0]:
            await self._runner.pause(job_id, who.name)
            await self._runner.schedule()
        return self._with_queue_position(self._store.get(job_id))

    async def resume(self, who: Principal, job_id: str) -> training_job_pb.TrainingJob:
        job = self._visible(who, job_id)
        if job.state != training_job_pb.JOB_STATE_PAUSED:
            raise _state_conflict(job, "resumed: it is not paused")
        self._runner.resume(job_id, who.name)
        await self._runner.schedule()
        return self._with_queue_position(self._store.get(job_id))

    # ---- watch ----------------------------------------------------------------------

    async def watch(
        self, who: Principal, job_id: str, after_sequence: int
    ) -> AsyncIterator[training_event_pb.TrainingEvent]:
        """Replays stored events after `after_sequence`, then tails live ones;
        ends after the terminal state's event."""
        self._visible(who, job_id)
        if after_sequence < 0:
            raise invalid_argument(
                [FieldViolation("after_sequence", f"must be at least 0, got {after_sequence}")]
            )
        # Subscribe before replaying so nothing falls between the two.
        sub = self._bus.subscribe(job_id)
        try:
            last = after_sequence
            while True:
                page = self._store.events_after(job_id, last, REPLAY_PAGE)
                for event in page:
                    yield event
                    last = event.sequence
                    if _is_terminal(event):
                        return
                if len(page) < REPLAY_PAGE:
                    break
            if (
                self._store.get(job_id).state in TERMINAL_STATES
                and last >= self._store.get(job_id).last_event_sequence
            ):
                return
            while True:
                event = await sub.next()
                if event is None:
                    if sub.drop_reason == "slow":
                        raise ServiceError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            "this subscriber fell too far behind and was dropped; "
                            f"watch again with after_sequence={last}",
                            reason=Reason.SUBSCRIBER_TOO_SLOW,
                            metadata={"after_sequence": str(last)},
                            retry_after_seconds=0,
                        )
                    raise ServiceError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the trainer is shutting down; watch again with after_sequence={last}",
                        reason=Reason.TRAINER_STOPPING,
                        metadata={"after_sequence": str(last)},
                        retry_after_seconds=1,
                    )
                if event.sequence <= last:
                    continue
                if event.sequence > last + 1:
                    # Never expected (the bus is fed in order), but a gap is
                    # filled from the store rather than skipped.
                    for missed in self._store.events_after(job_id, last, event.sequence - last - 1):
                        yield missed
                        last = missed.sequence
                yield event
                last = event.sequence
                if _is_terminal(event):
                    return
        finally:
            self._bus.unsubscribe(sub)


def _is_terminal(event: training_event_pb.TrainingEvent) -> bool:
    return event.HasField("state_change") and event.state_change.state in TERMINAL_STATES


def spec_fingerprint(spec: training_job_pb.TrainingJobSpec) -> str:
    """The spec's identity as sent: deterministic bytes (map order fixed), hashed."""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


def _summary(violations: list[FieldViolation]) -> str:
    first = violations[0]
    more = f" (and {len(violations) - 1} more problem(s))" if len(violations) > 1 else ""
    return f"the job cannot run: {first.field}: {first.description}{more}"


def _state_conflict(job: training_job_pb.TrainingJob, what: str) -> ServiceError:
    state = enum_words.display_word(training_job_pb.JobState, job.state).upper()
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"job {job.id} is {state} and cannot be {what}",
        reason=Reason.JOB_STATE_CONFLICT,
        resource_type="training job",
        resource_name=job.id,
    )
