"""The trainer's database behind one small interface, with two drivers.

SQLite (the embedded default: one file in the state directory, WAL mode) and
PostgreSQL (`--database postgresql://...`, shared by several trainers; see
postgres.py). The stores write their SQL once, with `?` placeholders and the
subset both engines speak; what differs (column types, row locks, the clock)
is a property of the `Database`. Rows come back as mappings keyed by column.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

Row = Mapping[str, Any]
Args = Sequence[Any]


class IntegrityError(Exception):
    """A uniqueness or reference constraint refused a write (either driver)."""


class DatabaseError(Exception):
    """The database cannot be opened or migrated (bad URL, unreachable, too new)."""


class Session(Protocol):
    """Statements inside one transaction."""

    def execute(self, sql: str, args: Args = ()) -> int:
        """Runs a statement; returns the rows it changed."""
        ...

    def query(self, sql: str, args: Args = ()) -> list[Row]: ...

    def query_one(self, sql: str, args: Args = ()) -> Row | None: ...


class Database(Protocol):
    dialect: str  # "sqlite" or "postgresql"
    # Appended to a SELECT inside a transaction to lock the rows it read
    # (SQLite's transactions hold the whole database already).
    for_update: str
    # Like for_update, but rows another transaction holds are passed over (claims).
    skip_locked: str
    # The database's own clock in seconds since the epoch: every trainer of a
    # shared database compares leases against one clock, not its host's.
    now_sql: str

    def transaction(self) -> Any:
        """A context manager yielding a `Session`; commits on success, rolls back on error."""
        ...

    def query(self, sql: str, args: Args = ()) -> list[Row]: ...

    def query_one(self, sql: str, args: Args = ()) -> Row | None: ...

    def execute(self, sql: str, args: Args = ()) -> int: ...

    def close(self) -> None: ...


def connect(path: Path | str) -> sqlite3.Connection:
    # check_same_thread=False: the asyncio loop and worker threads (big-file
    # validation) share a connection; every use goes through one lock in
    # SqliteDatabase, and SQLite itself serializes.
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives a process crash
    # (kill -9); only an OS crash can lose the last transactions.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _SqliteSession:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Args = ()) -> int:
        try:
            return self._conn.execute(sql, args).rowcount
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        return list(self._conn.execute(sql, args).fetchall())

    def query_one(self, sql: str, args: Args = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, args).fetchone()
        return row


class SqliteDatabase:
    """One connection, one lock: a single trainer owns the file."""

    dialect = "sqlite"
    for_update = ""
    skip_locked = ""
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._lock = threading.RLock()
        self._session = _SqliteSession(conn)

    @contextmanager
    def transaction(self) -> Iterator[_SqliteSession]:
        with self._lock:
            # IMMEDIATE: take the write lock now, so a read-modify-write never interleaves.
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._session
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL does): a second
                # ROLLBACK would raise and hide the error that matters.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        with self._lock:
            return self._session.query(sql, args)

    def query_one(self, sql: str, args: Args = ()) -> Row | None:
        with self._lock:
            return self._session.query_one(sql, args)

    def execute(self, sql: str, args: Args = ()) -> int:
        with self._lock:
            return self._session.execute(sql, args)

    def close(self) -> None:
        self.conn.close()
