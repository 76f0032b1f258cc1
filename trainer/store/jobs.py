"""Jobs, their append-only event logs and their checkpoints, in SQLite.

A job row keeps the whole `TrainingJob` proto (the source of truth for the API)
next to the columns we filter and sort on. Events are written here before
anyone sees them, in the same transaction as the job change they describe; the
sequence number comes from the job row, so a job's log has no gaps and no
duplicates, even across crashes and restarts.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from tunewire.trainer.store import db
from tunewire.v1 import training_event_pb2 as training_event_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state INTEGER NOT NULL,
    request_id TEXT,
    created REAL NOT NULL,
    queue_order INTEGER NOT NULL,
    job BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created DESC, id DESC);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request ON jobs(owner, request_id)
    WHERE request_id IS NOT NULL AND request_id != '';
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    checkpoint BLOB NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
"""

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


class JobStore:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        # One writer at a time: read-modify-write of a job proto must not interleave.
        self._lock = threading.RLock()
        db.ensure_schema(conn, SCHEMA)

    # ---- jobs ----------------------------------------------------------------

    def insert(
        self, job: training_job_pb.TrainingJob, event: training_event_pb.TrainingEvent
    ) -> tuple[training_job_pb.TrainingJob, training_event_pb.TrainingEvent]:
        """Stores a new job with its first event. Raises sqlite3.IntegrityError
        when the owner already used the job's request_id."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                order = self._conn.execute(
                    "SELECT COALESCE(MAX(queue_order), 0) + 1 FROM jobs"
                ).fetchone()[0]
                event.job_id = job.id
                event.sequence = 1
                if not event.HasField("time"):
                    event.time.CopyFrom(job.create_time)
                job.last_event_sequence = 1
                self._conn.execute(
                    "INSERT INTO jobs (id, owner, state, request_id, created, queue_order, job)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        job.owner,
                        job.state,
                        job.request_id or None,
                        job.create_time.ToNanoseconds() / 1e9,
                        order,
                        job.SerializeToString(),
                    ),
                )
                self._conn.execute(
                    "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
                    (job.id, 1, event.SerializeToString()),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return job, event

    def get(self, job_id: str) -> training_job_pb.TrainingJob | None:
        row = self._conn.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return training_job_pb.TrainingJob.FromString(row["job"]) if row else None

    def find_by_request_id(self, owner: str, request_id: str) -> training_job_pb.TrainingJob | None:
        row = self._conn.execute(
            "SELECT job FROM jobs WHERE owner = ? AND request_id = ?", (owner, request_id)
        ).fetchone()
        return training_job_pb.TrainingJob.FromString(row["job"]) if row else None

    def update(
        self,
        job_id: str,
        change: Callable[[training_job_pb.TrainingJob], None] | None = None,
        event: training_event_pb.TrainingEvent | None = None,
    ) -> tuple[training_job_pb.TrainingJob, training_event_pb.TrainingEvent | None]:
        """Applies `change` to the stored job and appends `event` to its log, in
        one transaction: the job and its log never disagree after a crash.
        Returns the new job and the event with its sequence number set."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise KeyError(job_id)
                job = training_job_pb.TrainingJob.FromString(row["job"])
                if change is not None:
                    change(job)
                job.update_time.CopyFrom(now_timestamp())
                if event is not None:
                    event.job_id = job_id
                    event.sequence = job.last_event_sequence + 1
                    if not event.HasField("time"):
                        event.time.CopyFrom(job.update_time)
                    self._conn.execute(
                        "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
                        (job_id, event.sequence, event.SerializeToString()),
                    )
                    job.last_event_sequence = event.sequence
                self._conn.execute(
                    "UPDATE jobs SET state = ?, job = ? WHERE id = ?",
                    (job.state, job.SerializeToString(), job_id),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return job, event

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
        total = self._conn.execute(f"SELECT COUNT(*) FROM jobs {clause}", args).fetchone()[0]
        rows = self._conn.execute(
            f"SELECT job FROM jobs {clause} ORDER BY created DESC, queue_order DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        jobs = [training_job_pb.TrainingJob.FromString(r["job"]) for r in rows]
        more = offset + len(jobs) < total
        return JobPage(jobs=jobs, next_offset=offset + len(jobs) if more else None, total=total)

    def queued_ids(self) -> builtins.list[str]:
        """Ids of QUEUED jobs in the order they will start."""
        rows = self._conn.execute(
            "SELECT id FROM jobs WHERE state = ? ORDER BY queue_order",
            (training_job_pb.JOB_STATE_QUEUED,),
        ).fetchall()
        return [r["id"] for r in rows]

    def count(self, states: Iterable[int]) -> int:
        """Jobs in any of `states`, counted without reading them (server info, /health)."""
        states = list(states)
        count = self._conn.execute(
            f"SELECT COUNT(*) FROM jobs WHERE state IN ({','.join('?' * len(states))})", states
        ).fetchone()[0]
        return int(count)

    def in_states(self, states: Iterable[int]) -> builtins.list[training_job_pb.TrainingJob]:
        """Jobs in any of `states`, oldest first (queue order)."""
        states = list(states)
        rows = self._conn.execute(
            f"SELECT job FROM jobs WHERE state IN ({','.join('?' * len(states))}) ORDER BY queue_order",
            states,
        ).fetchall()
        return [training_job_pb.TrainingJob.FromString(r["job"]) for r in rows]

    # ---- events --------------------------------------------------------------

    def events_after(
        self, job_id: str, after_sequence: int, limit: int = 1000
    ) -> builtins.list[training_event_pb.TrainingEvent]:
        rows = self._conn.execute(
            "SELECT event FROM job_events WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (job_id, after_sequence, limit),
        ).fetchall()
        return [training_event_pb.TrainingEvent.FromString(r["event"]) for r in rows]

    # ---- checkpoints ---------------------------------------------------------

    def put_checkpoint(self, job_id: str, checkpoint: training_job_pb.Checkpoint) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO checkpoints (job_id, step, checkpoint) VALUES (?, ?, ?)",
                (job_id, checkpoint.step, checkpoint.SerializeToString()),
            )

    def delete_checkpoint(self, job_id: str, step: int) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, step)
            )

    def checkpoints(self, job_id: str) -> builtins.list[training_job_pb.Checkpoint]:
        rows = self._conn.execute(
            "SELECT checkpoint FROM checkpoints WHERE job_id = ? ORDER BY step", (job_id,)
        ).fetchall()
        return [training_job_pb.Checkpoint.FromString(r["checkpoint"]) for r in rows]
