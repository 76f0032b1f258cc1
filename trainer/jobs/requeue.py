"""Jobs back to the queue: after this trainer restarts, and when another trainer's lease ran out.

Either way the job resumes from its last checkpoint, and its event log goes on
with the next sequence number. With other trainers on the database, each
write is fenced by the lease it replaces: a trainer that renewed after all,
or another that took the job back first, wins, and this one does nothing.
"""

from __future__ import annotations

from google.rpc import status_pb2

from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.jobs import checkpoints
from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.trainer.store.jobs import ACTIVE_STATES, TERMINAL_STATES, JobStore, now_timestamp
from tunewire.trainer.store.leases import Expired, Lease, LeaseLost, LeaseStore
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb


def state_event(previous: int, state: int, reason: str, error: status_pb2.Status | None = None):
    change = training_event_pb.StateChange(previous_state=previous, state=state, reason=reason)
    if error is not None:
        change.error.CopyFrom(error)
    return training_event_pb.TrainingEvent(state_change=change)


class Requeue:
    def __init__(
        self, config: TrainerConfig, store: JobStore, leases: LeaseStore, bus: EventBus
    ) -> None:
        self._config = config
        self._store = store
        self._leases = leases
        self._bus = bus

    def recover(self, trainer_id: str, shared: bool) -> None:
        """Jobs that were active when the daemon stopped go back to the queue
        (ahead of newer jobs) and resume from their last checkpoint. Sharing a
        database, only this trainer's own (its other leases run out and are taken back)."""
        if shared:
            mine: list[tuple[Lease | None, str, int]] = [
                (lease, lease.job_id, state) for lease, state in self._leases.held_by(trainer_id)
            ]
        else:
            self._leases.release_queued()
            mine = [(None, j.id, j.state) for j in self._store.in_states(ACTIVE_STATES)]
        for lease, job_id, state in mine:
            if state == training_job_pb.JOB_STATE_QUEUED:
                if lease is not None:
                    self._leases.release(lease)  # claimed, never started
                continue
            self._requeue(job_id, state, "trainer restarted", lease)

    def take_back(self, expired: Expired) -> None:
        """Another trainer's lease ran out (it stopped beating): its job goes back to the queue."""
        lease = expired.lease
        if expired.state == training_job_pb.JOB_STATE_QUEUED:
            self._leases.release(lease)
            return
        self._requeue(
            lease.job_id,
            expired.state,
            f"trainer {lease.owner} stopped heartbeating (attempt {lease.attempt})",
            lease,
            expired=True,
        )

    def _requeue(
        self, job_id: str, state: int, why: str, lease: Lease | None, expired: bool = False
    ) -> None:
        if state == training_job_pb.JOB_STATE_CANCELLING:
            target = training_job_pb.JOB_STATE_CANCELLED
            reason = f"cancelled (the {why} while the job was stopping)"
        else:
            target = training_job_pb.JOB_STATE_QUEUED
            recorded = {c.step for c in self._store.checkpoints(job_id)}
            newest = checkpoints.recorded_resume_point(self._config.jobs_dir / job_id, recorded)
            where = (
                f"from its checkpoint at step {int(newest.name)}"
                if newest
                else "from the beginning (no checkpoint yet)"
            )
            reason = f"{why}; the job resumes {where}"
        event = state_event(training_job_pb.JOB_STATE_UNSPECIFIED, target, reason)

        def change(job: training_job_pb.TrainingJob) -> None:
            event.state_change.previous_state = job.state
            job.state = target
            if target in TERMINAL_STATES:
                job.end_time.CopyFrom(now_timestamp())

        try:
            _, stored = self._store.update(job_id, change, event, lease, expired=expired)
        except LeaseLost:
            return  # renewed after all, or another trainer took it back first
        if stored is not None:
            self._bus.publish(stored)
