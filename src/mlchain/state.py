"""Run state: one SQLite file (WAL) under MLCHAIN_HOME shared by the engine, the jobs,
the monitor and the dashboard. Every write commits at once, so a killed engine
resumes from what is here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import Field, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from mlchain import sqlitefile
from mlchain.errors import MlchainError, NotFound, StateError, home_not_writable

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    repo_url TEXT NOT NULL,
    repo_name TEXT NOT NULL,
    ref TEXT,
    branch TEXT,
    commit_sha TEXT,
    pusher_email TEXT,
    status TEXT NOT NULL,          -- queued | running | passed | budget_spent | failed
    stop_reason TEXT,
    framework TEXT,
    classification TEXT,           -- JSON
    config TEXT,                   -- JSON: the resolved mlchain.yaml plus overrides
    src_dir TEXT,
    email TEXT,                    -- JSON: where the email went
    registered TEXT,               -- JSON: registered model version and alias
    failed_job TEXT,
    engine_pid INTEGER,            -- the engine driving the run; a dead pid means "resume me"
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS trials (
    run_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    params TEXT NOT NULL,          -- JSON
    status TEXT NOT NULL,          -- pending | running | succeeded | failed | pruned
    metric REAL,
    metrics TEXT,                  -- JSON: final metrics (pruned: the last epoch and its value)
    mlflow_run_id TEXT,
    runner TEXT,
    image TEXT,
    image_id TEXT,
    handle_ref TEXT,               -- container id or pid of the current attempt
    spec TEXT,                     -- JSON TrialSpec of the current attempt
    attempt INTEGER NOT NULL DEFAULT 1,
    restarts INTEGER NOT NULL DEFAULT 0,
    next_restart_at REAL,
    failure_kind TEXT,
    failure_log TEXT,
    optuna_trial INTEGER,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (run_id, number)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    trial INTEGER,
    at REAL NOT NULL,
    kind TEXT NOT NULL,            -- restart | give_up | job | info
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS builds (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    job TEXT NOT NULL,
    number INTEGER NOT NULL,
    params TEXT NOT NULL,          -- JSON
    result TEXT NOT NULL,          -- PENDING | RUNNING | SUCCESS | UNSTABLE | FAILURE
    log_path TEXT,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS builds_job ON builds (job, number);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, id);
"""
# Columns of runs added after the first release: a state file made before gets them when opened.
ADDED_RUN_COLUMNS = {
    "reason": "TEXT",    # why a run no push asked for runs ("drift in pixel mean at sample 4,120: ...")
    "dataset": "TEXT",   # the dataset version folder it trains on (instead of the repository's data:)
}

class RunStatus(StrEnum):
    """Where a run is; the last three are endings."""

    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed"
    BUDGET_SPENT = "budget_spent"
    FAILED = "failed"


class TrialStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PRUNED = "pruned"   # stopped by the search's pruner: finished, and never restarted


class BuildResult(StrEnum):
    """A build's result, in Jenkins' words (PENDING and RUNNING: not finished)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    UNSTABLE = "UNSTABLE"
    FAILURE = "FAILURE"
    ABORTED = "ABORTED"


TERMINAL_RUN_STATUSES = (RunStatus.PASSED, RunStatus.BUDGET_SPENT, RunStatus.FAILED)
FINISHED_TRIAL_STATUSES = (TrialStatus.SUCCEEDED, TrialStatus.FAILED, TrialStatus.PRUNED)
# Columns holding JSON, decoded in the records. A trial's spec stays text: it is the
# TrialSpec's own format (runners.base.TrialSpec.from_json reads it).
JSON_COLUMNS = {"classification", "config", "email", "registered", "params", "metrics", "spec"}


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class _Record:
    """A row of the run state as a frozen dataclass; to_dict() is its JSON-ready form."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


@dataclass(frozen=True)
class RunRow(_Record):
    run_id: str
    repo_url: str
    repo_name: str
    ref: str | None
    branch: str | None
    commit_sha: str | None
    pusher_email: str | None
    status: RunStatus
    stop_reason: str | None
    framework: str | None
    classification: dict[str, Any] | None
    config: dict[str, Any] | None   # the resolved mlchain.yaml plus overrides
    src_dir: str | None
    email: dict[str, Any] | None    # where the email went
    registered: dict[str, Any] | None  # the registered model version and alias
    failed_job: str | None
    engine_pid: int | None
    created_at: float
    updated_at: float
    finished_at: float | None
    reason: str | None = None       # why it ran, when no push asked for it (drift)
    dataset: str | None = None      # the dataset version folder it trains on

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRow:
        return cls(run_id=row["run_id"], repo_url=row["repo_url"], repo_name=row["repo_name"], ref=row["ref"],
                   branch=row["branch"], commit_sha=row["commit_sha"], pusher_email=row["pusher_email"],
                   status=RunStatus(row["status"]), stop_reason=row["stop_reason"], framework=row["framework"],
                   classification=_json(row["classification"]), config=_json(row["config"]),
                   src_dir=row["src_dir"], email=_json(row["email"]), registered=_json(row["registered"]),
                   failed_job=row["failed_job"], engine_pid=row["engine_pid"], created_at=row["created_at"],
                   updated_at=row["updated_at"], finished_at=row["finished_at"], reason=row["reason"],
                   dataset=row["dataset"])

    @property
    def source_dir(self) -> Path:
        """The copy of the repository job1 (the pull) made."""
        if self.src_dir is None:
            raise StateError(f"run {self.run_id!r} has no source: its first job (the pull) did not finish")
        return Path(self.src_dir)

    @property
    def classified_framework(self) -> str:
        """The framework job2 (classify) found."""
        if self.framework is None:
            raise StateError(f"run {self.run_id!r} has no framework: its repository was not classified yet")
        return self.framework


@dataclass(frozen=True)
class TrialRow(_Record):
    run_id: str
    number: int
    params: dict[str, Any]
    status: TrialStatus
    metric: float | None
    metrics: dict[str, Any] | None  # the final metrics
    mlflow_run_id: str | None
    runner: str | None
    image: str | None
    image_id: str | None
    handle_ref: str | None          # container id or pid of the current attempt
    spec: str | None                # the TrialSpec (JSON) of the current attempt
    attempt: int
    restarts: int
    next_restart_at: float | None
    failure_kind: str | None
    failure_log: str | None
    optuna_trial: int | None
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TrialRow:
        return cls(run_id=row["run_id"], number=row["number"], params=json.loads(row["params"]),
                   status=TrialStatus(row["status"]), metric=row["metric"], metrics=_json(row["metrics"]),
                   mlflow_run_id=row["mlflow_run_id"], runner=row["runner"], image=row["image"],
                   image_id=row["image_id"], handle_ref=row["handle_ref"], spec=row["spec"],
                   attempt=row["attempt"], restarts=row["restarts"], next_restart_at=row["next_restart_at"],
                   failure_kind=row["failure_kind"], failure_log=row["failure_log"],
                   optuna_trial=row["optuna_trial"], started_at=row["started_at"], finished_at=row["finished_at"])

    # What a launched trial has (job2 or `mlchain train` set it before anyone reads it).
    @property
    def launched_spec(self) -> str:
        return self._launched(self.spec, "spec")

    @property
    def launched_runner(self) -> str:
        return self._launched(self.runner, "runner")

    @property
    def launched_mlflow_run_id(self) -> str:
        return self._launched(self.mlflow_run_id, "MLflow run")

    def _launched(self, value: str | None, what: str) -> str:
        if value is None:
            raise StateError(f"trial {self.number} of run {self.run_id!r} has no {what}: it was never launched")
        return value


@dataclass(frozen=True)
class EventRow(_Record):
    id: int
    run_id: str
    trial: int | None
    at: float
    kind: str                       # restart | give_up | job | info | error | note | pruned | search
    message: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> EventRow:
        return cls(id=row["id"], run_id=row["run_id"], trial=row["trial"], at=row["at"], kind=row["kind"],
                   message=row["message"])


@dataclass(frozen=True)
class BuildRow(_Record):
    run_id: str
    seq: int
    job: str
    number: int
    params: dict[str, str]
    result: BuildResult
    log_path: str | None
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> BuildRow:
        return cls(run_id=row["run_id"], seq=row["seq"], job=row["job"], number=row["number"],
                   params=json.loads(row["params"]), result=BuildResult(row["result"]), log_path=row["log_path"],
                   started_at=row["started_at"], finished_at=row["finished_at"])


@dataclass
class StateStore:
    path: Path
    _init: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise home_not_writable(self.path.parent, exc) from None
        with self.connect() as db:
            db.executescript(SCHEMA)
            sqlitefile.add_missing_columns(db, "runs", ADDED_RUN_COLUMNS)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlitefile.connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            raise self._unusable(exc) from None
        finally:
            db.close()

    def _unusable(self, exc: sqlite3.DatabaseError) -> MlchainError:
        if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in str(exc) or "readonly" in str(exc)):
            return home_not_writable(self.path.parent, OSError(0, str(exc), str(self.path)))
        return StateError(f"the run state {self.path} cannot be used: {exc}",
                          hint=f"if it is damaged, move it aside (mv {self.path} {self.path}.broken) and run again;"
                               " runs recorded in it will not be resumed")

    # runs ---------------------------------------------------------------------
    def create_run(self, run_id: str, repo_url: str, repo_name: str, ref: str | None,
                   pusher_email: str | None, status: str = "queued") -> None:
        now = time.time()
        with self.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, repo_url, repo_name, ref, pusher_email, status,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, repo_url, repo_name, ref, pusher_email, status, now, now))

    def update_run(self, run_id: str, **values: Any) -> None:
        if not values:
            return
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        args = [json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in values.items()]
        with self.connect() as db:
            cur = db.execute(f"UPDATE runs SET {cols} WHERE run_id = ?", (*args, run_id))
            if cur.rowcount == 0:
                raise NotFound(f"no run {run_id!r}", hint="list runs with `mlchain serve` dashboard or the state db")

    def get_run(self, run_id: str) -> RunRow:
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id!r} in {self.path}",
                           hint="check the id, and that MLCHAIN_HOME is the one the run used")
        return RunRow.from_row(row)

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [RunRow.from_row(r) for r in rows]

    def unfinished_runs(self) -> list[RunRow]:
        """Runs whose chain has a build still to run (queued, or running when its engine
        stopped). Not the status: job4 sets the verdict before job5 sends the email."""
        with self.connect() as db:
            rows = db.execute("SELECT * FROM runs WHERE run_id IN (SELECT run_id FROM builds WHERE result IN"
                              " ('PENDING', 'RUNNING')) ORDER BY created_at").fetchall()
        return [RunRow.from_row(r) for r in rows]

    def abandon_run(self, run_id: str, reason: str) -> None:
        """End a run without running what is left of it: the run failed, its queued builds too."""
        now = time.time()
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE builds SET result = 'FAILURE', finished_at = ? WHERE run_id = ?"
                       " AND result IN ('PENDING', 'RUNNING')", (now, run_id))
            db.execute("UPDATE runs SET status = 'failed', stop_reason = ?, updated_at = ?, finished_at = ?"
                       " WHERE run_id = ?", (reason, now, now, run_id))
            db.execute("COMMIT")

    # trials -------------------------------------------------------------------
    def upsert_trial(self, run_id: str, number: int, params: dict[str, Any], **values: Any) -> None:
        with self.connect() as db:
            db.execute("INSERT OR IGNORE INTO trials (run_id, number, params, status) VALUES (?,?,?,?)",
                       (run_id, number, json.dumps(params, sort_keys=True), "pending"))
        if values:
            self.update_trial(run_id, number, **values)

    def update_trial(self, run_id: str, number: int, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        args = [json.dumps(v) if k in JSON_COLUMNS and v is not None and k != "spec" else v
                for k, v in values.items()]
        with self.connect() as db:
            cur = db.execute(f"UPDATE trials SET {cols} WHERE run_id = ? AND number = ?",
                             (*args, run_id, number))
            if cur.rowcount == 0:
                raise NotFound(f"no trial {number} in run {run_id!r}")

    def get_trial(self, run_id: str, number: int) -> TrialRow | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM trials WHERE run_id = ? AND number = ?", (run_id, number)).fetchone()
        return None if row is None else TrialRow.from_row(row)

    def trials(self, run_id: str) -> list[TrialRow]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM trials WHERE run_id = ? ORDER BY number", (run_id,)).fetchall()
        return [TrialRow.from_row(r) for r in rows]

    def active_trials(self) -> list[TrialRow]:
        """Trials whose training was launched and not yet collected (what the monitor watches)."""
        with self.connect() as db:
            rows = db.execute("SELECT * FROM trials WHERE status = 'running' ORDER BY run_id, number").fetchall()
        return [TrialRow.from_row(r) for r in rows]

    # events -------------------------------------------------------------------
    def add_event(self, run_id: str, kind: str, message: str, trial: int | None = None) -> None:
        with self.connect() as db:
            db.execute("INSERT INTO events (run_id, trial, at, kind, message) VALUES (?,?,?,?,?)",
                       (run_id, trial, time.time(), kind, message))

    def events(self, run_id: str, after_id: int = 0) -> list[EventRow]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id",
                              (run_id, after_id)).fetchall()
        return [EventRow.from_row(r) for r in rows]

    # builds (the engine's record of each job execution) ----------------------------
    def add_build(self, run_id: str, job: str, params: dict[str, str], result: str = "PENDING") -> int:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM builds WHERE run_id = ?",
                             (run_id,)).fetchone()[0]
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE job = ?",
                                (job,)).fetchone()[0]
            db.execute("INSERT INTO builds (run_id, seq, job, number, params, result) VALUES (?,?,?,?,?,?)",
                       (run_id, seq, job, number, json.dumps(params, sort_keys=True), result))
            db.execute("COMMIT")
        return int(seq)

    def update_build(self, run_id: str, seq: int, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        with self.connect() as db:
            db.execute(f"UPDATE builds SET {cols} WHERE run_id = ? AND seq = ?", (*values.values(), run_id, seq))

    def builds(self, run_id: str) -> list[BuildRow]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM builds WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [BuildRow.from_row(r) for r in rows]

    def get_build(self, run_id: str, seq: int) -> BuildRow | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM builds WHERE run_id = ? AND seq = ?", (run_id, seq)).fetchone()
        return None if row is None else BuildRow.from_row(row)

    # the dashboard's view of a run ------------------------------------------------
    def run_view(self, run_id: str) -> dict[str, Any]:
        """The run with its trials (without their specs), builds and events, as JSON-ready dicts."""
        view = self.get_run(run_id).to_dict()
        view["trials"] = [{k: v for k, v in t.to_dict().items() if k != "spec"} for t in self.trials(run_id)]
        view["builds"] = [b.to_dict() for b in self.builds(run_id)]
        view["events"] = [e.to_dict() for e in self.events(run_id)]
        return view


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """The file is not a database, is corrupt or cannot be opened (not a busy or a bad query)."""
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "disk image is malformed"
        return True
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and any(
        s in text for s in ("unable to open", "readonly", "disk I/O", "malformed"))


def claim_restart(store: StateStore, run_id: str, number: int, attempt: int, **values: Any) -> bool:
    """Move a trial to its next attempt only if nobody else did (job3 and job6 may both try)."""
    cols = ", ".join(f"{k} = ?" for k in values)
    with store.connect() as db:
        cur = db.execute(
            f"UPDATE trials SET attempt = attempt + 1, restarts = restarts + 1{', ' + cols if cols else ''}"
            " WHERE run_id = ? AND number = ? AND attempt = ? AND status = 'running'",
            (*values.values(), run_id, number, attempt))
        return cur.rowcount == 1

