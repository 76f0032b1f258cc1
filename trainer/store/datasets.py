"""Stored datasets: rows in the database (either driver), files under `$TUNEWIRE_HOME/datasets/<id>/` (see files.py).

A dataset is identified by its content: the id is derived from the SHA-256 of
the uploaded bytes, so the same bytes uploaded twice are one dataset, stored
once. Who may see it is a separate relation, and what an uploader named it and
when they uploaded it belong to that relation: a second tenant uploading the
same bytes gets their own name and time, and never sees the first one's.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from tunewire.identity import Principal
from tunewire.trainer.store import db
from tunewire.v1 import dataset_pb2 as dataset_pb


def dataset_id_for(sha256_hex: str) -> str:
    return f"ds-{sha256_hex[:16]}"


@dataclass(frozen=True)
class Ownership:
    """One uploader's entry for a dataset: their name for it and when they uploaded it."""

    owner: str
    display_name: str
    created: float  # seconds since the epoch


class DatasetStore:
    def __init__(self, database: db.Database):
        # Tables come from migrations.py, applied when the database was opened.
        self._db = database

    def insert(self, dataset: dataset_pb.Dataset, ownership: Ownership) -> None:
        """Stores a dataset (replacing a row whose files were lost) and its first owner."""
        shared = dataset_pb.Dataset()
        shared.CopyFrom(dataset)
        for name in ("display_name", "owner", "create_time"):
            shared.ClearField(name)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO datasets (id, created, dataset) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET dataset = excluded.dataset",
                (dataset.id, ownership.created, shared.SerializeToString()),
            )
            _add_owner(tx, dataset.id, ownership)

    def add_owner(self, dataset_id: str, ownership: Ownership) -> None:
        """Adds an uploader; one who already has the dataset keeps their name and time."""
        _add_owner(self._db, dataset_id, ownership)

    def get(self, dataset_id: str) -> dataset_pb.Dataset | None:
        """The dataset without any uploader's name, time or identity."""
        row = self._db.query_one("SELECT dataset FROM datasets WHERE id = ?", (dataset_id,))
        return dataset_pb.Dataset.FromString(bytes(row["dataset"])) if row else None

    def visible(self, who: Principal, dataset_id: str) -> dataset_pb.Dataset | None:
        """The dataset as `who` sees it: with their own name and time when they uploaded it;
        for an admin who did not, with its first uploader's. None for anyone else."""
        row = self._db.query_one(
            f"SELECT d.dataset, o.owner, o.display_name, o.created {_VIEW} WHERE d.id = ?",
            (*_viewer(who), dataset_id),
        )
        return _view(row) if row else None

    def list(
        self, who: Principal, offset: int, limit: int
    ) -> tuple[list[dataset_pb.Dataset], bool]:
        """`who`'s datasets (every dataset for an admin), newest first, from `offset`."""
        rows = self._db.query(
            f"SELECT d.dataset, o.owner, o.display_name, o.created {_VIEW}"
            " ORDER BY o.created DESC, d.id LIMIT ? OFFSET ?",
            (*_viewer(who), limit + 1, offset),
        )
        return [_view(r) for r in rows[:limit]], len(rows) > limit


def _add_owner(where: db.Session | db.Database, dataset_id: str, o: Ownership) -> None:
    where.execute(
        "INSERT INTO dataset_owners (dataset_id, owner, display_name, created)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (dataset_id, owner) DO NOTHING",
        (dataset_id, o.owner, o.display_name, o.created),
    )


# The ownership row a caller sees a dataset through: their own, or for an admin who does
# not own it, the first uploader's. Parameters: `_viewer(who)` (positional `?` only: both
# drivers number them the same way).
_VIEW = """
FROM datasets d JOIN dataset_owners o ON o.dataset_id = d.id
AND o.owner = (
    SELECT c.owner FROM dataset_owners c WHERE c.dataset_id = d.id
    AND (c.owner = ? OR ?)
    ORDER BY c.owner = ? DESC, c.created, c.owner LIMIT 1
)
"""


def _viewer(who: Principal) -> tuple[str, bool, str]:
    return (who.name, who.admin, who.name)


def _view(row: db.Row) -> dataset_pb.Dataset:
    dataset = dataset_pb.Dataset.FromString(bytes(row["dataset"]))
    dataset.owner = row["owner"]
    dataset.display_name = row["display_name"]
    dataset.create_time.CopyFrom(_timestamp(row["created"]))
    return dataset


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp
