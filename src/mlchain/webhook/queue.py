"""The durable run queue (SQLite, WAL) and the workers that drain it.

Storage: its own file, ``$MLCHAIN_HOME/webhook.db`` (not state.db), so a delivery's
insert never waits on the engine's writes and the other way round.
Two tables:

- ``deliveries``: every push delivery seen, by ``X-GitHub-Delivery`` (the primary key
  is the de-duplication: a redelivery, even after a restart, is a duplicate);
- ``queue``: one row per accepted push. ``run_id`` is assigned here, at enqueue
  time, and handed to ``mlchain run --run-id``; status ``queued -> running ->
  finished`` or ``queued -> superseded``.

Durability: each delivery is one transaction, committed (``synchronous=FULL``: fsynced)
before the 202 is sent (``DeliveryWriter``: one thread, one connection).

Scheduling (``plan``, pure): at most N runs at once, at most one per lane (one
repository and ref). Coalescing: when a lane frees up and holds several queued
pushes, only the newest runs; the older ones become ``superseded`` with
``superseded_by`` naming the run that built the newer commit. So every accepted
delivery ends in a finished run or an explicit superseded record, and no run twice.

Recovery: workers hold a lease (owner = host:pid:process start time, renewed by a
heartbeat). A row left ``running`` by a dead owner (same host and the process is gone,
or the lease expired) is taken over: if the engine never created the run it is run,
if the engine's state has it unfinished it is resumed (``mlchain resume``), if the
engine had finished it the row is just closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mlchain import sqlitefile
from mlchain.procs import pid_alive, proc_cmdline, proc_start_time
from mlchain.runids import new_run_id
from mlchain.webhook.payload import Decision

log = logging.getLogger("mlchain.webhook")


SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL,        -- accepted | ignored
    reason TEXT,
    run_id TEXT
) WITHOUT ROWID;                  -- one b-tree: the key is the de-duplication
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY,      -- enqueue order (rows are never deleted, so it only grows)
    run_id TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL,    -- unique through deliveries' key
    lane TEXT NOT NULL,           -- repo_url#ref: one run at a time per lane
    repo_url TEXT NOT NULL,
    repo_name TEXT NOT NULL,
    ref TEXT NOT NULL,
    name TEXT NOT NULL,           -- short branch or tag name
    kind TEXT NOT NULL,           -- branch | tag
    commit_sha TEXT NOT NULL,
    pusher_email TEXT,
    status TEXT NOT NULL,         -- queued | running | finished | superseded
    result TEXT,                  -- finished: passed | budget_spent | failed | unknown
    superseded_by TEXT,           -- superseded: the run that built the newer push
    owner TEXT,                   -- host:pid:start of the service that holds the lease
    child_pid INTEGER,
    lease_until REAL,
    heartbeat_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,   -- executions started (run, then resumes)
    enqueued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    exit_code INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS queue_active ON queue (status, seq);
"""
# Columns added after the first release: a file made before gets them when it opens.
ADDED_COLUMNS = {
    "reason": "TEXT",     # why a run that no push asked for runs (drift: what drifted)
    "dataset": "TEXT",    # the dataset version folder that run trains on
}

TERMINAL_RESULTS = ("passed", "budget_spent", "failed")
LEASE_S = 30.0
HEARTBEAT_S = 5.0
WEBHOOK_RUN_PREFIX = "wh-"  # a pushed run's id tells where it came from
RETRAIN_RUN_PREFIX = "drift-"  # a retraining asked by the drift observer
RETRAIN_LANE_SUFFIX = "#retrain"  # its own lane: a retraining never supersedes a push, nor one it
MAX_ATTEMPTS = 3  # a chain whose process keeps dying is given up after this many starts

Outcome = Literal["accepted", "ignored", "duplicate"]


def queue_path(home: Path) -> Path:
    return home / "webhook.db"


def connect(path: Path) -> sqlite3.Connection:
    # FULL: an accepted delivery survives a power cut, not only a crash.
    return sqlitefile.connect(path, synchronous="FULL")


# --- pure decisions -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What scheduling needs to know of one active queue row."""

    seq: int
    run_id: str
    lane: str
    status: str            # queued | running
    orphan: bool = False   # running, and its owner is gone


@dataclass(frozen=True)
class Plan:
    takeover: tuple[str, ...] = ()                       # orphaned running rows to resume
    start: tuple[str, ...] = ()                          # queued rows to start
    superseded: tuple[tuple[str, str], ...] = ()         # (older run_id, newer run_id that runs)


def plan(entries: Sequence[Entry], free_slots: int) -> Plan:
    """Which queue rows to start now, given ``free_slots`` worker slots of this service.

    Orphans first (they were running: their lane is theirs). Then lanes with no
    running row, oldest waiting lane first (fairness); in each, the newest push runs
    and the older queued ones are superseded by it.
    """
    ordered = sorted(entries, key=lambda e: e.seq)
    busy = {e.lane for e in ordered if e.status == "running"}
    takeover = [e.run_id for e in ordered if e.status == "running" and e.orphan][:max(free_slots, 0)]
    slots = free_slots - len(takeover)
    queued_by_lane: dict[str, list[Entry]] = {}
    for e in ordered:
        if e.status == "queued" and e.lane not in busy:
            queued_by_lane.setdefault(e.lane, []).append(e)  # dict keeps the oldest lane first
    start: list[str] = []
    superseded: list[tuple[str, str]] = []
    for lane_entries in queued_by_lane.values():
        if slots <= 0:
            break
        newest = lane_entries[-1]
        start.append(newest.run_id)
        superseded.extend((older.run_id, newest.run_id) for older in lane_entries[:-1])
        slots -= 1
    return Plan(tuple(takeover), tuple(start), tuple(superseded))


# Engine state of a run taken over from a dead service -> what to do with it.
RECOVERY = {
    None: "run",            # the engine never created it: nothing ran
    "queued": "resume",
    "running": "resume",
    "passed": "finish",     # the engine finished; only the queue row was left open
    "budget_spent": "finish",
    "failed": "finish",
}


def recovery_action(fresh: bool, state_status: str | None) -> str:
    """run | resume | finish, for a claimed row (``fresh``: it was queued, not taken over)."""
    if fresh:
        return "run"
    return RECOVERY.get(state_status, "resume")


def final_result(returncode: int, summary_status: str | None, state_status: str | None,
                 stopping: bool) -> tuple[str, str | None]:
    """(what to do with the row, result) once the chain process ended.

    ``release``: we stopped it (service shutdown); the next start resumes it.
    ``retry``: it died of a signal we did not send (OOM killer...): resume it.
    ``finish``: it ended by itself; the engine's own record wins over the exit code.
    """
    if stopping and returncode != 0:
        return "release", None
    if returncode < 0:
        return "retry", None
    for status in (summary_status, state_status):
        if status in TERMINAL_RESULTS:
            return "finish", status
    return "finish", "failed" if returncode != 0 else "unknown"


def is_orphan(owner: str | None, lease_until: float | None, me: str, now: float,
              alive: Callable[[str], bool | None]) -> bool:
    """A running row whose owner cannot still be working on it.

    ``alive(owner)`` is True/False when the owner is on this host (so it can be
    checked), None when it cannot be known: then only the lease tells.
    """
    if owner == me:
        return False
    if owner is None or (lease_until or 0.0) < now:
        return True
    return alive(owner) is False


def child_env(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """The chain's environment: the service's, with its home, and never the webhook secret."""
    from mlchain.config import secret_env

    # The service took its secrets out of its own environment (config.take_secrets); the chain
    # (mlchain itself, which takes them out of its own at once) still needs the others.
    env = {k: v for k, v in {**base, **secret_env()}.items() if k != "MLCHAIN_WEBHOOK_SECRET"}
    env["MLCHAIN_HOME"] = str(home)
    return env


# --- claims and their execution -----------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    run_id: str
    repo_url: str
    repo_name: str
    ref: str
    name: str
    kind: str
    commit: str
    pusher_email: str | None
    attempt: int
    fresh: bool          # claimed from queued (else taken over from a dead owner)
    mode: str = "run"    # run | resume, decided once the engine state was read
    reason: str | None = None    # a retraining's cause (a push has none)
    dataset: str | None = None   # the dataset version a retraining trains on


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    summary_status: str | None = None
    error: str | None = None


# The pluggable "execute a run" step: runs the chain for a claim, blocking; calls
# on_start(pid) when a child process started (so a later takeover can find it).
Executor = Callable[[Claim, Callable[[int], None]], ExecResult]


def chain_argv(command: Sequence[str], claim: Claim) -> list[str]:
    """The command line of one chain execution.

    It builds the pushed commit, not whatever the branch points at by then (a later push
    has its own run); ``--branch`` keeps the branch (or tag) it came from, which names the
    search's study and appears in the summary. Values go as ``--opt=value`` and the
    repository after ``--``: a ref or URL that starts with a dash must never be read as an option.
    """
    if claim.mode == "resume":
        return [*command, "resume", "--json", "--", claim.run_id]
    # --no-resume: `mlchain run` would otherwise first resume any interrupted run it finds,
    # which here are the service's to resume (one worker each), never a bystander's.
    argv = [*command, "run", f"--ref={claim.commit}", f"--branch={claim.name}", f"--run-id={claim.run_id}",
            "--no-resume", "--json"]
    if claim.pusher_email:
        argv.append(f"--pusher-email={claim.pusher_email}")
    if claim.reason:
        argv.append(f"--reason={claim.reason}")
    if claim.dataset:
        argv.append(f"--dataset={claim.dataset}")
    return [*argv, "--", claim.repo_url]


def _load_prctl() -> Callable[[int, int], int] | None:
    try:
        import ctypes

        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent: the child between fork and exec must not import (the import
# lock may be held by another thread at fork time) or allocate; it only makes one call.
_PRCTL = _load_prctl() if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the service dies, even by SIGKILL.

    A chain outliving a killed service would run twice once the restarted service
    resumes it. Linux only; elsewhere the takeover kills a leftover child by pid.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class SubprocessExecutor:
    """Runs ``mlchain run``/``mlchain resume`` in a child process (a crash there never takes
    the service down). stdout (the JSON summary) and stderr go to files under ``logs_dir``."""

    home: Path
    logs_dir: Path
    command: Sequence[str] = (sys.executable, "-m", "mlchain.cli")
    base_env: Mapping[str, str] | None = None
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def log_path(self, run_id: str) -> Path:
        return self.logs_dir / f"{run_id}.log"

    def __call__(self, claim: Claim, on_start: Callable[[int], None]) -> ExecResult:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = chain_argv(self.command, claim)
        # The environment is passed through on purpose (PATH, proxies, CA bundles, MLCHAIN_*):
        # the chain must see what the operator configured, less the webhook secret.
        env = child_env(os.environ if self.base_env is None else self.base_env, self.home)
        out_path = self.logs_dir / f"{claim.run_id}.json"
        with open(self.log_path(claim.run_id), "ab") as err, open(out_path, "wb") as out:
            err.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {claim.attempt}: "
                      f"{' '.join(argv[3:]) if argv[:3] == list(self.command)[:3] else ' '.join(argv)}\n"
                      .encode())
            err.flush()
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                        start_new_session=True,
                                        preexec_fn=_die_with_parent)  # noqa: PLW1509 (one C call, see _PRCTL)
            except OSError as exc:
                return ExecResult(returncode=127, error=f"cannot start the chain: {exc}")
            with self._lock:
                self._children[claim.run_id] = proc
            on_start(proc.pid)
            try:
                returncode = proc.wait()
            finally:
                with self._lock:
                    self._children.pop(claim.run_id, None)
        return ExecResult(returncode=returncode, summary_status=_summary_status(out_path))

    def stop(self, grace_s: float = 10.0) -> None:
        """Service shutdown: SIGTERM each chain's process group, SIGKILL after ``grace_s``."""
        with self._lock:
            procs = list(self._children.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)


def _summary_status(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) else None


# --- process identity ------------------------------------------------------------------


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{proc_start_time(pid) or '-'}"


def owner_alive(owner: str) -> bool | None:
    """Is the service that owns a lease still running? None when it is on another host."""
    host, _, rest = owner.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    pid = int(pid_s)
    actual = proc_start_time(pid)
    if actual is not None:
        return start in ("-", actual)
    return pid_alive(pid) and start == "-"


def kill_leftover_child(pid: int | None, run_id: str) -> None:
    """Kill a chain process that outlived its service (no PDEATHSIG off Linux), if it is one."""
    if not pid:
        return
    args = proc_cmdline(pid) or []
    if any(run_id.encode() in arg for arg in args):  # `--run-id=ID` or `resume -- ID`
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


# --- the store ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    outcome: Outcome
    run_id: str | None = None
    reason: str | None = None


class WebhookQueue:
    """The queue file; every write is a short transaction on a connection of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.executescript(SCHEMA)
            sqlitefile.add_missing_columns(db, "queue", ADDED_COLUMNS)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = connect(self.path)
        try:
            yield db
        finally:
            db.close()

    # the request path ------------------------------------------------------------------
    def record_push(self, delivery_id: str, decision: Decision, now: float | None = None) -> Recorded:
        """Record a push delivery (and enqueue its run when accepted), committed (fsynced)
        when this returns. The service records through a DeliveryWriter instead."""
        with self.connect() as db:
            return commit_push(db, delivery_id, decision, time.time() if now is None else now)

    def enqueue_retrain(self, *, repo_url: str, repo_name: str, commit: str, reason: str, dataset: str,
                        now: float | None = None) -> str:
        """Queue a chain run of ``repo_url`` at ``commit`` that no push asked for (the drift
        observer's retraining), committed when this returns; returns its run id. The workers
        run it like a push (``mlchain run``), with its reason and dataset version."""
        at = time.time() if now is None else now
        run_id = new_run_id(RETRAIN_RUN_PREFIX, at)
        delivery_id = f"retrain-{run_id}"
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO deliveries (delivery_id, event, received_at, outcome, reason, run_id)"
                           " VALUES (?,?,?,?,?,?)", (delivery_id, "retrain", at, "accepted", reason, run_id))
                db.execute("INSERT INTO queue (run_id, delivery_id, lane, repo_url, repo_name, ref, name, kind,"
                           " commit_sha, status, enqueued_at, reason, dataset)"
                           " VALUES (?,?,?,?,?,?,?,?,?,'queued',?,?,?)",
                           (run_id, delivery_id, repo_url + RETRAIN_LANE_SUFFIX, repo_url, repo_name, commit,
                            commit[:12], "commit", commit, at, reason, dataset))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return run_id

    # the workers ----------------------------------------------------------------------
    def claim(self, me: str, free_slots: int, now: float | None = None,
              alive: Callable[[str], bool | None] = owner_alive,
              lease_s: float = LEASE_S) -> list[tuple[Claim, int | None]]:
        """Atomically take what ``plan`` says this service may start; returns the claims
        and, for takeovers, the pid of the previous owner's chain process."""
        if free_slots <= 0:
            return []
        now = time.time() if now is None else now
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one claimer at a time, across processes
            try:
                rows = db.execute("SELECT * FROM queue WHERE status IN ('queued','running') ORDER BY seq").fetchall()
                by_id = {r["run_id"]: r for r in rows}
                entries = [Entry(seq=r["seq"], run_id=r["run_id"], lane=r["lane"], status=r["status"],
                                 orphan=r["status"] == "running"
                                 and is_orphan(r["owner"], r["lease_until"], me, now, alive))
                           for r in rows]
                p = plan(entries, free_slots)
                claims: list[tuple[Claim, int | None]] = []
                for run_id in p.takeover:
                    r = by_id[run_id]
                    db.execute("UPDATE queue SET owner=?, lease_until=?, heartbeat_at=?, attempts=attempts+1,"
                               " child_pid=NULL WHERE run_id=? AND status='running'",
                               (me, now + lease_s, now, run_id))
                    claims.append((_claim(r, fresh=False, attempt=r["attempts"] + 1), r["child_pid"]))
                for old, new in p.superseded:
                    db.execute("UPDATE queue SET status='superseded', superseded_by=?, finished_at=?"
                               " WHERE run_id=? AND status='queued'", (new, now, old))
                for run_id in p.start:
                    r = by_id[run_id]
                    db.execute("UPDATE queue SET status='running', owner=?, lease_until=?, heartbeat_at=?,"
                               " started_at=?, attempts=1 WHERE run_id=? AND status='queued'",
                               (me, now + lease_s, now, now, run_id))
                    claims.append((_claim(r, fresh=True, attempt=1), None))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return claims

    def set_child(self, run_id: str, me: str, pid: int) -> None:
        with self.connect() as db:
            db.execute("UPDATE queue SET child_pid=? WHERE run_id=? AND owner=?", (pid, run_id, me))

    def heartbeat(self, me: str, now: float | None = None, lease_s: float = LEASE_S) -> None:
        now = time.time() if now is None else now
        with self.connect() as db:
            db.execute("UPDATE queue SET heartbeat_at=?, lease_until=? WHERE owner=? AND status='running'",
                       (now, now + lease_s, me))

    def finish(self, run_id: str, me: str, result: str, exit_code: int | None, error: str | None = None,
               now: float | None = None) -> None:
        with self.connect() as db:
            db.execute("UPDATE queue SET status='finished', result=?, exit_code=?, error=?, finished_at=?,"
                       " child_pid=NULL WHERE run_id=? AND owner=? AND status='running'",
                       (result, exit_code, error, time.time() if now is None else now, run_id, me))

    def release(self, run_id: str, me: str) -> None:
        """Give the lease up at once (shutdown, or a retry): the next claim takes it over."""
        with self.connect() as db:
            # owner NULL: even this service's own next claim sees it as an orphan to take over
            db.execute("UPDATE queue SET lease_until=0, owner=NULL, child_pid=NULL WHERE run_id=? AND owner=?"
                       " AND status='running'", (run_id, me))

    # reading -------------------------------------------------------------------------
    def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM queue ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def active_entries(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM queue WHERE status IN ('queued','running') ORDER BY seq").fetchall()
        return [dict(r) for r in rows]

    def entry(self, run_id: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM queue WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row is not None else None

    def counts(self) -> dict[str, int]:
        with self.connect() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM queue GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}


def commit_push(db: sqlite3.Connection, delivery_id: str, decision: Decision, at: float) -> Recorded:
    """One transaction: the delivery's row (the de-duplication) and, when accepted, its queue row."""
    db.execute("BEGIN IMMEDIATE")  # the duplicate check and the insert, with no writer between
    try:
        rec = _record(db, delivery_id, decision, at)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return rec


def _record(db: sqlite3.Connection, delivery_id: str, decision: Decision, at: float) -> Recorded:
    prior = db.execute("SELECT run_id, reason FROM deliveries WHERE delivery_id=?", (delivery_id,)).fetchone()
    if prior is not None:
        return Recorded("duplicate", prior["run_id"], prior["reason"])
    job = decision.job if decision.action == "enqueue" else None
    run_id = new_run_id(WEBHOOK_RUN_PREFIX, at) if job is not None else None
    db.execute("INSERT INTO deliveries (delivery_id, event, received_at, outcome, reason, run_id)"
               " VALUES (?,?,?,?,?,?)",
               (delivery_id, "push", at, "accepted" if job is not None else "ignored", decision.reason, run_id))
    if job is None:
        return Recorded("ignored", None, decision.reason)
    db.execute("INSERT INTO queue (run_id, delivery_id, lane, repo_url, repo_name, ref, name, kind, commit_sha,"
               " pusher_email, status, enqueued_at) VALUES (?,?,?,?,?,?,?,?,?,?,'queued',?)",
               (run_id, delivery_id, job.lane, job.repo_url, job.repo_name, job.ref, job.name, job.kind,
                job.commit, job.pusher_email, at))
    return Recorded("accepted", run_id, decision.reason)


class DeliveryWriter:
    """How the service records deliveries: one transaction each, in one thread, on one
    connection kept open.

    One thread, because SQLite lets one writer in at a time anyway: writers waiting here
    are served in order, while writers polling the file lock sleep between tries and the
    unlucky ones wait long. One connection, because closing the last connection to a WAL
    file checkpoints it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(1, "webhook-queue")
        self._db: sqlite3.Connection | None = None

    async def record_push(self, delivery_id: str, decision: Decision) -> Recorded:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._record, delivery_id, decision, time.time())

    def _record(self, delivery_id: str, decision: Decision, at: float) -> Recorded:
        if self._db is None:
            self._db = connect(self.path)
        try:
            return commit_push(self._db, delivery_id, decision, at)
        except Exception:
            self._close()  # whatever broke, the next delivery starts on a fresh connection
            raise

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def close(self) -> None:
        self._thread.submit(self._close).result()
        self._thread.shutdown()


def _claim(row: sqlite3.Row, *, fresh: bool, attempt: int) -> Claim:
    return Claim(run_id=row["run_id"], repo_url=row["repo_url"], repo_name=row["repo_name"], ref=row["ref"],
                 name=row["name"], kind=row["kind"], commit=row["commit_sha"], pusher_email=row["pusher_email"],
                 attempt=attempt, fresh=fresh, reason=row["reason"], dataset=row["dataset"])


# --- the workers ------------------------------------------------------------------------


class Dispatcher:
    """Claims queue rows and runs each in a thread through the executor; renews leases.

    ``state_status(run_id)`` reads the engine's record of a run (None if it has none):
    a taken-over row is run, resumed or just closed from it.
    """

    def __init__(self, wq: WebhookQueue, executor: Executor, workers: int,
                 state_status: Callable[[str], str | None], *, poll_s: float = 1.0,
                 heartbeat_s: float = HEARTBEAT_S, lease_s: float = LEASE_S) -> None:
        self.wq = wq
        self.executor = executor
        self.workers = workers
        self.state_status = state_status
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.me = owner_id()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in ((self._loop, "webhook-dispatch"), (self._beat, "webhook-heartbeat")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        self._wake.set()

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def stop(self, grace_s: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        stop = getattr(self.executor, "stop", None)
        if callable(stop):
            stop(grace_s)
        with self._lock:
            running = list(self._running.values())
        for t in running:
            t.join(timeout=grace_s)
        for t in self._threads:
            t.join(timeout=grace_s)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a locked or broken file must not end the worker loop
                log.exception("webhook queue: claiming failed; retrying")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def tick(self) -> int:
        """One scheduling pass; returns how many executions it started."""
        claims = self.wq.claim(self.me, self.workers - self.busy, lease_s=self.lease_s)
        for claim, old_child in claims:
            if not claim.fresh:
                kill_leftover_child(old_child, claim.run_id)
            t = threading.Thread(target=self._execute, args=(claim,), name=f"run-{claim.run_id}", daemon=True)
            with self._lock:
                self._running[claim.run_id] = t
            t.start()
        return len(claims)

    def _beat(self) -> None:
        while not self._stopping.wait(self.heartbeat_s):
            try:
                self.wq.heartbeat(self.me, lease_s=self.lease_s)
            except Exception:
                log.exception("webhook queue: heartbeat failed")

    def _execute(self, claim: Claim) -> None:
        try:
            self._execute_claim(claim)
        except Exception as exc:  # never leave a row running with a live owner forever
            log.exception("run %s: the worker failed", claim.run_id)
            self.wq.finish(claim.run_id, self.me, "failed", None, f"worker error: {exc}")
        finally:
            with self._lock:
                self._running.pop(claim.run_id, None)
            self._wake.set()

    def _execute_claim(self, claim: Claim) -> None:
        state = self.state_status(claim.run_id)
        action = recovery_action(claim.fresh, state)
        if action == "finish":
            self.wq.finish(claim.run_id, self.me, state or "unknown", None, "finished before a service restart")
            return
        if claim.attempt > MAX_ATTEMPTS:
            self.wq.finish(claim.run_id, self.me, "failed", None,
                           f"gave up: the chain process died {claim.attempt - 1} times")
            return
        claim = _with_mode(claim, action)
        log.info("run %s: %s %s %s at %s (attempt %d)", claim.run_id, action, claim.repo_name, claim.name,
                 claim.commit[:12], claim.attempt)
        res = self.executor(claim, lambda pid: self.wq.set_child(claim.run_id, self.me, pid))
        verdict, result = final_result(res.returncode, res.summary_status, self.state_status(claim.run_id),
                                       self._stopping.is_set())
        if verdict == "finish":
            self.wq.finish(claim.run_id, self.me, result or "unknown", res.returncode, res.error)
            log.info("run %s: finished %s (exit %s)", claim.run_id, result, res.returncode)
        else:
            self.wq.release(claim.run_id, self.me)
            log.warning("run %s: chain process ended by signal %s; %s", claim.run_id, -res.returncode,
                        "left for the next start" if verdict == "release" else "resuming it")


def _with_mode(claim: Claim, mode: str) -> Claim:
    return replace(claim, mode=mode)
