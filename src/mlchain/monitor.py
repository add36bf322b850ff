"""job6: find training that died, restart the transient failures from the last checkpoint.

The decision for one trial is :func:`plan_for` (pure); :func:`check_trial` gathers what it
needs (the handle's exit info, this attempt's heartbeat) and carries the plan out. job3
(waiting on its trial) and the monitor job (every few minutes on Jenkins, every few
seconds in the local engine) both call it; compare-and-set updates of the run state on the
trial's attempt number make sure only one of them schedules, restarts or gives up.

Transient failures (killed, oom, hung) restart with exponential backoff, at most
``max_restarts`` times per trial; code errors and spent restarts give up, which marks the
trial failed and lets the chain go on to the gate or the failure email.

A restart moves the trial to its next attempt and, in the same update, sets its handle
to ``launching:<time>`` so that nobody attaches to the dead attempt's handle in between.
A launch that fails leaves ``launch-failed:<why>``, which the next look counts as one more
killed attempt (so a runner that cannot start training ends in a give-up, not a loop).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from mlchain import contract, outputs
from mlchain.config import Settings
from mlchain.errors import RunnerUnavailable
from mlchain.failures import FailureKind, Verdict, classify_exit, heartbeat_age
from mlchain.fileio import tail_text
from mlchain.runners.base import (
    LABEL_ATTEMPT,
    LABEL_RUN,
    LABEL_TRIAL,
    ExitInfo,
    TrainingHandle,
    TrialSpec,
    follow_log,
)
from mlchain.searchplan import PRUNED, Pruned
from mlchain.state import StateStore, TrialRow, TrialStatus, claim_restart
from mlchain.trial import LOG_TAIL_LINES, TrialOutcome, collect

Action = Literal["running", "completed", "restarted", "waiting", "gave_up"]
Echo = Callable[[str], None]

LAUNCHING = "launching:"          # handle_ref while a restart is being launched
LAUNCH_FAILED = "launch-failed:"  # handle_ref when the launch raised
LAUNCH_STALE_S = 180.0            # a launch that never recorded its handle: counted as lost
PRUNE_POLL_S = 0.5                # how often a waiter with a pruner reads the progress lines


# --- pure decisions -------------------------------------------------------------------

def backoff_s(settings: Settings, restarts: int) -> float:
    """Exponential backoff before restart number ``restarts + 1``."""
    return backoff_delay(settings.backoff_base_s, settings.backoff_max_s, restarts)


def backoff_delay(base_s: float, max_s: float, restarts: int) -> float:
    return float(max(0.0, min(max_s, base_s * (2 ** min(restarts, 62)))))


def restart_decision(verdict: Verdict, restarts: int, max_restarts: int) -> Literal["restart", "give_up", "none"]:
    """Pure: what to do with a trial in this state."""
    if verdict.kind in ("running", "completed"):
        return "none"
    if verdict.transient and restarts < max_restarts:
        return "restart"
    return "give_up"


PlanKind = Literal["none", "schedule", "wait", "restart", "give_up"]


@dataclass(frozen=True)
class Plan:
    """What to do with one trial now."""

    kind: PlanKind
    cancel: bool = False          # stop the attempt first (it hangs: alive but not training)
    wait_s: float = 0.0           # schedule: the backoff before the restart
    reason: str = ""              # give_up: why


def plan_for(verdict: Verdict, *, restarts: int, max_restarts: int, next_restart_at: float | None,
             now: float, backoff_base_s: float, backoff_max_s: float) -> Plan:
    """Pure: from the verdict on the current attempt and the trial's restart bookkeeping."""
    decision = restart_decision(verdict, restarts, max_restarts)
    if decision == "none":
        return Plan("none")
    cancel = verdict.kind == "hung"
    if decision == "give_up":
        if verdict.transient:
            return Plan("give_up", cancel=cancel,
                        reason=f"{verdict.kind} ({verdict.reason}); restarts spent ({restarts} of {max_restarts})")
        return Plan("give_up", reason=f"{verdict.kind}: {verdict.reason}; not restarted (a code error"
                                      " fails the same way again)")
    if next_restart_at is None:
        wait = backoff_delay(backoff_base_s, backoff_max_s, restarts)
        return Plan("schedule", cancel=cancel, wait_s=wait) if wait > 0 else Plan("restart", cancel=cancel)
    if now < next_restart_at:
        return Plan("wait", cancel=cancel)
    return Plan("restart", cancel=cancel)


def restart_message(number: int, max_restarts: int, kind: str, reason: str, resume: str) -> str:
    return f"restart {number}/{max_restarts} after {kind} ({reason}); {resume}"


ContainerState = Literal["ok", "foreign", "stale_running", "stale_exited"]


def container_state(row: TrialRow | None, attempt_label: str | None, running: bool) -> ContainerState:
    """Pure: a training container against the run state (its trial's row, or None)."""
    if row is None:
        return "foreign"
    current = row.status == TrialStatus.RUNNING and str(row.attempt) == str(attempt_label)
    if current:
        return "ok"
    return "stale_running" if running else "stale_exited"


# --- what a trial's files say ----------------------------------------------------------

def attempt_heartbeat_age(spec: TrialSpec, now: float) -> float | None:
    """Heartbeat of the current attempt: its progress lines, else its start (the params file
    that every runner writes when it starts an attempt) or its last log line."""
    return heartbeat_age(now=now, attempt_started_at=outputs.mtime(spec.params_file),
                         progress_at=outputs.mtime(spec.output_dir / contract.PROGRESS_FILE),
                         log_at=outputs.mtime(spec.log_file))


def resume_point(spec: TrialSpec) -> str:
    """Where the restarted attempt will start, from the trial's checkpoint metadata."""
    from mlchain.sdk import checkpoint_summary

    try:
        return checkpoint_summary(spec.checkpoint_dir, spec.params)
    except (OSError, outputs.UnsafeOutput) as exc:
        why = exc.message.splitlines()[0] if isinstance(exc, outputs.UnsafeOutput) else str(exc)
        return f"checkpoints unreadable ({why}); the training decides where to resume"


def _log_tail(spec: TrialSpec, n: int = LOG_TAIL_LINES) -> list[str]:
    return tail_text(spec.log_file, n).splitlines()


# --- the run state, compare-and-set on the attempt -------------------------------------

def _update_attempt(store: StateStore, row: TrialRow, where: str = "", **values: Any) -> bool:
    """Update the trial only if it is still running the attempt ``row`` saw."""
    cols = ", ".join(f"{k} = ?" for k in values)
    with store.connect() as db:
        cur = db.execute(f"UPDATE trials SET {cols} WHERE run_id = ? AND number = ? AND attempt = ?"
                         f" AND status = 'running'{where}",
                         (*values.values(), row.run_id, row.number, row.attempt))
        return cur.rowcount == 1


# --- acting on one trial ---------------------------------------------------------------

def _runner(settings: Settings, name: str) -> Any:
    from mlchain.runners.select import runner_by_name

    return runner_by_name(name, settings)


def attach(settings: Settings, row: TrialRow, follow_logs: bool = False) -> TrainingHandle:
    """The current attempt's handle. Only job3 follows a container's logs into train.log (one
    follower per attempt); the monitor's passes only look."""
    spec = TrialSpec.from_json(row.launched_spec)
    runner = _runner(settings, row.launched_runner)
    if row.runner == "docker":
        return runner.attach(spec, row.handle_ref, follow_logs=follow_logs)
    return runner.attach(spec, row.handle_ref)


_unreachable: set[tuple[str, int]] = set()  # trials whose runner did not answer (said once per outage)


def _say_once(say: Echo, row: TrialRow, line: str) -> None:
    key = (row.run_id, row.number)
    if key not in _unreachable:
        _unreachable.add(key)
        say(line)


def _launch_state(row: TrialRow, now: float) -> tuple[str, ExitInfo | None]:
    """('attached', None) for a real handle; ('waiting', None) while a restart launches;
    ('lost', info) for a launch that failed or never finished."""
    ref = str(row.handle_ref or "")
    spec = TrialSpec.from_json(row.launched_spec)
    if ref.startswith(LAUNCHING):
        try:
            since = float(ref[len(LAUNCHING):])
        except ValueError:
            since = 0.0
        if now - since < LAUNCH_STALE_S:
            return "waiting", None
        return "lost", ExitInfo(engine_lost=True, last_lines=_log_tail(spec) +
                                [f"mlchain: the restart launched at {since:.0f} never recorded its handle"])
    if ref.startswith(LAUNCH_FAILED):
        return "lost", ExitInfo(engine_lost=True, last_lines=_log_tail(spec) +
                                [f"mlchain: the restart could not start: {ref[len(LAUNCH_FAILED):]}"])
    return "attached", None


def check_trial(settings: Settings, store: StateStore, row: TrialRow, echo: Echo | None = None,
                now: float | None = None, handle: TrainingHandle | None = None) -> Action:
    """Look at one launched trial and act: nothing, restart it, or give up on it."""
    say = echo or (lambda _line: None)
    now = time.time() if now is None else now
    number = row.number
    spec = TrialSpec.from_json(row.launched_spec)
    state, info = _launch_state(row, now)
    if state == "waiting":
        return "waiting"
    running = False
    if info is None:
        try:
            handle = handle if handle is not None and handle.ref == row.handle_ref else attach(settings, row)
            status = handle.status()
            running = status in ("running", "created")
            info = handle.exit_info()
            if info.engine_lost:
                # Gone, or is its engine just not answering (dockerd restarting)? Only a runner
                # that answers can tell; until then nothing is decided (nor restarted twice).
                _runner(settings, row.launched_runner)
        except RunnerUnavailable as exc:
            _say_once(say, row, f"trial {number}: cannot reach its runner ({exc.message.splitlines()[0]});"
                                " will look again")
            return "waiting"
        _unreachable.discard((row.run_id, number))
        info.heartbeat_age_s = attempt_heartbeat_age(spec, now)
    verdict = classify_exit(info, running=running, hung_after_s=settings.hung_after_s)
    plan = plan_for(verdict, restarts=row.restarts, max_restarts=settings.max_restarts,
                    next_restart_at=row.next_restart_at, now=now,
                    backoff_base_s=settings.backoff_base_s, backoff_max_s=settings.backoff_max_s)
    if plan.kind == "none":
        return "completed" if verdict.kind == "completed" else "running"
    if plan.cancel and handle is not None:
        handle.cancel()
    tail = "\n".join(info.last_lines[-LOG_TAIL_LINES:])
    if plan.kind == "give_up":
        if _update_attempt(store, row, status="failed", failure_kind=verdict.kind, failure_log=tail or None,
                           next_restart_at=None):
            store.add_event(row.run_id, "give_up", f"gave up: {plan.reason}", trial=number)
            say(f"trial {number}: gave up: {plan.reason}")
        return "gave_up"
    if plan.kind == "schedule":
        # The verdict is kept with the trial: after a hung attempt is stopped it looks merely
        # "killed", and the restart must say why it happened.
        if _update_attempt(store, row, " AND next_restart_at IS NULL", next_restart_at=now + plan.wait_s,
                           failure_kind=verdict.kind, failure_log=verdict.reason):
            say(f"trial {number}: {verdict.kind} ({verdict.reason}); restarting in {plan.wait_s:.1f} s")
        return "waiting"
    if plan.kind == "wait":
        return "waiting"
    kind: str = verdict.kind
    reason = verdict.reason
    if row.failure_kind and row.next_restart_at is not None:
        kind, reason = row.failure_kind, row.failure_log or reason
    return _restart(settings, store, row, spec, kind, reason, say, now)


def _restart(settings: Settings, store: StateStore, row: TrialRow, spec: TrialSpec, kind: str,
             reason: str, say: Echo, now: float) -> Action:
    run_id, number = row.run_id, row.number
    try:
        runner = _runner(settings, row.launched_runner)  # unreachable: wait, without spending a restart
    except RunnerUnavailable as exc:
        _say_once(say, row, f"trial {number}: cannot reach its runner to restart it"
                            f" ({exc.message.splitlines()[0]}); will look again")
        return "waiting"
    _unreachable.discard((run_id, number))
    new_spec = replace(spec, attempt=spec.attempt + 1, job="monitor")
    if not claim_restart(store, run_id, number, row.attempt, spec=new_spec.to_json(),
                         handle_ref=f"{LAUNCHING}{now:.3f}", next_restart_at=None, failure_kind=None,
                         failure_log=None):
        return "restarted"  # someone else restarted it meanwhile
    claimed = replace(row, attempt=row.attempt + 1)
    resume = resume_point(spec)
    try:
        handle = runner.start(new_spec)
    except Exception as exc:  # noqa: BLE001 - recorded; the next look counts it as a lost attempt
        why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        _update_attempt(store, claimed, handle_ref=f"{LAUNCH_FAILED}{why}")
        store.add_event(run_id, "restart", f"restart {row.restarts + 1}/{settings.max_restarts} after"
                                           f" {kind} could not start: {why}", trial=number)
        say(f"trial {number}: the restart could not start: {why}")
        return "waiting"
    _update_attempt(store, claimed, handle_ref=handle.ref)
    message = restart_message(row.restarts + 1, settings.max_restarts, kind, reason, resume)
    store.add_event(run_id, "restart", message, trial=number)
    say(f"trial {number}: {message}")
    return "restarted"


def give_up_now(store: StateStore, row: TrialRow, kind: str, reason: str, log: str | None) -> bool:
    """Mark the trial failed (once, for this attempt) and record why."""
    if _update_attempt(store, row, status="failed", failure_kind=kind, failure_log=log, next_restart_at=None):
        store.add_event(row.run_id, "give_up", f"gave up: {kind}: {reason}", trial=row.number)
        return True
    return False


def prune_now(store: StateStore, row: TrialRow, handle: TrainingHandle, pruned: Pruned, say: Echo) -> bool:
    """Stop a trial the pruner judged hopeless: marked pruned first (for this attempt, so that
    nobody restarts the training it then stops), its handle cancelled (container or process)."""
    if not _update_attempt(store, row, status=PRUNED, metrics=json.dumps(pruned.metrics()), next_restart_at=None):
        return False  # restarted or given up meanwhile: that attempt is judged again
    handle.cancel()
    store.add_event(row.run_id, PRUNED, pruned.reason, trial=row.number)
    say(f"trial {row.number}: {pruned.reason}; stopped")
    return True


def _failed_outcome(row: TrialRow) -> TrialOutcome:
    kind = cast(FailureKind, row.failure_kind or "code_error")
    return TrialOutcome("failed", Verdict(kind, f"gave up ({kind})"), None, {}, row.failure_log)


def supervise_trial(settings: Settings, store: StateStore, run_id: str, number: int,
                    echo: Echo | None = None, judge: Callable[[], Pruned | None] | None = None) -> TrialOutcome:
    """job3's wait: follow the log, let the monitor logic restart what died, return the outcome.
    ``judge``: the search's pruner, asked after each look at a running trial."""
    row = store.get_trial(run_id, number)
    assert row is not None
    spec = TrialSpec.from_json(row.launched_spec)
    stop = threading.Event()
    follower = None
    if echo is not None:
        follower = threading.Thread(target=follow_log, args=(spec.log_file, echo, stop), daemon=True)
        follower.start()
    started = float(row.started_at or time.time())
    handle: TrainingHandle | None = None
    poll_s = settings.monitor_interval_s if judge is None else min(settings.monitor_interval_s, PRUNE_POLL_S)
    try:
        while True:
            row = store.get_trial(run_id, number)
            assert row is not None
            if row.status != TrialStatus.RUNNING:
                return _failed_outcome(row)
            ref = str(row.handle_ref or "")
            if ref and not ref.startswith((LAUNCHING, LAUNCH_FAILED)):
                try:
                    if handle is None or handle.ref != ref:
                        # One handle per attempt; for docker it copies the container's output to train.log.
                        handle = attach(settings, row, follow_logs=True)
                    handle.wait(timeout=poll_s)
                except RunnerUnavailable:
                    handle = None
                    time.sleep(settings.monitor_interval_s)
            action = check_trial(settings, store, row, echo, handle=handle)
            if action == "running" and judge is not None and handle is not None and handle.ref == row.handle_ref:
                pruned = judge()
                if pruned is not None and prune_now(store, row, handle, pruned, echo or (lambda _line: None)):
                    return TrialOutcome(PRUNED, Verdict("pruned", pruned.reason), None, pruned.metrics(), None)
            if action == "completed":
                if handle is None or handle.ref != row.handle_ref:
                    handle = attach(settings, row, follow_logs=True)
                    handle.wait(timeout=settings.monitor_interval_s)  # the log's last lines
                return collect(TrialSpec.from_json(row.launched_spec), handle.exit_info(),
                               hung_after_s=settings.hung_after_s)
            if action == "gave_up":
                again = store.get_trial(run_id, number)
                assert again is not None
                return _failed_outcome(again)
            if time.time() - started > settings.train_timeout_s:
                if handle is not None:
                    handle.cancel()
                log = handle.logs(LOG_TAIL_LINES) if handle is not None else None
                reason = f"training ran past train_timeout_s ({settings.train_timeout_s:g} s)"
                give_up_now(store, row, "hung", reason, log)
                return TrialOutcome("failed", Verdict("hung", reason), None, {}, log)
            if action != "running":
                time.sleep(min(0.5, settings.monitor_interval_s))
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5)


# --- job6: one pass over everything ---------------------------------------------------

_reported: set[str] = set()  # containers already reported by this process (--watch repeats passes)


def scan_containers(settings: Settings, store: StateStore, run_id: str | None = None) -> list[str]:
    """mlchain's training containers (by label) against the run state: stop the running ones
    of an attempt that is no longer current, report the ones no trial here knows."""
    from mlchain.runners.docker import container_name, find_training_containers, spec_of
    from mlchain.runners.select import docker_answers

    client = docker_answers()
    if client is None:
        return []
    lines: list[str] = []
    try:
        for container in find_training_containers(client, run_id):
            labels = container.labels
            run, trial = labels.get(LABEL_RUN, "?"), labels.get(LABEL_TRIAL, "?")
            try:
                row = store.get_trial(run, int(trial))
            except ValueError:
                row = None
            state = container_state(row, labels.get(LABEL_ATTEMPT), container.status in ("running", "created"))
            spec = spec_of(container)
            name = container_name(spec) if spec is not None else container.name
            if state == "ok" or (state != "stale_running" and container.id in _reported):
                continue
            _reported.add(container.id)
            if state == "foreign":
                lines.append(f"container {name} ({container.status}): no trial {trial} of run {run} in"
                             f" {settings.state_db}; left alone")
            elif state == "stale_running":
                container.stop(timeout=10)
                lines.append(f"{run}: trial {trial}: stopped container {name}: attempt"
                             f" {labels.get(LABEL_ATTEMPT)} is not the trial's current one")
    finally:
        client.close()
    return lines


def _prefixed(lines: list[str], prefix: str) -> Echo:
    return lambda line: lines.append(prefix + line)


def monitor_pass(settings: Settings, run_id: str | None = None) -> list[str]:
    """One pass over every launched, uncollected trial (job6), and over the training containers."""
    store = StateStore(settings.state_db)
    lines: list[str] = []
    rows = [r for r in store.active_trials()
            if r.handle_ref and r.spec and (run_id is None or r.run_id == run_id)]
    for row in rows:
        check_trial(settings, store, row, echo=_prefixed(lines, f"{row.run_id}: "))
    if run_id is None or any(r.runner == "docker" for r in rows):
        lines.extend(scan_containers(settings, store, run_id))
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
