"""The SQLite database's health: SQLite's quick check before the trainer serves,
online backups with SQLite's backup API, and restoring one.

A damaged `state.db` must not give a trainer that says SERVING and fails every
job call; the check runs before anything listens, and its failure is one line
saying what is wrong and what to do. A backup is taken while the trainer runs
(the backup API copies a consistent snapshot, WAL included), checked, and
renamed into place whole; restoring copies it back the same way, the trainer
stopped.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

MAX_PROBLEMS = 3  # quick_check lists up to 100; a person needs the first few


class DatabaseCorrupt(Exception):
    """The database failed its check; the message is one line, with what to do."""


@dataclass(frozen=True)
class Copied:
    path: Path
    size_bytes: int
    jobs: int


def problems(path: Path) -> list[str]:
    """What SQLite's quick check finds wrong with the database at `path` ([] when sound)."""
    try:
        conn = sqlite3.connect(str(path), timeout=30)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        return [str(exc)]
    finally:
        conn.close()
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found


def check_at_start(path: Path) -> None:
    """Raises DatabaseCorrupt when the trainer must not start on this database."""
    if not path.exists():
        return  # a first start: the trainer makes it
    found = problems(path)
    if not found:
        return
    shown = "; ".join(p.replace("\n", " ") for p in found[:MAX_PROBLEMS])
    more = f" (and {len(found) - MAX_PROBLEMS} more)" if len(found) > MAX_PROBLEMS else ""
    raise DatabaseCorrupt(
        f"the database {path} is damaged (SQLite quick_check: {shown}{more}); the trainer "
        f"did not start. Restore a backup: `tunewire admin restore BACKUP --home {path.parent}` "
        "(make backups with `tunewire admin backup FILE`)"
    )


def backup(source: Path, dest: Path) -> Copied:
    """An online copy of the database at `source` into `dest` (checked, then renamed)."""
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    copied = _copy(source, dest)
    return copied


def restore(backup_file: Path, dest: Path) -> Copied:
    """Replaces the database at `dest` by a backup; the trainer using it must be stopped."""
    if not backup_file.is_file():
        raise FileNotFoundError(f"no backup at {backup_file}")
    found = problems(backup_file)
    if found:
        raise DatabaseCorrupt(f"the backup {backup_file} is damaged too ({found[0]}); pick another")
    copied = _copy(backup_file, dest)
    # The old database's write-ahead log belongs to the old file: replayed onto the
    # restored one it would undo the restore.
    for suffix in ("-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    return copied


def _copy(source: Path, dest: Path) -> Copied:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(str(source), timeout=30)
    try:
        out = sqlite3.connect(str(tmp))
        try:
            src.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            jobs = _count_jobs(out)
        finally:
            out.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    os.chmod(tmp, 0o600)  # it holds who owns what, like the database itself
    found = problems(tmp)
    if found:
        tmp.unlink(missing_ok=True)
        raise DatabaseCorrupt(f"the copy of {source} failed its check ({found[0]})")
    os.replace(tmp, dest)
    return Copied(dest, dest.stat().st_size, jobs)


def _count_jobs(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    except sqlite3.Error:
        return 0
