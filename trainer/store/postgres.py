"""The PostgreSQL driver: psycopg 3 with its connection pool.

Several trainers share one database: every transaction takes a pooled
connection, row locks (`FOR UPDATE`, `SKIP LOCKED`) replace SQLite's one
writer, and the database's clock is the one leases are measured against.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from tunewire.trainer.store.db import Args, DatabaseError, IntegrityError, Row

POOL_MAX = 8
CONNECT_TIMEOUT_SECONDS = 10
# Every transaction here takes milliseconds. A trainer frozen inside one (a paused
# host, a partition) would hold its row locks for ever and stall every other
# trainer that touches the job: the server ends such a session after a few
# seconds, and no statement waits longer than that for a lock (it fails, and is
# tried again at the next heartbeat). Both well under the default lease (10 s).
SESSION_OPTIONS = "-c idle_in_transaction_session_timeout=3000 -c lock_timeout=3000"


def redacted(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _placeholders(sql: str) -> str:
    # The stores write `?` (SQLite's style); psycopg wants `%s`, and a literal % doubled.
    return re.sub(r"\?", "%s", sql.replace("%", "%%"))


class _PostgresSession:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Args = ()) -> int:
        try:
            return self._conn.execute(_placeholders(sql), tuple(args)).rowcount
        except psycopg.IntegrityError as exc:
            raise IntegrityError(str(exc).splitlines()[0]) from exc

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        rows: list[Row] = self._conn.execute(_placeholders(sql), tuple(args)).fetchall()
        return rows

    def query_one(self, sql: str, args: Args = ()) -> Row | None:
        row: Row | None = self._conn.execute(_placeholders(sql), tuple(args)).fetchone()
        return row


class PostgresDatabase:
    dialect = "postgresql"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    now_sql = "extract(epoch from clock_timestamp())::double precision"

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # One plain connection first: a wrong URL or a server that is down fails
            # at once with the driver's own words, not after the pool's retries.
            psycopg.connect(
                url, connect_timeout=CONNECT_TIMEOUT_SECONDS, options=SESSION_OPTIONS
            ).close()
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot connect to the database {redacted(url)}: {str(exc).strip()}"
            ) from None
        self.pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "row_factory": dict_row, "options": SESSION_OPTIONS},
            open=False,
            name="tunewire",
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except Exception as exc:
            self.pool.close()
            raise DatabaseError(
                f"cannot connect to the database {redacted(url)}: {exc}".strip()
            ) from None

    @contextmanager
    def transaction(self) -> Iterator[_PostgresSession]:
        with self.pool.connection() as conn, conn.transaction():
            yield _PostgresSession(conn)

    def query(self, sql: str, args: Args = ()) -> list[Row]:
        with self.pool.connection() as conn:
            return _PostgresSession(conn).query(sql, args)

    def query_one(self, sql: str, args: Args = ()) -> Row | None:
        with self.pool.connection() as conn:
            return _PostgresSession(conn).query_one(sql, args)

    def execute(self, sql: str, args: Args = ()) -> int:
        with self.pool.connection() as conn:
            return _PostgresSession(conn).execute(sql, args)

    def close(self) -> None:
        self.pool.close()
