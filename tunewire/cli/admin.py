"""`tunewire admin`: the operator's care of the trainer's state directory.

    tunewire admin backup FILE [--home HOME]    an online copy of HOME/state.db (the trainer may run)
    tunewire admin restore FILE [--home HOME]   put a backup back (stop the trainer first)

A backup is made with SQLite's backup API, checked with SQLite's quick check and
written under a temporary name, then renamed: FILE is whole or absent. Restoring
checks the backup, replaces HOME/state.db the same way and drops the old
database's write-ahead log. The files of jobs and datasets (HOME/jobs,
HOME/datasets) are not in the database: back them up with the filesystem's tools.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire admin",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("backup", "copy the trainer's database into FILE, while it runs"),
        ("restore", "replace the trainer's database by the backup FILE (trainer stopped)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("file", type=Path, metavar="FILE")
        cmd.add_argument(
            "--home", type=Path, default=None, help="state directory (default $TUNEWIRE_HOME)"
        )
    return parser


def run_admin(argv: list[str]) -> int:
    from tunewire.trainer.store import integrity

    args = _parser().parse_args(argv)
    home = (args.home or Path(os.environ.get("TUNEWIRE_HOME") or ".tunewire")).resolve()
    database = home / "state.db"
    try:
        if args.action == "backup":
            done = integrity.backup(database, args.file.resolve())
            print(
                f"backed up {database} to {done.path}: {done.size_bytes:,} bytes, {done.jobs} jobs"
            )
        else:
            done = integrity.restore(args.file.resolve(), database)
            print(
                f"restored {database} from {args.file}: {done.jobs} jobs; start the trainer again"
            )
    except (OSError, sqlite3.Error, integrity.DatabaseCorrupt) as exc:
        print(f"tunewire admin {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
