"""Cancel, pause and resume of a job, by a caller of this trainer or of another
one (seen at a heartbeat). Part of JobRunner (runner.py): it uses the runner's
running jobs, store and state changes; how a stopped worker's job ends is
job_exit.py's call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.jobs import checkpoints
from tunewire.trainer.jobs.job_exit import RunState
from tunewire.trainer.jobs.worker_events import log_event
from tunewire.trainer.protocol.commands import Command
from tunewire.trainer.store.jobs import ACTIVE_STATES, JobStore
from tunewire.trainer.store.leases import LeaseStore
from tunewire.v1 import training_job_pb2 as training_job_pb

# States in which an attempt runs a job and a pause reaches it as a STOP to its worker.
_PAUSABLE_WHILE_RUNNING = (
    training_job_pb.JOB_STATE_STARTING,
    training_job_pb.JOB_STATE_RUNNING,
)


class StopRequests:
    # The runner's, set in its __init__.
    _config: TrainerConfig
    _store: JobStore
    _leases: LeaseStore
    _running: dict[str, RunState]
    _shared: bool
    _grace_tasks: set[asyncio.Task]
    set_state: Callable[..., training_job_pb.TrainingJob]
    apply: Callable[..., training_job_pb.TrainingJob]

    async def cancel(self, job_id: str, by: str, force: bool) -> training_job_pb.TrainingJob:
        job = self._store.get(job_id)
        run = self._running.get(job_id)
        if self._shared and run is None and job.state in ACTIVE_STATES:
            # Another trainer runs it: the request goes through the store, and that
            # trainer stops its worker at its next heartbeat (or its lease runs out).
            if job.state == training_job_pb.JOB_STATE_CANCELLING:
                return job
            return self.set_state(
                job_id,
                training_job_pb.JOB_STATE_CANCELLING,
                f"cancel requested by {by}; the trainer running the job stops it",
            )
        if job.state == training_job_pb.JOB_STATE_QUEUED or run is None:
            return self.set_state(
                job_id, training_job_pb.JOB_STATE_CANCELLED, f"cancelled by {by} before it started"
            )
        run.cancel_requested_by = by
        if job.state != training_job_pb.JOB_STATE_CANCELLING:
            job = self.set_state(
                job_id,
                training_job_pb.JOB_STATE_CANCELLING,
                f"cancel requested by {by}"
                + ("; stopping the worker now" if force else "; finishing the current step"),
            )
        if force:
            run.kill_reason = f"cancelled by {by} (forced)"
            run.group.kill()
            return job
        await run.group.send(Command.CANCEL)
        task = asyncio.create_task(self._kill_after_grace(job_id, run))
        self._grace_tasks.add(task)
        task.add_done_callback(self._grace_tasks.discard)
        return job

    async def pause(self, job_id: str, by: str) -> training_job_pb.TrainingJob:
        """A queued job leaves the queue; a running one checkpoints and stops (`_finish`)."""
        run = self._running.get(job_id)
        if self._shared and run is None:
            # Another trainer may run it: marking it PAUSED here would end that
            # attempt's lease, and its trainer would kill the worker without a
            # checkpoint. The request goes through the store; that trainer stops its
            # worker as a local pause does, and the job is PAUSED once it checkpointed.
            if self._leases.request_pause(job_id, by, _PAUSABLE_WHILE_RUNNING):
                return self.apply(
                    job_id,
                    None,
                    log_event(
                        f"pause requested by {by}: the trainer running the job has its "
                        "worker checkpoint and stop"
                    ),
                )
            job = self._store.get(job_id)
            if job.state in ACTIVE_STATES:
                return job  # a pause is already on its way to the trainer running it
        if run is None:
            return self.set_state(job_id, training_job_pb.JOB_STATE_PAUSED, f"paused by {by}")
        if not run.pause_requested_by:
            run.pause_requested_by = by
            await run.group.send(Command.STOP)
            return self.apply(
                job_id,
                None,
                log_event(f"pause requested by {by}: the worker checkpoints and stops"),
            )
        return self._store.get(job_id)

    def resume(self, job_id: str, by: str) -> training_job_pb.TrainingJob:
        newest = checkpoints.candidates(self._config.jobs_dir / job_id)
        where = f"step {int(newest[0].name)}" if newest else "the beginning (no checkpoint)"
        return self.set_state(
            job_id, training_job_pb.JOB_STATE_QUEUED, f"resumed by {by}; continues from {where}"
        )

    async def cancel_requested_elsewhere(self, job_id: str) -> None:
        """A caller of another trainer cancelled a job this one runs (seen at a heartbeat)."""
        run = self._running.get(job_id)
        if run is None or run.cancel_requested_by or run.abandoned:
            return
        run.cancel_requested_by = "a caller of another trainer"
        await run.group.send(Command.CANCEL)
        task = asyncio.create_task(self._kill_after_grace(job_id, run))
        self._grace_tasks.add(task)
        task.add_done_callback(self._grace_tasks.discard)

    async def pause_requested_elsewhere(self, job_id: str, by: str) -> None:
        """A caller of another trainer paused a job this one runs (seen at a heartbeat)."""
        run = self._running.get(job_id)
        if run is None or run.pause_requested_by or run.cancel_requested_by or run.abandoned:
            return
        run.pause_requested_by = by
        await run.group.send(Command.STOP)

    async def _kill_after_grace(self, job_id: str, run: RunState) -> None:
        try:
            await asyncio.wait_for(run.group.wait(), timeout=self._config.cancel_grace_seconds)
        except asyncio.TimeoutError:
            run.kill_reason = (
                f"cancelled by {run.cancel_requested_by}; the worker was stopped after the "
                f"{self._config.cancel_grace_seconds:g} s grace period"
            )
            run.group.kill()
