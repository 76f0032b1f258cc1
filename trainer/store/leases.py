"""Many trainers, one queue: claims, leases renewed by heartbeat, and fencing.

A trainer claims a queued job by taking its lease (`lease_owner`, `lease_expires`)
and a new attempt number, in one statement guarded by `FOR UPDATE SKIP LOCKED`:
two trainers never claim the same job and neither waits for the other. It renews
the leases of what it runs at every heartbeat; a lease that ran out (the trainer
missed its beats) is taken back and the job re-queued by whichever trainer
notices first. Every write a trainer makes for a running job names its
`Lease`; the store refuses it (`LeaseLost`) unless that lease is still the
job's, so a trainer that lost its job can never write over the next attempt.
A job leaves its lease behind when it goes back to the queue or finishes.

A distributed job takes one rank slot per rank (`jobs.slots`, its world size) of
the trainer that claims it, which starts every rank (here or over ssh). A
trainer with a slot limit claims, in the same statement that takes the lease,
only a job whose slots all fit in what its held jobs leave free: it never holds
part of a job's slots while waiting for the rest, so two big jobs cannot
deadlock, and a smaller job further back may pass a big one that does not fit.
Times are the database's clock (`Database.now_sql`), one clock for all trainers.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Collection
from dataclasses import dataclass

from tunewire.trainer.resources import Offer
from tunewire.trainer.store import db
from tunewire.v1 import training_job_pb2 as training_job_pb

QUEUED = training_job_pb.JOB_STATE_QUEUED


def rank_slots(job: training_job_pb.TrainingJob) -> int:
    """The slots a job takes on the trainer that claims it: one per rank."""
    return max(1, job.distributed.world_size, len(job.distributed.hosts))


@dataclass(frozen=True)
class Lease:
    """One attempt at running a job: the trainer holding it and the attempt's fencing token."""

    job_id: str
    owner: str
    attempt: int


class LeaseLost(Exception):
    """The write's lease is no longer the job's: another attempt owns it, or it ended."""

    def __init__(self, lease: Lease, holder: str | None, attempt: int) -> None:
        held = f"by {holder} (attempt {attempt})" if holder else f"by nobody (attempt {attempt})"
        super().__init__(
            f"job {lease.job_id}: attempt {lease.attempt} of {lease.owner} lost its lease; "
            f"the job is held {held}"
        )
        self.lease = lease


def check(lease: Lease, row: db.Row) -> None:
    """Raises LeaseLost unless `row` (a job row read for update) still carries `lease`."""
    if row["lease_owner"] != lease.owner or int(row["attempt"]) != lease.attempt:
        raise LeaseLost(lease, row["lease_owner"], int(row["attempt"]))


@dataclass(frozen=True)
class Held:
    """A job as its lease holder sees it at a heartbeat."""

    job_id: str
    attempt: int
    state: int
    # Who asked (through another trainer) for the job to checkpoint and pause; "" if nobody.
    pause_requested_by: str = ""


@dataclass(frozen=True)
class Expired:
    """A lease that ran out: its holder stopped beating (or never started the job)."""

    lease: Lease
    state: int


class LeaseStore:
    def __init__(self, database: db.Database, ttl_seconds: float) -> None:
        self._db = database
        self.ttl = ttl_seconds

    def claim(
        self,
        owner: str,
        limit: int = 1,
        passed_over: Collection[str] = (),
        slots: int = 0,
        offer: Offer | None = None,
        reserve_after: float = 0.0,
    ) -> builtins.list[Lease]:
        """Takes the leases of up to `limit` queued jobs, first in the queue first,
        but for those in `passed_over` (jobs this trainer cannot run). With `slots`
        (this trainer's rank slots; 0: no limit) only jobs whose slots all fit in
        what `owner`'s held jobs leave free, each taken whole or not at all. With
        `offer` (the trainer's device and memory) only jobs whose needs it meets.
        With `slots` and `reserve_after` (seconds), a job this trainer could run but
        has no room for, queued longer than that, is not passed by later jobs: the
        trainer claims nothing behind it and drains until it fits (no starvation)."""
        if limit < 1:
            return []
        skip = f" AND id NOT IN ({','.join('?' * len(passed_over))})" if passed_over else ""
        with self._db.transaction() as tx:
            free = None
            if slots > 0:
                # Read in the claim's transaction; only this trainer claims for its own
                # slots, so nothing else changes the sum before the lease is taken.
                used = tx.query_one(
                    "SELECT COALESCE(SUM(slots), 0) AS used FROM jobs WHERE lease_owner = ?",
                    (owner,),
                )
                free = slots - int(used["used"] if used else 0)
                if free < 1:
                    return []
            meets, meet_args = "", list[float]()
            if offer is not None:
                meets, meet_args = (
                    " AND need_device IN (0, ?) AND need_memory_gib <= ?",
                    [
                        offer.device,
                        offer.memory_gib,
                    ],
                )
            fits, fit_args = meets, list(meet_args)
            if free is not None:
                fits, fit_args = f" AND slots <= ?{meets}", [free, *meet_args]
                if reserve_after > 0:
                    # The oldest job waiting too long for room this trainer could give it.
                    starved = tx.query_one(
                        "SELECT queue_order FROM jobs WHERE state = ? AND lease_owner IS NULL"
                        f"{skip}{meets} AND slots > ? AND slots <= ? AND created < ?"
                        " ORDER BY queue_order LIMIT 1",
                        (
                            QUEUED,
                            *passed_over,
                            *meet_args,
                            free,
                            slots,
                            time.time() - reserve_after,
                        ),
                    )
                    if starved is not None:
                        fits += " AND queue_order < ?"
                        fit_args.append(int(starved["queue_order"]))
            rows = tx.query(
                f"SELECT id, attempt, slots FROM jobs WHERE state = ? AND lease_owner IS NULL{skip}{fits}"
                f" ORDER BY queue_order LIMIT ?{self._db.skip_locked}",
                (QUEUED, *passed_over, *fit_args, limit),
            )
            leases = []
            for row in rows:
                if free is not None:
                    if int(row["slots"]) > free:
                        continue  # the ones before it (same claim) took the room
                    free -= int(row["slots"])
                attempt = int(row["attempt"]) + 1
                tx.execute(
                    f"UPDATE jobs SET attempt = ?, lease_owner = ?, lease_expires = {self._db.now_sql} + ?"
                    " WHERE id = ?",
                    (attempt, owner, self.ttl, row["id"]),
                )
                leases.append(Lease(row["id"], owner, attempt))
        return leases

    def renew(
        self, owner: str, address: str = "", offer: Offer | None = None
    ) -> builtins.list[Held]:
        """The heartbeat: extends every lease `owner` holds and advertises its `offer`;
        returns what it still holds."""
        now = self._db.now_sql
        device, memory = (offer.device, offer.memory_gib) if offer else (None, None)
        with self._db.transaction() as tx:
            tx.execute(
                f"UPDATE jobs SET lease_expires = {now} + ? WHERE lease_owner = ?",
                (self.ttl, owner),
            )
            if not tx.execute(
                f"UPDATE trainers SET heartbeat = {now}, address = ?, device = ?, memory_gib = ?"
                " WHERE id = ?",
                (address, device, memory, owner),
            ):
                tx.execute(
                    "INSERT INTO trainers (id, address, started, heartbeat, device, memory_gib)"
                    f" VALUES (?, ?, {now}, {now}, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (owner, address, device, memory),
                )
            rows = tx.query(
                "SELECT id, attempt, state, pause_requested_by FROM jobs WHERE lease_owner = ?",
                (owner,),
            )
        return [
            Held(r["id"], int(r["attempt"]), int(r["state"]), r["pause_requested_by"] or "")
            for r in rows
        ]

    def request_pause(self, job_id: str, by: str, running_states: Collection[int]) -> bool:
        """Records a pause for the trainer whose lease runs the job (it acts at its next
        heartbeat); False if no attempt runs it now or a pause was already asked for."""
        states = list(running_states)
        return bool(
            self._db.execute(
                "UPDATE jobs SET pause_requested_by = ? WHERE id = ? AND lease_owner IS NOT NULL"
                f" AND pause_requested_by IS NULL AND state IN ({','.join('?' * len(states))})",
                (by, job_id, *states),
            )
        )

    def expired(self, limit: int = 100) -> builtins.list[Expired]:
        """Leases whose time ran out, oldest first."""
        rows = self._db.query(
            "SELECT id, lease_owner, attempt, state FROM jobs"
            f" WHERE lease_owner IS NOT NULL AND lease_expires < {self._db.now_sql}"
            " ORDER BY lease_expires LIMIT ?",
            (limit,),
        )
        return [
            Expired(Lease(r["id"], r["lease_owner"], int(r["attempt"])), int(r["state"]))
            for r in rows
        ]

    def held_by(self, owner: str) -> builtins.list[tuple[Lease, int]]:
        """The leases `owner` holds, with their jobs' states (a restarted trainer's own)."""
        rows = self._db.query(
            "SELECT id, attempt, state FROM jobs WHERE lease_owner = ? ORDER BY queue_order",
            (owner,),
        )
        return [(Lease(r["id"], owner, int(r["attempt"])), int(r["state"])) for r in rows]

    def release(self, lease: Lease) -> bool:
        """Gives a claimed job's lease back without touching the job (it stays queued)."""
        return bool(
            self._db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL"
                " WHERE id = ? AND lease_owner = ? AND attempt = ?",
                (lease.job_id, lease.owner, lease.attempt),
            )
        )

    def release_queued(self) -> int:
        """Gives back every queued job's lease (one trainer alone on its database, restarting)."""
        return self._db.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL"
            " WHERE state = ? AND lease_owner IS NOT NULL",
            (QUEUED,),
        )

    def offers(self) -> builtins.list[Offer]:
        """What the trainers that beat within the lease time offer (the live ones)."""
        rows = self._db.query(
            "SELECT device, memory_gib FROM trainers WHERE device IS NOT NULL"
            f" AND heartbeat >= {self._db.now_sql} - ?",
            (self.ttl,),
        )
        return [Offer(int(r["device"]), float(r["memory_gib"])) for r in rows]

    def trainers(self) -> builtins.list[db.Row]:
        """Every trainer that ever beat, with its last heartbeat's age in seconds."""
        return self._db.query(
            f"SELECT id, address, {self._db.now_sql} - heartbeat AS age FROM trainers ORDER BY id"
        )
