"""Stored datasets: rows in SQLite, files under `$TUNEWIRE_HOME/datasets/<id>/` (see files.py).

A dataset is identified by its content: the id is derived from the SHA-256 of
the uploaded bytes, so the same bytes uploaded twice are one dataset, stored
once. Who may see it is a separate relation, and what an uploader named it and
when they uploaded it belong to that relation: a second tenant uploading the
same bytes gets their own name and time, and never sees the first one's.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from tunewire.identity import Principal
from tunewire.trainer.store import db
from tunewire.v1 import dataset_pb2 as dataset_pb

SCHEMA = """
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
) WITHOUT ROWID;
"""
# Columns added after the first release; `_migrate` adds them to older databases.
_OWNER_COLUMNS = {"display_name": "TEXT NOT NULL DEFAULT ''", "created": "REAL NOT NULL DEFAULT 0"}
_OWNER_INDEX = (
    "CREATE INDEX IF NOT EXISTS dataset_owners_by_owner"
    " ON dataset_owners(owner, created DESC, dataset_id)"
)


def dataset_id_for(sha256_hex: str) -> str:
    return f"ds-{sha256_hex[:16]}"


@dataclass(frozen=True)
class Ownership:
    """One uploader's entry for a dataset: their name for it and when they uploaded it."""

    owner: str
    display_name: str
    created: float  # seconds since the epoch


class DatasetStore:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        db.ensure_schema(conn, SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            have = {r["name"] for r in self._conn.execute("PRAGMA table_info(dataset_owners)")}
            for name, kind in _OWNER_COLUMNS.items():
                if name not in have:
                    self._conn.execute(f"ALTER TABLE dataset_owners ADD COLUMN {name} {kind}")
            self._conn.execute(_OWNER_INDEX)
            # Rows from before per-owner names: the dataset's own name and time.
            for row in self._conn.execute(
                "SELECT o.dataset_id, o.owner, d.dataset FROM dataset_owners o"
                " JOIN datasets d ON d.id = o.dataset_id WHERE o.created = 0"
            ).fetchall():
                old = dataset_pb.Dataset.FromString(row["dataset"])
                self._conn.execute(
                    "UPDATE dataset_owners SET display_name = ?, created = ?"
                    " WHERE dataset_id = ? AND owner = ?",
                    (
                        old.display_name,
                        _seconds(old.create_time),
                        row["dataset_id"],
                        row["owner"],
                    ),
                )

    def insert(self, dataset: dataset_pb.Dataset, ownership: Ownership) -> None:
        """Stores a dataset (replacing a row whose files were lost) and its first owner."""
        shared = dataset_pb.Dataset()
        shared.CopyFrom(dataset)
        for name in ("display_name", "owner", "create_time"):
            shared.ClearField(name)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO datasets (id, created, dataset) VALUES (?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET dataset = excluded.dataset",
                    (dataset.id, ownership.created, shared.SerializeToString()),
                )
                self._add_owner(dataset.id, ownership)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def add_owner(self, dataset_id: str, ownership: Ownership) -> None:
        """Adds an uploader; one who already has the dataset keeps their name and time."""
        with self._lock:
            self._add_owner(dataset_id, ownership)

    def _add_owner(self, dataset_id: str, o: Ownership) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO dataset_owners (dataset_id, owner, display_name, created)"
            " VALUES (?, ?, ?, ?)",
            (dataset_id, o.owner, o.display_name, o.created),
        )

    def get(self, dataset_id: str) -> dataset_pb.Dataset | None:
        """The dataset without any uploader's name, time or identity."""
        row = self._conn.execute(
            "SELECT dataset FROM datasets WHERE id = ?", (dataset_id,)
        ).fetchone()
        return dataset_pb.Dataset.FromString(row["dataset"]) if row else None

    def visible(self, who: Principal, dataset_id: str) -> dataset_pb.Dataset | None:
        """The dataset as `who` sees it: with their own name and time when they uploaded it;
        for an admin who did not, with its first uploader's. None for anyone else."""
        row = self._conn.execute(
            f"SELECT d.dataset, o.owner, o.display_name, o.created {_VIEW} WHERE d.id = ?",
            (who.name, who.admin, dataset_id),
        ).fetchone()
        return _view(row) if row else None

    def list(
        self, who: Principal, offset: int, limit: int
    ) -> tuple[list[dataset_pb.Dataset], bool]:
        """`who`'s datasets (every dataset for an admin), newest first, from `offset`."""
        rows = self._conn.execute(
            f"SELECT d.dataset, o.owner, o.display_name, o.created {_VIEW}"
            " ORDER BY o.created DESC, d.id LIMIT ? OFFSET ?",
            (who.name, who.admin, limit + 1, offset),
        ).fetchall()
        return [_view(r) for r in rows[:limit]], len(rows) > limit


# The ownership row a caller sees a dataset through: their own, or for an admin who does
# not own it, the first uploader's. Parameters: the caller's name, whether they are admin.
_VIEW = """
FROM datasets d JOIN dataset_owners o ON o.dataset_id = d.id
AND o.owner = (
    SELECT c.owner FROM dataset_owners c WHERE c.dataset_id = d.id
    AND (c.owner = ?1 OR ?2)
    ORDER BY c.owner = ?1 DESC, c.created, c.owner LIMIT 1
)
"""


def _view(row: sqlite3.Row) -> dataset_pb.Dataset:
    dataset = dataset_pb.Dataset.FromString(row["dataset"])
    dataset.owner = row["owner"]
    dataset.display_name = row["display_name"]
    dataset.create_time.CopyFrom(_timestamp(row["created"]))
    return dataset


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp
