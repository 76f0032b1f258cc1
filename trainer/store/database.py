"""Opens the trainer's database: a SQLite file path or a postgresql:// URL, migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tunewire.trainer.store import db, migrations, postgres


def open_database(where: Path | str) -> db.Database:
    """A SQLite file path or a postgresql:// URL, migrated to the current schema."""
    database: db.Database
    if isinstance(where, str) and where.startswith(("postgresql://", "postgres://")):
        database = postgres.PostgresDatabase(where)
    else:
        try:
            database = db.SqliteDatabase(db.connect(where))
        except sqlite3.Error as exc:
            raise db.DatabaseError(f"cannot open the database {where}: {exc}") from None
    try:
        migrations.migrate(database)
    except BaseException:
        database.close()
        raise
    return database
