"""job4's decision: pass the gate, try another architecture, or stop. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Action = Literal["pass", "retry", "stop"]
# Failures that another architecture will not fix: the code itself is broken.
FATAL_FAILURES = frozenset({"code_error", "contract_error"})


@dataclass(frozen=True)
class Budget:
    max_trials: int
    max_minutes: float
    patience: int


@dataclass(frozen=True)
class TrialResult:
    number: int
    metric: float | None          # None when the trial failed
    failure_kind: str | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    status: Literal["passed", "budget_spent", "failed", "running"]
    reason: str


def passes(metric: float | None, threshold: float, direction: str = "maximize") -> bool:
    if metric is None:
        return False
    return metric >= threshold if direction == "maximize" else metric <= threshold


def better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def trials_since_best(trials: Sequence[TrialResult], direction: str) -> int:
    """Trials after the best one (all of them when none scored): patience counts these."""
    best_index, best = -1, None
    for i, t in enumerate(trials):
        if t.metric is not None and (best is None or better(t.metric, best, direction)):
            best_index, best = i, t.metric
    return len(trials) - 1 - best_index


NOTHING_TO_TUNE = "nothing to tune: no params and no search space"


def decide(trials: Sequence[TrialResult], threshold: float, budget: Budget, elapsed_minutes: float,
           direction: str = "maximize", metric_name: str = "metric", can_search: bool = True) -> Decision:
    """Gate the latest trial. The loop always ends: max_trials bounds it whatever else happens.
    ``can_search``: whether there is anything to vary in another trial."""
    if not trials:
        return Decision("retry", "running", "no trial yet")
    latest = trials[-1]
    op = ">=" if direction == "maximize" else "<="
    if passes(latest.metric, threshold, direction):
        return Decision("pass", "passed", f"gate passed: {metric_name} {latest.metric:.4f} {op} {threshold:.2f}")
    if latest.failure_kind in FATAL_FAILURES:
        return Decision("stop", "failed", f"training failed ({latest.failure_kind}) in trial {latest.number}")
    stops = (
        (len(trials) >= budget.max_trials, f"max_trials reached ({budget.max_trials})"),
        (elapsed_minutes >= budget.max_minutes,
         f"max_minutes reached ({elapsed_minutes:.1f} of {budget.max_minutes:g} min)"),
        (trials_since_best(trials, direction) >= budget.patience,
         f"patience spent ({budget.patience} trials without improvement)"),
    )
    for hit, reason in stops:
        if hit:
            return Decision("stop", "budget_spent", reason)
    if not can_search:
        return Decision("stop", "budget_spent", NOTHING_TO_TUNE)
    shown = f"{latest.metric:.4f}" if latest.metric is not None else f"no metric ({latest.failure_kind})"
    return Decision("retry", "running", f"{metric_name} {shown} below {threshold:.2f}: trying another architecture")
