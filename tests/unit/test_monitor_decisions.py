"""The monitor's decisions: pure tables first, then check_trial against a fake runner
(a real run-state file, no training) for the compare-and-set rules."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlchain import monitor
from mlchain.config import Settings
from mlchain.failures import Verdict
from mlchain.monitor import Plan, backoff_delay, container_state, plan_for, restart_decision
from mlchain.runners.base import ExitInfo, Status, TrialSpec
from mlchain.state import StateStore, TrialRow, TrialStatus

RUNNING = Verdict("running", "training is running")
COMPLETED = Verdict("completed", "exited 0")
KILLED = Verdict("killed", "ended by SIGKILL")
OOM = Verdict("oom", "killed by the kernel: out of memory")
HUNG = Verdict("hung", "no progress line for 400 s")
CODE = Verdict("code_error", "the training code raised ValueError: x")
CONTRACT = Verdict("contract_error", "no metrics.json")


def plan(verdict: Verdict, restarts: int = 0, next_at: float | None = None, now: float = 100.0,
         base: float = 1.0, cap: float = 60.0, max_restarts: int = 3) -> Plan:
    return plan_for(verdict, restarts=restarts, max_restarts=max_restarts, next_restart_at=next_at, now=now,
                    backoff_base_s=base, backoff_max_s=cap)


PLANS = [
    # (id, plan, expected kind, cancel, wait_s)
    ("running", plan(RUNNING), "none", False, 0.0),
    ("completed", plan(COMPLETED), "none", False, 0.0),
    ("killed-first-time-schedules", plan(KILLED), "schedule", False, 1.0),
    ("backoff-doubles", plan(KILLED, restarts=2), "schedule", False, 4.0),
    ("backoff-is-capped", plan(KILLED, restarts=2, cap=3.0, max_restarts=10), "schedule", False, 3.0),
    ("oom-schedules", plan(OOM, restarts=1), "schedule", False, 2.0),
    ("hung-is-stopped-first", plan(HUNG), "schedule", True, 1.0),
    ("hung-stays-stopped-while-waiting", plan(HUNG, next_at=105.0), "wait", True, 0.0),
    ("waits-for-its-backoff", plan(KILLED, next_at=100.5), "wait", False, 0.0),
    ("restarts-when-the-backoff-is-over", plan(KILLED, next_at=99.0), "restart", False, 0.0),
    ("no-backoff-restarts-at-once", plan(KILLED, base=0.0), "restart", False, 0.0),
    ("restarts-spent", plan(KILLED, restarts=3), "give_up", False, 0.0),
    ("restarts-spent-hung-is-stopped", plan(HUNG, restarts=3), "give_up", True, 0.0),
    ("code-error-never-restarts", plan(CODE), "give_up", False, 0.0),
    ("contract-error-never-restarts", plan(CONTRACT), "give_up", False, 0.0),
    ("zero-restarts-allowed", plan(OOM, max_restarts=0), "give_up", False, 0.0),
]


@pytest.mark.parametrize(("got", "kind", "cancel", "wait_s"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan(got: Plan, kind: str, cancel: bool, wait_s: float) -> None:
    assert (got.kind, got.cancel, got.wait_s) == (kind, cancel, wait_s)


def test_give_up_reasons_say_why() -> None:
    assert "restarts spent (3 of 3)" in plan(KILLED, restarts=3).reason
    assert "not restarted" in plan(CODE).reason and "ValueError" in plan(CODE).reason


def test_restart_decision_never_loops() -> None:
    # Whatever the transient failure, the restarts a trial gets are bounded by max_restarts.
    restarts = 0
    while restart_decision(KILLED, restarts, 5) == "restart":
        restarts += 1
    assert restarts == 5


def test_backoff_delay() -> None:
    assert [backoff_delay(0.5, 10, n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff_delay(1.0, 60.0, 10_000) == 60.0  # no overflow


CONTAINERS = [
    ("no-trial-here", None, "1", True, "foreign"),
    ("current-attempt", {"status": "running", "attempt": 2}, "2", True, "ok"),
    ("older-attempt-still-running", {"status": "running", "attempt": 3}, "2", True, "stale_running"),
    ("older-attempt-exited", {"status": "running", "attempt": 3}, "2", False, "stale_exited"),
    ("trial-finished-container-runs", {"status": "failed", "attempt": 1}, "1", True, "stale_running"),
    ("trial-succeeded-container-exited", {"status": "succeeded", "attempt": 1}, "1", False, "stale_exited"),
]


@pytest.mark.parametrize(("row", "attempt", "running", "expected"), [c[1:] for c in CONTAINERS],
                         ids=[c[0] for c in CONTAINERS])
def test_container_state(row: dict[str, Any] | None, attempt: str, running: bool, expected: str) -> None:
    trial = None if row is None else trial_row(TrialStatus(row["status"]), row["attempt"])
    assert container_state(trial, attempt, running) == expected


def trial_row(status: TrialStatus, attempt: int) -> TrialRow:
    return TrialRow(run_id="r1", number=1, params={}, status=status, metric=None, metrics=None, mlflow_run_id=None,
                    runner="docker", image=None, image_id=None, handle_ref="c1", spec=None, attempt=attempt,
                    restarts=attempt - 1, next_restart_at=None, failure_kind=None, failure_log=None,
                    optuna_trial=None, started_at=None, finished_at=None)


# --- check_trial against a fake runner --------------------------------------------------

@dataclass
class FakeHandle:
    spec: TrialSpec
    ref: str
    state: Status = "running"
    info: ExitInfo = field(default_factory=ExitInfo)
    cancelled: int = 0
    runner: str = "fake"

    def status(self) -> Status:
        return self.state

    def exit_info(self) -> ExitInfo:
        return ExitInfo(**vars(self.info))

    def wait(self, timeout: float | None = None) -> ExitInfo:
        return self.exit_info()

    def logs(self, tail: int | None = None) -> str:
        return "\n".join(self.info.last_lines)

    def cancel(self) -> None:
        self.cancelled += 1
        self.state = "exited"
        self.info = ExitInfo(exit_code=143, signal=15)


class FakeRunner:
    name = "fake"

    def __init__(self) -> None:
        self.handles: dict[str, FakeHandle] = {}
        self.started: list[TrialSpec] = []
        self.lock = threading.Lock()
        self.fail_start: Exception | None = None

    def start(self, spec: TrialSpec) -> FakeHandle:
        if self.fail_start is not None:
            raise self.fail_start
        with self.lock:
            self.started.append(spec)
            handle = FakeHandle(spec, f"h{len(self.started) + 1}")
            self.handles[handle.ref] = handle
        spec.prepare()
        return handle

    def attach(self, spec: TrialSpec, ref: str) -> FakeHandle:
        return self.handles[ref]


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, StateStore, FakeRunner]:
    settings = Settings(home=tmp_path / "home", runner="process", max_restarts=2, backoff_base_s=0.0,
                        hung_after_s=30)
    store = StateStore(settings.state_db)
    runner = FakeRunner()
    monkeypatch.setattr(monitor, "_runner", lambda _settings, _name: runner)
    spec = TrialSpec(run_id="r1", trial=1, framework="sklearn", repo_dir=tmp_path, entry="train.py",
                     params={"a": 1}, output_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt",
                     data_dir=tmp_path / "data")
    spec.prepare()
    runner.handles["h1"] = FakeHandle(spec, "h1")
    store.create_run("r1", "file:///repo", "repo", None, None, status="running")
    store.upsert_trial("r1", 1, {"a": 1}, runner="fake", spec=spec.to_json(), status="running", handle_ref="h1")
    return settings, store, runner


def row(store: StateStore) -> TrialRow:
    got = store.get_trial("r1", 1)
    assert got is not None
    return got


def test_a_killed_trial_restarts_once_even_when_job3_and_the_monitor_both_look(env: Any) -> None:
    settings, store, runner = env
    runner.handles["h1"].state = "exited"
    runner.handles["h1"].info = ExitInfo(exit_code=137, signal=9)
    stale = row(store)  # both read the row before either acts
    lines: list[str] = []
    results = [monitor.check_trial(settings, store, stale, lines.append) for _ in range(2)]
    assert sorted(results) == ["restarted", "restarted"]
    assert len(runner.started) == 1
    after = row(store)
    assert (after.attempt, after.restarts, after.handle_ref) == (2, 1, "h2")
    assert [e.kind for e in store.events("r1")] == ["restart"]
    assert "restart 1/2 after killed (ended by SIGKILL)" in store.events("r1")[0].message
    assert "no checkpoint yet" in store.events("r1")[0].message


def test_restarts_are_capped_then_the_trial_is_given_up(env: Any) -> None:
    settings, store, runner = env
    for ref in ("h1", "h2", "h3"):
        runner.handles[ref].state = "exited"
        runner.handles[ref].info = ExitInfo(exit_code=137, signal=9)
        action = monitor.check_trial(settings, store, row(store))
        if ref != "h3":
            assert action == "restarted"
    assert action == "gave_up"
    assert row(store).status == "failed" and row(store).failure_kind == "killed"
    assert [e.kind for e in store.events("r1")] == ["restart", "restart", "give_up"]
    assert "restarts spent (2 of 2)" in store.events("r1")[-1].message


def test_a_code_error_is_not_restarted(env: Any) -> None:
    settings, store, runner = env
    runner.handles["h1"].state = "exited"
    runner.handles["h1"].info = ExitInfo(exit_code=1, last_lines=["Traceback (most recent call last):",
                                                                  "ValueError: boom"])
    assert monitor.check_trial(settings, store, row(store)) == "gave_up"
    assert runner.started == []
    assert "ValueError: boom" in row(store).failure_log


def test_a_hung_trial_is_stopped_and_the_restart_names_the_hang(env: Any) -> None:
    settings, store, runner = env
    settings = settings.model_copy(update={"backoff_base_s": 5.0})
    spec = TrialSpec.from_json(row(store).launched_spec)
    (spec.output_dir / "progress.jsonl").write_text('{"epoch": 1}\n')
    now = spec.params_file.stat().st_mtime + 100  # no progress line for 100 s > 30 s
    assert monitor.check_trial(settings, store, row(store), now=now) == "waiting"
    assert runner.handles["h1"].cancelled == 1
    assert row(store).next_restart_at == pytest.approx(now + 5.0)
    # After the backoff the stopped attempt looks merely killed; the restart still says why.
    assert monitor.check_trial(settings, store, row(store), now=now + 6) == "restarted"
    assert "after hung (no progress line for 100 s" in store.events("r1")[0].message


def test_a_launch_that_fails_is_recorded_and_counted(env: Any) -> None:
    settings, store, runner = env
    runner.handles["h1"].state = "exited"
    runner.handles["h1"].info = ExitInfo(exit_code=137, signal=9)
    runner.fail_start = RuntimeError("image gone")
    assert monitor.check_trial(settings, store, row(store)) == "waiting"
    assert row(store).handle_ref.startswith(monitor.LAUNCH_FAILED)
    runner.fail_start = None
    assert monitor.check_trial(settings, store, row(store)) == "restarted"
    assert (row(store).restarts, row(store).handle_ref) == (2, "h2")
    assert "could not start: RuntimeError: image gone" in store.events("r1")[0].message


def test_nobody_attaches_while_a_restart_is_launching(env: Any) -> None:
    settings, store, _runner = env
    store.update_trial("r1", 1, handle_ref=f"{monitor.LAUNCHING}{1000.0}")
    assert monitor.check_trial(settings, store, row(store), now=1001.0) == "waiting"
    # A launch that never recorded its handle is, after a while, a lost attempt: restarted.
    assert monitor.check_trial(settings, store, row(store), now=1000.0 + monitor.LAUNCH_STALE_S + 1) \
        == "restarted"

