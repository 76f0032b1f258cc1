"""Jobs, their append-only event logs and their checkpoints (either driver, see db.py).

A job row keeps the whole `TrainingJob` proto (the source of truth for the API)
next to the columns we filter and sort on. Events are written here before
anyone sees them, in the same transaction as the job change they describe; the
sequence number comes from the job row, so a job's log has no gaps and no
duplicates, even across crashes and restarts.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from tunewire.trainer import resources
from tunewire.trainer.store import db
from tunewire.trainer.store.leases import Lease, LeaseLost, check, rank_slots
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

TERMINAL_STATES = frozenset(
    {
        training_job_pb.JOB_STATE_SUCCEEDED,
        training_job_pb.JOB_STATE_FAILED,
        training_job_pb.JOB_STATE_CANCELLED,
    }
)
ACTIVE_STATES = frozenset(
    {
        training_job_pb.JOB_STATE_STARTING,
        training_job_pb.JOB_STATE_RUNNING,
        training_job_pb.JOB_STATE_CANCELLING,
    }
)


def now_timestamp() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


@dataclass(frozen=True)
class JobPage:
    jobs: list[training_job_pb.TrainingJob]
    next_offset: int | None
    total: int


# States no attempt runs in: a change into one ends the attempt's lease.
UNLEASED_STATES = TERMINAL_STATES | {
    training_job_pb.JOB_STATE_QUEUED,
    training_job_pb.JOB_STATE_PAUSED,
}
_INSERT_LOCK = 0x6A6F6273  # "jobs": an advisory lock key, any constant


# Channels of PostgreSQL's LISTEN/NOTIFY (sent at commit): a job entered the
# queue (payload: its id); a job's log grew (payload: "<job id> <sequence> <origin>",
# origin naming the writer, so a trainer can pass over its own).
QUEUE_CHANNEL = "tunewire_queue"
EVENTS_CHANNEL = "tunewire_events"


def _job(row: db.Row) -> training_job_pb.TrainingJob:
    return training_job_pb.TrainingJob.FromString(bytes(row["job"]))


class JobStore:
    def __init__(self, database: db.Database, origin: str = ""):
        # Tables come from migrations.py, applied when the database was opened.
        self._db = database
        # Called when a job enters a final state: first inside the transaction that
        # stores it (an outbox writer, such as webhook deliveries: what it writes
        # commits or rolls back with the job's end), then once it is committed.
        self.on_end_in_transaction: list[
            Callable[[db.Session, training_job_pb.TrainingJob], None]
        ] = []
        self.on_end_committed: list[Callable[[training_job_pb.TrainingJob], None]] = []
        self._origin = origin

    # ---- jobs ----------------------------------------------------------------

    def insert(
        self, job: training_job_pb.TrainingJob, event: training_event_pb.TrainingEvent
    ) -> tuple[training_job_pb.TrainingJob, training_event_pb.TrainingEvent]:
        """Stores a new job with its first event. Raises db.IntegrityError
        when the owner already used the job's request_id."""
        with self._db.transaction() as tx:
            # Inserts one at a time (other writers unhindered): two trainers never
            # hand out the same queue position.
            if self._db.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_INSERT_LOCK,))
            row = tx.query_one("SELECT COALESCE(MAX(queue_order), 0) + 1 AS next FROM jobs")
            order = int(row["next"]) if row else 1
            event.job_id = job.id
            event.sequence = 1
            if not event.HasField("time"):
                event.time.CopyFrom(job.create_time)
            job.last_event_sequence = 1
            tx.execute(
                "INSERT INTO jobs (id, owner, state, request_id, created, queue_order, slots,"
                " need_device, need_memory_gib, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.owner,
                    job.state,
                    job.request_id or None,
                    job.create_time.ToNanoseconds() / 1e9,
                    order,
                    rank_slots(job),
                    *resources.needs(job.spec),
                    job.SerializeToString(),
                ),
            )
            tx.execute(
                "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
                (job.id, 1, event.SerializeToString()),
            )
            self._notify(tx, EVENTS_CHANNEL, f"{job.id} 1 {self._origin}")
            if job.state == training_job_pb.JOB_STATE_QUEUED:
                self._notify(tx, QUEUE_CHANNEL, job.id)
        return job, event

    def get(self, job_id: str) -> training_job_pb.TrainingJob | None:
        row = self._db.query_one("SELECT job FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    def find_by_request_id(self, owner: str, request_id: str) -> training_job_pb.TrainingJob | None:
        row = self._db.query_one(
            "SELECT job FROM jobs WHERE owner = ? AND request_id = ?", (owner, request_id)
        )
        return _job(row) if row else None

    def update(
        self,
        job_id: str,
        change: Callable[[training_job_pb.TrainingJob], None] | None = None,
        event: training_event_pb.TrainingEvent | None = None,
        lease: Lease | None = None,
        *,
        expired: bool = False,
    ) -> tuple[training_job_pb.TrainingJob, training_event_pb.TrainingEvent | None]:
        """Applies `change` to the stored job and appends `event` to its log, in
        one transaction: the job and its log never disagree after a crash.
        With `lease`, only while that lease is the job's (else LeaseLost); with
        `expired` too, only once it ran out (taking a dead trainer's job back).
        Returns the new job and the event with its sequence number set."""
        with self._db.transaction() as tx:
            row = tx.query_one(
                f"SELECT job, attempt, lease_owner, lease_expires < {self._db.now_sql} AS expired"
                f" FROM jobs WHERE id = ?{self._db.for_update}",
                (job_id,),
            )
            if row is None:
                raise KeyError(job_id)
            if lease is not None:
                check(lease, row)
                if expired and not row["expired"]:
                    raise LeaseLost(lease, row["lease_owner"], int(row["attempt"]))
            job = _job(row)
            was_final = job.state in TERMINAL_STATES
            before = job.state
            if change is not None:
                change(job)
            ended = job.state in TERMINAL_STATES and not was_final
            job.update_time.CopyFrom(now_timestamp())
            if event is not None:
                event.job_id = job_id
                event.sequence = job.last_event_sequence + 1
                if not event.HasField("time"):
                    event.time.CopyFrom(job.update_time)
                tx.execute(
                    "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
                    (job_id, event.sequence, event.SerializeToString()),
                )
                job.last_event_sequence = event.sequence
                self._notify(tx, EVENTS_CHANNEL, f"{job_id} {event.sequence} {self._origin}")
            released = job.state != before and job.state in UNLEASED_STATES
            # Back in the queue, paused or finished: the attempt is over, its lease (and any
            # pause asked of it) goes with it.
            tx.execute(
                "UPDATE jobs SET state = ?, job = ?"
                + (
                    ", lease_owner = NULL, lease_expires = NULL, pause_requested_by = NULL"
                    if released
                    else ""
                )
                + " WHERE id = ?",
                (job.state, job.SerializeToString(), job_id),
            )
            if released and job.state == training_job_pb.JOB_STATE_QUEUED:
                self._notify(tx, QUEUE_CHANNEL, job_id)
            if ended:
                for write in self.on_end_in_transaction:
                    write(tx, job)
        if ended:
            for listener in self.on_end_committed:
                listener(job)
        return job, event

    def _notify(self, tx: db.Session, channel: str, payload: str) -> None:
        if self._db.dialect == "postgresql":
            tx.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def list(
        self,
        *,
        owner: str | None,
        states: Iterable[int] = (),
        offset: int = 0,
        limit: int = 50,
    ) -> JobPage:
        where: list[str] = []
        args: list[str | int] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        wanted = [s for s in states if s]
        if wanted:
            where.append(f"state IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        counted = self._db.query_one(f"SELECT COUNT(*) AS n FROM jobs {clause}", args)
        total = int(counted["n"]) if counted else 0
        rows = self._db.query(
            f"SELECT job FROM jobs {clause} ORDER BY created DESC, queue_order DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        jobs = [_job(r) for r in rows]
        more = offset + len(jobs) < total
        return JobPage(jobs=jobs, next_offset=offset + len(jobs) if more else None, total=total)

    def queued_ids(self) -> builtins.list[str]:
        """Ids of QUEUED jobs in the order they will start."""
        rows = self._db.query(
            "SELECT id FROM jobs WHERE state = ? ORDER BY queue_order",
            (training_job_pb.JOB_STATE_QUEUED,),
        )
        return [r["id"] for r in rows]

    def count(self, states: Iterable[int]) -> int:
        """Jobs in any of `states`, counted without reading them (server info, /health)."""
        states = list(states)
        row = self._db.query_one(
            f"SELECT COUNT(*) AS n FROM jobs WHERE state IN ({','.join('?' * len(states))})",
            states,
        )
        return int(row["n"]) if row else 0

    def in_states(self, states: Iterable[int]) -> builtins.list[training_job_pb.TrainingJob]:
        """Jobs in any of `states`, oldest first (queue order)."""
        states = list(states)
        rows = self._db.query(
            f"SELECT job FROM jobs WHERE state IN ({','.join('?' * len(states))}) ORDER BY queue_order",
            states,
        )
        return [_job(r) for r in rows]

    # ---- events --------------------------------------------------------------

    def events_after(
        self, job_id: str, after_sequence: int, limit: int = 1000
    ) -> builtins.list[training_event_pb.TrainingEvent]:
        rows = self._db.query(
            "SELECT event FROM job_events WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (job_id, after_sequence, limit),
        )
        return [training_event_pb.TrainingEvent.FromString(bytes(r["event"])) for r in rows]

    # ---- checkpoints ---------------------------------------------------------

    def put_checkpoint(
        self, job_id: str, checkpoint: training_job_pb.Checkpoint, lease: Lease | None = None
    ) -> None:
        """Records a checkpoint; with `lease`, only while that lease is the job's."""
        with self._db.transaction() as tx:
            if lease is not None:
                row = tx.query_one(
                    f"SELECT attempt, lease_owner FROM jobs WHERE id = ?{self._db.for_update}",
                    (job_id,),
                )
                if row is None:
                    raise KeyError(job_id)
                check(lease, row)
            tx.execute(
                "INSERT INTO checkpoints (job_id, step, checkpoint) VALUES (?, ?, ?)"
                " ON CONFLICT (job_id, step) DO UPDATE SET checkpoint = excluded.checkpoint",
                (job_id, checkpoint.step, checkpoint.SerializeToString()),
            )

    def delete_checkpoint(self, job_id: str, step: int) -> None:
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, step))

    def checkpoints(self, job_id: str) -> builtins.list[training_job_pb.Checkpoint]:
        rows = self._db.query(
            "SELECT checkpoint FROM checkpoints WHERE job_id = ? ORDER BY step", (job_id,)
        )
        return [training_job_pb.Checkpoint.FromString(bytes(r["checkpoint"])) for r in rows]
