"""The trainer's SQLite database: one file in the state directory, WAL mode.

Each store module owns its tables and creates them with `ensure_schema`; this
module only opens connections the same way everywhere.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path | str) -> sqlite3.Connection:
    # check_same_thread=False: the asyncio loop and worker threads (big-file
    # validation) share a connection; every write goes through one lock in the
    # stores, and SQLite itself serializes.
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives a process crash
    # (kill -9); only an OS crash can lose the last transactions.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def ensure_schema(conn: sqlite3.Connection, statements: str) -> None:
    conn.executescript(statements)
