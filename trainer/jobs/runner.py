"""Runs queued jobs: starts their workers, applies what the workers report,
finishes jobs when workers exit, and resumes interrupted jobs on start-up.

Every change to a job goes through `_apply`, which stores the change and its
event in one transaction and only then publishes the event to subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from google.rpc import code_pb2, status_pb2

from tunewire.errors import build_status, reason_of
from tunewire.reasons import Reason
from tunewire.trainer import resources
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.jobs import checkpoints, failures, handoff, job_exit
from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.trainer.jobs.job_exit import RunState
from tunewire.trainer.jobs.rank_commands import rank_commands
from tunewire.trainer.jobs.requeue import Requeue, state_event
from tunewire.trainer.jobs.restarts import RestartPolicy
from tunewire.trainer.jobs.stop_requests import StopRequests
from tunewire.trainer.jobs.worker_events import artifacts_of, log_event, translate
from tunewire.trainer.processes import launch, supervisor
from tunewire.trainer.protocol import attempt_fence
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.commands import Command
from tunewire.trainer.store.jobs import (
    TERMINAL_STATES,
    UNLEASED_STATES,
    JobStore,
    now_timestamp,
)
from tunewire.trainer.store.leases import Expired, Lease, LeaseLost, LeaseStore
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

log = logging.getLogger(__name__)

# How long a trainer passes over a job whose files it cannot see (a share remounted is seen again).
UNREADABLE_RETRY_SECONDS = 60.0
FINISH_ATTEMPTS = 30  # about 20 minutes of retries, the wait doubling up to a minute

_JOB_STATES = {
    protocol.WorkerState.STARTING: training_job_pb.JOB_STATE_STARTING,
    protocol.WorkerState.RUNNING: training_job_pb.JOB_STATE_RUNNING,
}


class JobRunner(StopRequests):
    def __init__(
        self,
        config: TrainerConfig,
        store: JobStore,
        bus: EventBus,
        leases: LeaseStore,
        trainer_id: str,
        shared: bool = False,
    ):
        self._config = config
        self._store = store
        self._bus = bus
        self._leases = leases
        self.trainer_id = trainer_id
        # Other trainers share the database (PostgreSQL): leases decide who runs what.
        self._shared = self.shared = shared
        # The lease of every job this trainer claimed and has not given back;
        # every write for such a job is fenced by it.
        self._held: dict[str, Lease] = {}
        self._running: dict[str, RunState] = {}
        # Jobs whose files this trainer could not see, passed over until the time given.
        self._unreadable: dict[str, float] = {}
        self._requeue = Requeue(config, store, leases, bus)
        self._accepting = True
        self._schedule_lock = asyncio.Lock()
        self._grace_tasks: set[asyncio.Task] = set()
        self._restarts = RestartPolicy(config)
        # What this trainer advertises (device, memory): it claims only jobs that fit it.
        self.offer = resources.offer(config.device, config.memory_gib)

    # ---- applying changes ----------------------------------------------------

    def apply(
        self,
        job_id: str,
        change: Callable[[training_job_pb.TrainingJob], None] | None,
        event: training_event_pb.TrainingEvent | None,
    ) -> training_job_pb.TrainingJob:
        lease = self._held.get(job_id)
        before: list[int] = []

        def tracked(job: training_job_pb.TrainingJob) -> None:
            before.append(job.state)
            if change is not None:
                change(job)

        try:
            job, stored = self._store.update(job_id, tracked, event, lease)
        except LeaseLost as exc:
            log.warning("%s; this trainer stops the job", exc)
            self.lost(job_id)
            return self._store.get(job_id)
        if lease is not None and job.state != before[0] and job.state in UNLEASED_STATES:
            self._held.pop(job_id, None)  # the store released it with that change
        if stored is not None:
            self._bus.publish(stored)
        return job

    def lost(self, job_id: str) -> None:
        """The job's lease is gone (re-queued for another trainer): stop its worker, write nothing."""
        self._held.pop(job_id, None)
        run = self._running.get(job_id)
        if run is not None and not run.abandoned:
            run.abandoned = True
            run.group.kill()

    def set_state(
        self,
        job_id: str,
        state: int,
        reason: str,
        error: status_pb2.Status | None = None,
        extra: Callable[[training_job_pb.TrainingJob], None] | None = None,
    ) -> training_job_pb.TrainingJob:
        event = state_event(training_job_pb.JOB_STATE_UNSPECIFIED, state, reason, error)

        def change(job: training_job_pb.TrainingJob) -> None:
            # Read inside the store's transaction: the event names the state it replaced.
            event.state_change.previous_state = job.state
            job.state = state
            if state == training_job_pb.JOB_STATE_RUNNING and not job.HasField("start_time"):
                job.start_time.CopyFrom(now_timestamp())
            if state in TERMINAL_STATES:
                job.end_time.CopyFrom(now_timestamp())
            if error is not None:
                job.error.CopyFrom(error)
            if extra is not None:
                extra(job)

        return self.apply(job_id, change, event)

    # ---- scheduling ----------------------------------------------------------

    def review_waiting(self, limit: int = 100) -> None:
        """Re-judges why the oldest queued jobs wait (trainers come and go): sets or
        clears NO_TRAINER_CAN_RUN in their error. Writes only what changes, no event."""
        for job_id in self._store.queued_ids()[:limit]:
            if job_id in self._held:
                continue
            job = self._store.get(job_id)
            if job is None:
                continue
            why = self.no_trainer_for(job.spec)
            marked = reason_of(job.error) == Reason.NO_TRAINER_CAN_RUN
            if (why is None) != marked:
                continue  # already says what is true

            def change(j: training_job_pb.TrainingJob, why=why) -> None:
                if j.state != training_job_pb.JOB_STATE_QUEUED:
                    return  # claimed or cancelled meanwhile
                if why is None:
                    j.ClearField("error")
                else:
                    j.error.CopyFrom(
                        build_status(code_pb2.FAILED_PRECONDITION, why, Reason.NO_TRAINER_CAN_RUN)
                    )

            self._store.update(job_id, change)

    def no_trainer_for(self, spec: training_job_pb.TrainingJobSpec) -> str | None:
        """Why no trainer can run a job of `spec` now (its device or memory), or None.
        Alone on its database this trainer is the only one; shared, the live trainers'."""
        offers = [self.offer, *(self._leases.offers() if self._shared else [])]
        if any(resources.fits(spec, o) for o in offers):
            return None
        seen = "; ".join(sorted({o.describe() for o in offers}))
        where = "the live trainers offer" if self._shared else "this trainer offers"
        return (
            f"no trainer can run this job: it needs {resources.describe_needs(spec)} "
            f"(spec.resources), {where} {seen}"
        )

    @property
    def running_ids(self) -> list[str]:
        return list(self._running)

    def worker_pids(self, job_id: str) -> list[int]:
        run = self._running.get(job_id)
        return [p.pid for p in run.group.processes] if run else []

    async def schedule(self) -> None:
        """Starts queued jobs while there is room."""
        async with self._schedule_lock:
            while self._accepting and len(self._running) < self._config.max_running_jobs:
                # SKIP LOCKED: trainers claiming at once take different jobs, none waits.
                now = time.monotonic()
                for job_id, until in list(self._unreadable.items()):
                    if until < now:
                        del self._unreadable[job_id]
                # Passed over: jobs whose files it cannot see, dead workers' jobs waiting
                # out their restart delay.
                passed_over = {*self._unreadable, *self._restarts.waiting()}
                # All of a job's rank slots in the claim's statement, or the job stays queued.
                claimed = self._leases.claim(
                    self.trainer_id,
                    passed_over=passed_over,
                    slots=self._config.rank_slots,
                    offer=self.offer,
                    reserve_after=self._config.reserve_after_seconds,
                )
                if not claimed:
                    return
                lease = claimed[0]
                if self._shared and not (self._config.jobs_dir / lease.job_id).is_dir():
                    # Its files are not on this trainer's artifact root (not shared, not
                    # mounted): leave the job to a trainer that can read them.
                    log.warning(
                        "job %s: its directory is not under %s; leaving it to another trainer",
                        lease.job_id,
                        self._config.jobs_dir,
                    )
                    self._leases.release(lease)
                    self._unreadable[lease.job_id] = now + UNREADABLE_RETRY_SECONDS
                    continue
                self._held[lease.job_id] = lease
                await self._start(lease.job_id)

    async def _start(self, job_id: str) -> None:
        job = self._store.get(job_id)
        job_dir = self._config.jobs_dir / job_id
        if self._shared and not await self._fence(job_id, job_dir):
            return
        try:
            choice = checkpoints.choose(job_dir)
        except OSError as exc:
            choice = checkpoints.Choice(None, [f"cannot check the job's checkpoints: {exc}"])
        for note in choice.set_aside:
            self.apply(job_id, None, log_event(note))
        resume = choice.path
        if resume is not None:
            recorded = {c.step for c in self._store.checkpoints(job_id)}
            resume = checkpoints.recorded_resume_point(job_dir, recorded)
        try:
            # The config is the stored job's, written afresh at every start; the resume
            # point is an argument, so nothing in the file changes between starts.
            config = handoff.worker_config(job)
            config_path = handoff.write_config(job_dir, config)
            argv = launch.worker_argv(config_path, python=self._config.python, resume_from=resume)
            commands = rank_commands(self._config, config, job_dir, argv)
            group = await supervisor.start_group(
                job_id, job_dir, commands, lambda ev, _id=job_id: self._on_worker_event(_id, ev)
            )
        except Exception as exc:
            log.exception("job %s: could not start its worker", job_id)
            self._fail_start(job_id, exc)
            return
        if job_id not in self._held:  # lost (cancelled elsewhere) while the worker started
            group.kill()
            return
        self._running[job_id] = RunState(group=group)
        started = (
            f"{len(commands)} ranks started on {', '.join(job.distributed.hosts)}"
            if len(commands) > 1
            else "worker started"
        )
        if self._shared:
            started += f" on trainer {self.trainer_id} (attempt {self._held[job_id].attempt})"
        reason = (
            f"{started}; resuming from checkpoint at step {int(resume.name)}" if resume else started
        )

        def change(j: training_job_pb.TrainingJob) -> None:
            if resume:
                j.resume_count += 1
            j.distributed.world_size = len(commands)
            if reason_of(j.error) == Reason.NO_TRAINER_CAN_RUN:
                j.ClearField("error")  # a trainer that can run it has it now

        self.set_state(job_id, training_job_pb.JOB_STATE_STARTING, reason, extra=change)
        task = asyncio.create_task(self._await_exit(job_id, group))
        self._grace_tasks.add(task)
        task.add_done_callback(self._grace_tasks.discard)

    async def _fence(self, job_id: str, job_dir) -> bool:
        """Names this attempt the owner of the job's files, before its checkpoints are
        chosen and any of its workers runs: a stale worker of an earlier attempt then
        cannot rename a checkpoint or adapter into them. False if the job was left."""
        lease = self._held[job_id]
        try:
            await asyncio.to_thread(attempt_fence.write, job_dir, lease.attempt)
            return True
        except attempt_fence.FenceBusy as exc:
            # An earlier attempt's worker is inside its check-and-rename (frozen there?):
            # give the job back and try it again later rather than start under it.
            log.warning("job %s: %s; leaving it for now", job_id, exc)
            self._held.pop(job_id, None)
            self._leases.release(lease)
            self._unreadable[job_id] = time.monotonic() + UNREADABLE_RETRY_SECONDS
            return False
        except OSError as exc:
            log.exception("job %s: could not write its attempt", job_id)
            self._fail_start(job_id, exc)
            return False

    def _fail_start(self, job_id: str, exc: Exception) -> None:
        why = failures.one_line(f"could not start the worker: {exc}")
        self.set_state(
            job_id,
            training_job_pb.JOB_STATE_FAILED,
            why,
            build_status(code_pb2.INTERNAL, why, Reason.WORKER_START_FAILED),
        )

    # ---- worker events ---------------------------------------------------------

    async def _on_worker_event(self, job_id: str, event: protocol.Event) -> None:
        run = self._running.get(job_id)
        if isinstance(event, protocol.State):
            self._on_state(job_id, event.state, event.reason)
            return
        if isinstance(event, protocol.Done):
            if run is not None:
                run.done = event
            return
        if isinstance(event, protocol.Error):
            if run is not None:
                run.error = event
            return
        diverged = failures.divergence(event)
        if diverged is not None and run is not None and run.diverged is None:
            run.diverged = diverged
            run.group.kill()
        translation = translate(event)
        if isinstance(event, protocol.Checkpoint) and translation.event is not None:
            checkpoint = translation.event.checkpoint_saved.checkpoint
            lease = self._held.get(job_id)
            try:
                if checkpoint.best:
                    for old in self._store.checkpoints(job_id):
                        if old.best and old.step != checkpoint.step:
                            old.best = False
                            self._store.put_checkpoint(job_id, old, lease)
                self._store.put_checkpoint(job_id, checkpoint, lease)
            except LeaseLost as exc:
                log.warning("%s; this trainer stops the job", exc)
                self.lost(job_id)
                return
        if translation.change or translation.event:
            self.apply(job_id, translation.change, translation.event)

    def _on_state(self, job_id: str, worker_state: protocol.WorkerState, reason: str) -> None:
        state = _JOB_STATES[worker_state]
        current = self._store.get(job_id)
        if current.state == state or current.state == training_job_pb.JOB_STATE_CANCELLING:
            return
        self.set_state(job_id, state, reason or worker_state.value.lower())

    # ---- worker exit -----------------------------------------------------------

    async def _await_exit(self, job_id: str, group: supervisor.WorkerGroup) -> None:
        result = await group.wait()
        run = self._running.pop(job_id, None)
        if run is not None and run.abandoned:
            log.info("job %s: worker stopped; another trainer owns the job now", job_id)
            if self._accepting:
                await self.schedule()
            return
        for attempt in range(FINISH_ATTEMPTS):
            try:
                self._finish(job_id, run, result)
                break
            except Exception:
                # The store's write failed (a full disk): the job must not stay RUNNING
                # with no worker, so try again while the trainer runs.
                log.exception("job %s: recording how it ended failed (attempt %d)", job_id, attempt)
                if not self._accepting:
                    break
                await asyncio.sleep(min(60.0, 2.0**attempt))
        if self._accepting:
            await self.schedule()

    def _finish(self, job_id: str, run: RunState | None, result: supervisor.GroupExit) -> None:
        job = self._store.get(job_id)
        if run is None:  # never expected: every group we start is registered first
            run = RunState(group=None)  # type: ignore[arg-type]
        end = job_exit.ending(
            job,
            run,
            result,
            accepting=self._accepting,
            shared=self._shared,
            trainer_id=self.trainer_id,
        )
        record_artifacts = artifacts_of(run.done)
        if end.state is None:
            self.apply(job_id, record_artifacts, log_event(end.reason))
        elif not (end.may_restart and self._restart(job, run, result)):
            self.set_state(job_id, end.state, end.reason, end.error, extra=record_artifacts)

    def _restart(
        self, job: training_job_pb.TrainingJob, run: RunState, result: supervisor.GroupExit
    ) -> bool:
        """Queues a dead worker's job again (restarts.py decides); True if it did."""
        plan = self._restarts.plan(job, run.error, result)
        if plan is None:
            return False

        def count(j: training_job_pb.TrainingJob) -> None:
            j.restart_count = plan.attempt

        self.set_state(job.id, training_job_pb.JOB_STATE_QUEUED, plan.reason, extra=count)
        self._restarts.hold(job.id, plan.delay, self.schedule)
        return True

    # ---- cancel, recovery, shutdown -------------------------------------------

    def recover(self) -> None:
        """Jobs this trainer was running when it stopped go back to the queue (requeue.py)."""
        self._requeue.recover(self.trainer_id, self._shared)

    def take_back(self, expired: Expired) -> None:
        """Another trainer's lease ran out: its job goes back to the queue (requeue.py)."""
        self._requeue.take_back(expired)

    async def shutdown(self, grace: float) -> None:
        """Stops accepting; asks running workers to checkpoint and exit; kills stragglers."""
        self._accepting = False
        self._restarts.stop()
        runs = list(self._running.items())
        for _, run in runs:
            await run.group.send(Command.STOP)
        if runs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(r.group.wait()) for _, r in runs], timeout=grace
            )
            for _, run in runs:
                run.group.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        # Let the exit handlers record what happened before the store closes.
        if self._grace_tasks:
            await asyncio.wait(list(self._grace_tasks), timeout=5)
