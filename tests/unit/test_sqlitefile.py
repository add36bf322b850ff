"""Processes that open a new state file at the same moment (the engine, the monitor, the
dashboard) all get in: none fails with "database is locked" while the file turns to WAL."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

from mlchain import sqlitefile
from mlchain.state import StateStore

PROCESSES = 8
ROUNDS = 10   # the race lost 2-5 of 80 openings per 10 rounds before the WAL switch waited


def _open_and_write(path: Path, barrier: Any, results: Any, index: int) -> None:
    barrier.wait()
    try:
        store = StateStore(path)
        store.create_run(f"run-{index}", "repo", "repo", None, None)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_processes_opening_a_new_state_file_together_all_get_in(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / "state.db"
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        procs = [context.Process(target=_open_and_write, args=(path, barrier, results, i)) for i in range(PROCESSES)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert outcomes == ["ok"] * PROCESSES, outcomes
        with sqlitefile.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == PROCESSES


def test_a_file_deleted_and_made_again_is_switched_to_wal_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    sqlitefile.connect(path).close()
    path.unlink()
    sqlite3.connect(path).execute("CREATE TABLE t (x)")   # recreated behind our back, rollback journal
    db = sqlitefile.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
