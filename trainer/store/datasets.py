"""Stored datasets: rows in SQLite, files under `$TUNEWIRE_HOME/datasets/<id>/`.

A dataset is identified by its content: the id is derived from the SHA-256 of
the uploaded bytes, so the same bytes uploaded twice are one dataset. Who may
see it is a separate relation: each uploader owns it.
"""

from __future__ import annotations

import sqlite3
import threading

from tunewire.identity import Principal
from tunewire.trainer.store import db
from tunewire.v1 import dataset_pb2

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


def dataset_id_for(sha256_hex: str) -> str:
    return f"ds-{sha256_hex[:16]}"


class DatasetStore:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        db.ensure_schema(conn, SCHEMA)

    def insert(self, dataset: dataset_pb2.Dataset, owner: str) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR IGNORE INTO datasets (id, created, dataset) VALUES (?, ?, ?)",
                    (
                        dataset.id,
                        dataset.create_time.ToNanoseconds() / 1e9,
                        dataset.SerializeToString(),
                    ),
                )
                self._conn.execute(
                    "INSERT OR IGNORE INTO dataset_owners (dataset_id, owner) VALUES (?, ?)",
                    (dataset.id, owner),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def add_owner(self, dataset_id: str, owner: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO dataset_owners (dataset_id, owner) VALUES (?, ?)",
                (dataset_id, owner),
            )

    def get(self, dataset_id: str) -> dataset_pb2.Dataset | None:
        row = self._conn.execute(
            "SELECT dataset FROM datasets WHERE id = ?", (dataset_id,)
        ).fetchone()
        return dataset_pb2.Dataset.FromString(row["dataset"]) if row else None

    def visible(self, who: Principal, dataset_id: str) -> dataset_pb2.Dataset | None:
        """The dataset if `who` may see it, with `owner` shown as the caller when they own it."""
        dataset = self.get(dataset_id)
        if dataset is None:
            return None
        if self._owns(who.name, dataset_id):
            dataset.owner = who.name
            return dataset
        return dataset if who.admin else None

    def _owns(self, owner: str, dataset_id: str) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM dataset_owners WHERE dataset_id = ? AND owner = ?",
                (dataset_id, owner),
            ).fetchone()
            is not None
        )

    def list(
        self, who: Principal, offset: int, limit: int
    ) -> tuple[list[dataset_pb2.Dataset], bool]:
        if who.admin:
            rows = self._conn.execute(
                "SELECT dataset FROM datasets ORDER BY created DESC, id LIMIT ? OFFSET ?",
                (limit + 1, offset),
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT d.dataset FROM datasets d JOIN dataset_owners o ON o.dataset_id = d.id"
                " WHERE o.owner = ? ORDER BY d.created DESC, d.id LIMIT ? OFFSET ?",
                (who.name, limit + 1, offset),
            ).fetchall()
        datasets = [dataset_pb2.Dataset.FromString(r["dataset"]) for r in rows[:limit]]
        for dataset in datasets:
            if not who.admin:
                dataset.owner = who.name
        return datasets, len(rows) > limit
