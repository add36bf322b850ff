"""One way to open the SQLite files that several processes share (the run state, the
webhook queue): WAL, autocommit, a 30 s busy timeout."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


def connect(path: Path, *, synchronous: str = "NORMAL", check_same_thread: bool = True) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=check_same_thread)
    db.row_factory = sqlite3.Row
    _switch_to_wal(db)   # stored in the file; asked every time, since a file can be made again
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


def _switch_to_wal(db: sqlite3.Connection) -> None:
    # Switching the journal mode needs the file to itself, and SQLite answers "database is
    # locked" at once there rather than waiting out the busy timeout (seen when the engine
    # and the monitor open a new state file together): so wait here, as the timeout would.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def add_missing_columns(db: sqlite3.Connection, table: str, columns: Mapping[str, str]) -> None:
    """Add the columns (name -> SQL type) a file made by an older version lacks; safe when another
    process adds them at the same moment."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for column, kind in columns.items():
        if column in have:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:  # another process added it meanwhile
            if "duplicate column" not in str(exc):
                raise
