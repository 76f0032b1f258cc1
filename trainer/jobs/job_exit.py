"""What a job becomes when its worker exits: read from what the worker said
last (done, error, divergence), what the runner asked of it (cancel, pause)
and whether the trainer is shutting down. The runner applies the ending;
a dead worker's restart is the restart policy's call (restarts.py)."""

from __future__ import annotations

from dataclasses import dataclass

from google.rpc import status_pb2

from tunewire.trainer.jobs import failures
from tunewire.trainer.processes import supervisor
from tunewire.trainer.protocol import events as protocol
from tunewire.trainer.protocol.events import Outcome
from tunewire.v1 import training_job_pb2 as training_job_pb


@dataclass
class RunState:
    """What the runner knows about a job while its worker runs."""

    group: supervisor.WorkerGroup
    done: protocol.Done | None = None
    error: protocol.Error | None = None
    cancel_requested_by: str = ""
    kill_reason: str = ""
    diverged: failures.Divergence | None = None
    pause_requested_by: str = ""  # a STOP was sent to pause the job, not to shut down
    # The lease was lost (another trainer took the job back): write nothing more.
    abandoned: bool = False


@dataclass(frozen=True)
class Ending:
    # The job's next state; None: it stays active (single-trainer shutdown), `reason`
    # goes to its log and it resumes at the trainer's next start.
    state: int | None
    reason: str
    error: status_pb2.Status | None = None
    # A dead worker: the restart policy may queue the job again before it fails.
    may_restart: bool = False


def ending(
    job: training_job_pb.TrainingJob,
    run: RunState,
    result: supervisor.GroupExit,
    *,
    accepting: bool,
    shared: bool,
    trainer_id: str,
) -> Ending:
    done = run.done
    outcome = done.outcome if done is not None else None
    if run.diverged is not None:
        # Whatever the worker did after its loss went NaN (finished, or was stopped
        # for it), the job did not succeed.
        status = failures.diverged_status(run.diverged)
        return Ending(training_job_pb.JOB_STATE_FAILED, status.message, status)
    stopped_for_shutdown = not accepting and outcome in (Outcome.INTERRUPTED, None)
    if stopped_for_shutdown and shared:
        # Daemon shutdown with other trainers about: one of them resumes it now.
        return Ending(
            training_job_pb.JOB_STATE_QUEUED,
            f"trainer {trainer_id} stopping; the job resumes from its last checkpoint"
            " on the next trainer with room",
        )
    if stopped_for_shutdown:
        return Ending(
            None, "trainer stopping; the job resumes from its last checkpoint at the next start"
        )
    if outcome is Outcome.INTERRUPTED and run.pause_requested_by:
        return Ending(
            training_job_pb.JOB_STATE_PAUSED,
            f"paused by {run.pause_requested_by} at step {done.step if done else 0}",
        )
    if outcome in (Outcome.SUCCEEDED, Outcome.EARLY_STOPPED):
        why = (
            "finished"
            if outcome is Outcome.SUCCEEDED
            else "stopped early: validation loss stopped improving"
        )
        return Ending(training_job_pb.JOB_STATE_SUCCEEDED, why)
    if outcome is Outcome.CANCELLED or (
        result.killed and job.state == training_job_pb.JOB_STATE_CANCELLING
    ):
        by = f" by {run.cancel_requested_by}" if run.cancel_requested_by else ""
        return Ending(training_job_pb.JOB_STATE_CANCELLED, run.kill_reason or f"cancelled{by}")
    status = failures.worker_failure(run.error, result)
    if job.restart_count and failures.is_crash(run.error, result):
        status.message += f" (after {job.restart_count} restart(s))"
    return Ending(training_job_pb.JOB_STATE_FAILED, status.message, status, may_restart=True)
