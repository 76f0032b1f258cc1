"""One schema for both drivers, built by numbered migrations applied at start.

`schema_version` holds the highest migration applied. Each migration runs in
the transaction that records it, so a crash leaves the database at the last
whole step. On PostgreSQL an advisory lock makes trainers starting together
migrate one at a time. A database written by a newer tunewire (a version this
code does not know) is refused rather than guessed at.

The DDL is written once in SQLite's words and translated for PostgreSQL
(`_ddl`): BLOB is BYTEA, REAL is DOUBLE PRECISION, WITHOUT ROWID is SQLite's alone.
Migration 1 uses IF NOT EXISTS so a database from before versioning adopts it.
"""

from __future__ import annotations

from collections.abc import Callable

from tunewire.trainer.store.db import Database, DatabaseError, Session
from tunewire.v1 import dataset_pb2 as dataset_pb

# Any constant: the key of the advisory lock trainers take while migrating.
_ADVISORY_LOCK = 0x7475_6E65  # "tune"


def _ddl(db: Database, text: str) -> list[str]:
    if db.dialect == "postgresql":
        text = (
            text.replace(" WITHOUT ROWID", "")
            .replace(" BLOB", " BYTEA")
            .replace(" REAL", " DOUBLE PRECISION")
        )
    return [s.strip() for s in text.split(";") if s.strip()]


def _base_tables(db: Database, s: Session) -> None:
    for statement in _ddl(
        db,
        """
        CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            state INTEGER NOT NULL,
            request_id TEXT,
            created REAL NOT NULL,
            queue_order BIGINT NOT NULL,
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
        CREATE TABLE IF NOT EXISTS datasets (
            id TEXT PRIMARY KEY,
            created REAL NOT NULL,
            dataset BLOB NOT NULL
        );
        CREATE INDEX IF NOT EXISTS datasets_by_created ON datasets(created DESC, id);
        CREATE TABLE IF NOT EXISTS dataset_owners (
            dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            owner TEXT NOT NULL,
            PRIMARY KEY (dataset_id, owner)
        ) WITHOUT ROWID
        """,
    ):
        s.execute(statement)


def _columns(db: Database, s: Session, table: str) -> set[str]:
    if db.dialect == "postgresql":
        rows = s.query(
            "SELECT column_name AS name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
    else:
        rows = s.query(f"PRAGMA table_info({table})")
    return {r["name"] for r in rows}


def _add_columns(db: Database, s: Session, table: str, columns: dict[str, str]) -> None:
    # A database from before versioning may have some of them already.
    have = _columns(db, s, table)
    for name, kind in columns.items():
        if name not in have:
            (statement,) = _ddl(db, f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            s.execute(statement)


def _per_owner_names(db: Database, s: Session) -> None:
    """Each uploader's own name and time for a dataset (was one per dataset)."""
    _add_columns(
        db,
        s,
        "dataset_owners",
        {"display_name": "TEXT NOT NULL DEFAULT ''", "created": "REAL NOT NULL DEFAULT 0"},
    )
    s.execute(
        "CREATE INDEX IF NOT EXISTS dataset_owners_by_owner"
        " ON dataset_owners(owner, created DESC, dataset_id)"
    )
    # Rows from before per-owner names: the dataset's own name and time.
    for row in s.query(
        "SELECT o.dataset_id, o.owner, d.dataset FROM dataset_owners o"
        " JOIN datasets d ON d.id = o.dataset_id WHERE o.created = 0"
    ):
        old = dataset_pb.Dataset.FromString(bytes(row["dataset"]))
        s.execute(
            "UPDATE dataset_owners SET display_name = ?, created = ?"
            " WHERE dataset_id = ? AND owner = ?",
            (
                old.display_name,
                old.create_time.ToNanoseconds() / 1e9,
                row["dataset_id"],
                row["owner"],
            ),
        )


def _leases(db: Database, s: Session) -> None:
    """Many trainers, one queue: a job's lease (who runs it, until when) and the
    attempt number that fences every write of that run; the trainers' heartbeats."""
    _add_columns(
        db,
        s,
        "jobs",
        {"attempt": "INTEGER NOT NULL DEFAULT 0", "lease_owner": "TEXT", "lease_expires": "REAL"},
    )
    for statement in _ddl(
        db,
        """
        CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, queue_order);
        CREATE INDEX IF NOT EXISTS jobs_by_lease ON jobs(lease_owner);
        CREATE TABLE IF NOT EXISTS trainers (
            id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            started REAL NOT NULL,
            heartbeat REAL NOT NULL
        )
        """,
    ):
        s.execute(statement)


def _webhooks(db: Database, s: Session) -> None:
    """Completion webhooks: endpoints, and one delivery row per (endpoint, job, event type),
    written in the transaction that ends the job (an outbox: nothing lost, nothing twice)."""
    for statement in _ddl(
        db,
        """
        CREATE TABLE IF NOT EXISTS webhooks (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            created REAL NOT NULL,
            webhook BLOB NOT NULL
        );
        CREATE INDEX IF NOT EXISTS webhooks_by_owner ON webhooks(owner, created);
        CREATE TABLE IF NOT EXISTS webhook_deliveries (
            id TEXT PRIMARY KEY,
            webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
            job_id TEXT NOT NULL,
            event_type INTEGER NOT NULL,
            state INTEGER NOT NULL,
            next_attempt REAL NOT NULL,
            created REAL NOT NULL,
            payload BLOB NOT NULL,
            delivery BLOB NOT NULL
        );
        CREATE UNIQUE INDEX IF NOT EXISTS webhook_deliveries_once
            ON webhook_deliveries(webhook_id, job_id, event_type);
        CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(state, next_attempt);
        CREATE INDEX IF NOT EXISTS webhook_deliveries_by_webhook
            ON webhook_deliveries(webhook_id, created DESC, id)
        """,
    ):
        s.execute(statement)


def _pause_requests(db: Database, s: Session) -> None:
    """A pause asked of one trainer for a job another runs: recorded here, read by the
    runner at its heartbeat (the job becomes PAUSED only once its checkpoint is written)."""
    _add_columns(db, s, "jobs", {"pause_requested_by": "TEXT"})


def _rank_slots(db: Database, s: Session) -> None:
    """The rank slots a job takes on the trainer that claims it (its world size): a
    claim takes all of them in one statement or none. Rows from before count 1."""
    _add_columns(db, s, "jobs", {"slots": "INTEGER NOT NULL DEFAULT 1"})


def _resources(db: Database, s: Session) -> None:
    """What a job needs (spec.resources: a ResourceDevice, 0 for any, and GiB) and what
    each trainer offers, so a claim takes only jobs the claiming trainer can run."""
    _add_columns(
        db,
        s,
        "jobs",
        {"need_device": "INTEGER NOT NULL DEFAULT 0", "need_memory_gib": "REAL NOT NULL DEFAULT 0"},
    )
    _add_columns(db, s, "trainers", {"device": "INTEGER", "memory_gib": "REAL"})


MIGRATIONS: list[Callable[[Database, Session], None]] = [
    _base_tables,
    _per_owner_names,
    _leases,
    _webhooks,
    _pause_requests,
    _rank_slots,
    _resources,
]


def migrate(db: Database) -> int:
    """Applies the migrations this database lacks; returns its version."""
    latest = len(MIGRATIONS)
    with db.transaction() as s:
        if db.dialect == "postgresql":
            s.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK,))
        (statement,) = _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied REAL NOT NULL)",
        )
        s.execute(statement)
        row = s.query_one("SELECT MAX(version) AS version FROM schema_version")
        have = int(row["version"] or 0) if row else 0
        if have > latest:
            raise DatabaseError(
                f"the database is at schema version {have}, newer than this tunewire "
                f"knows (up to {latest}); upgrade tunewire"
            )
        for version in range(have + 1, latest + 1):
            MIGRATIONS[version - 1](db, s)
            s.execute(
                f"INSERT INTO schema_version (version, applied) VALUES (?, {db.now_sql})",
                (version,),
            )
    return latest
