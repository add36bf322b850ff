"""job6: find training that died, restart the transient failures from the last checkpoint.

The decision for one trial is :func:`check_trial`; job3 (waiting on its trial) and the
monitor job (every few minutes on Jenkins, every few seconds in the local engine) both
call it, and the state's compare-and-set makes sure only one of them restarts a trial.
Transient failures (killed, oom, hung) restart with exponential backoff, at most
``max_restarts`` times per trial; code errors and spent restarts give up, which marks
the trial failed and lets the chain go on to the gate or the failure email.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Literal

from mlchain.config import Settings
from mlchain.errors import RunnerUnavailable
from mlchain.failures import Verdict, classify_exit
from mlchain.runners.base import TrainingHandle, TrialSpec, follow_log
from mlchain.state import StateStore, claim_give_up, claim_restart
from mlchain.trial import LOG_TAIL_LINES, TrialOutcome, collect

Action = Literal["running", "completed", "restarted", "waiting", "gave_up"]
Echo = Callable[[str], None]


def backoff_s(settings: Settings, restarts: int) -> float:
    """Exponential backoff before restart number ``restarts + 1``."""
    return float(min(settings.backoff_max_s, settings.backoff_base_s * (2 ** restarts)))


def restart_decision(verdict: Verdict, restarts: int, max_restarts: int) -> Literal["restart", "give_up", "none"]:
    """Pure: what to do with a trial in this state."""
    if verdict.kind in ("running", "completed"):
        return "none"
    if verdict.transient and restarts < max_restarts:
        return "restart"
    return "give_up"


def _runner(settings: Settings, name: str) -> Any:
    from mlchain.runners.select import runner_by_name

    return runner_by_name(name, settings)


def attach(settings: Settings, row: dict[str, Any]) -> TrainingHandle:
    spec = TrialSpec.from_json(row["spec"])
    return _runner(settings, row["runner"]).attach(spec, row["handle_ref"])  # type: ignore[no-any-return]


def check_trial(settings: Settings, store: StateStore, row: dict[str, Any], echo: Echo | None = None,
                now: float | None = None) -> Action:
    """Look at one launched trial and act: nothing, restart it, or give up on it."""
    say = echo or (lambda _line: None)
    now = time.time() if now is None else now
    try:
        handle = attach(settings, row)
        running = handle.status() == "running"
        info = handle.exit_info()
    except RunnerUnavailable as exc:
        say(f"trial {row['number']}: cannot reach its runner ({exc.message}); will look again")
        return "waiting"
    verdict = classify_exit(info, running=running, hung_after_s=settings.hung_after_s)
    decision = restart_decision(verdict, row["restarts"], settings.max_restarts)
    if decision == "none":
        return "completed" if verdict.kind == "completed" else "running"
    if verdict.kind == "hung":
        handle.cancel()
    run_id, number = row["run_id"], row["number"]
    tail = "\n".join(info.last_lines[-LOG_TAIL_LINES:])
    if decision == "give_up":
        why = verdict.reason if not verdict.transient else \
            f"{verdict.reason}; restarts spent ({row['restarts']} of {settings.max_restarts})"
        if claim_give_up(store, run_id, number, failure_kind=verdict.kind, failure_log=tail):
            store.add_event(run_id, "give_up", f"gave up: {why}", trial=number)
            say(f"trial {number}: gave up: {why}")
        return "gave_up"
    if row.get("next_restart_at") is None:
        wait = backoff_s(settings, row["restarts"])
        store.update_trial(run_id, number, next_restart_at=now + wait)
        say(f"trial {number}: {verdict.kind} ({verdict.reason}); restarting in {wait:.1f} s")
        if wait > 0:
            return "waiting"
    elif now < float(row["next_restart_at"]):
        return "waiting"
    spec = TrialSpec.from_json(row["spec"])
    new_spec = replace(spec, attempt=spec.attempt + 1, job="job6-monitor")
    if not claim_restart(store, run_id, number, row["attempt"], spec=new_spec.to_json(), next_restart_at=None):
        return "restarted"  # someone else restarted it meanwhile
    handle = _runner(settings, row["runner"]).start(new_spec)
    store.update_trial(run_id, number, handle_ref=handle.ref)
    message = (f"restart {row['restarts'] + 1}/{settings.max_restarts} after {verdict.kind}"
               f" ({verdict.reason}); resuming from the last checkpoint")
    store.add_event(run_id, "restart", message, trial=number)
    say(f"trial {number}: {message}")
    return "restarted"


def _failed_outcome(row: dict[str, Any]) -> TrialOutcome:
    kind = row.get("failure_kind") or "code_error"
    return TrialOutcome("failed", Verdict(kind, f"gave up ({kind})"), None, {}, row.get("failure_log"))


def supervise_trial(settings: Settings, store: StateStore, run_id: str, number: int,
                    echo: Echo | None = None) -> TrialOutcome:
    """job3's wait: follow the log, let the monitor logic restart what died, return the outcome."""
    row = store.get_trial(run_id, number)
    assert row is not None
    spec = TrialSpec.from_json(row["spec"])
    stop = threading.Event()
    follower = None
    if echo is not None:
        follower = threading.Thread(target=follow_log, args=(spec.log_file, echo, stop), daemon=True)
        follower.start()
    started = float(row.get("started_at") or time.time())
    try:
        while True:
            row = store.get_trial(run_id, number)
            assert row is not None
            if row["status"] == "failed":
                return _failed_outcome(row)
            try:
                handle = attach(settings, row)
                handle.wait(timeout=settings.monitor_interval_s)
            except RunnerUnavailable:
                time.sleep(settings.monitor_interval_s)
            action = check_trial(settings, store, row, echo)
            if action == "completed":
                return collect(TrialSpec.from_json(row["spec"]), handle.exit_info(),
                               hung_after_s=settings.hung_after_s)
            if action == "gave_up":
                again = store.get_trial(run_id, number)
                assert again is not None
                return _failed_outcome(again)
            if time.time() - started > settings.train_timeout_s:
                handle.cancel()
                verdict = Verdict("hung", f"training ran past train_timeout_s ({settings.train_timeout_s:.0f} s)")
                claim_give_up(store, run_id, number, failure_kind="hung", failure_log=handle.logs(LOG_TAIL_LINES))
                return TrialOutcome("failed", verdict, None, {}, handle.logs(LOG_TAIL_LINES))
            if action == "waiting":
                time.sleep(min(0.5, settings.monitor_interval_s))
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5)


def monitor_pass(settings: Settings, run_id: str | None = None) -> list[str]:
    """One pass over every launched, uncollected trial (job6)."""
    store = StateStore(settings.state_db)
    lines: list[str] = []
    for row in store.active_trials():
        if not row.get("handle_ref") or (run_id is not None and row["run_id"] != run_id):
            continue
        action = check_trial(settings, store, row, echo=lambda line, r=row: lines.append(f"{r['run_id']}: {line}"))
        if action in ("running", "completed"):
            continue
    return lines


def run_monitor(settings: Settings, watch: bool = False) -> Iterator[str]:
    while True:
        lines = monitor_pass(settings)
        yield from lines
        if not watch:
            if not lines:
                yield "monitor: nothing to do"
            return
        time.sleep(settings.monitor_interval_s)
