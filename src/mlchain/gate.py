"""job4's decision: pass the gate, try another architecture, or stop; and the gate's
arithmetic (passes, better, best) that every report of a run uses. Pure: no I/O, no imports
of mlchain, so that the sdk's neighbours, the dashboard and the email can all use it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

Action = Literal["pass", "retry", "stop"]
Direction = Literal["maximize", "minimize"]
T = TypeVar("T")

# The gate's defaults (mlchain.yaml's, README "mlchain.yaml"); the metric's is the contract's.
DEFAULT_THRESHOLD = 0.80
DEFAULT_DIRECTION: Direction = "maximize"
DEFAULT_MAX_TRIALS = 6
DEFAULT_MAX_MINUTES = 60.0
DEFAULT_PATIENCE = 3
# Failures that another architecture will not fix: the code itself is broken.
FATAL_FAILURES = frozenset({"code_error", "contract_error"})
# A trial the search's pruner stopped early: finished, below the gate, and cheap (patience,
# which is about trials trained in vain, does not count it; max_trials does).
PRUNED = "pruned"


@dataclass(frozen=True)
class Budget:
    max_trials: int
    max_minutes: float
    patience: int


@dataclass(frozen=True)
class TrialResult:
    number: int
    metric: float | None          # None when the trial failed or was pruned
    failure_kind: str | None = None  # why it has no metric: a failure kind, or PRUNED


@dataclass(frozen=True)
class Decision:
    action: Action
    status: Literal["passed", "budget_spent", "failed", "running"]
    reason: str


def passes(metric: float | None, threshold: float, direction: str = DEFAULT_DIRECTION) -> bool:
    """Whether ``metric`` reaches the gate (a missing metric never does)."""
    if metric is None:
        return False
    return metric >= threshold if direction != "minimize" else metric <= threshold


def better(a: float, b: float, direction: str = DEFAULT_DIRECTION) -> bool:
    """Whether ``a`` is strictly better than ``b``."""
    return a > b if direction != "minimize" else a < b


def best_of(items: Sequence[T], metric_of: Callable[[T], float | None],
            direction: str = DEFAULT_DIRECTION) -> T | None:
    """The item with the best metric, the first of equals; None when none has a metric."""
    best: T | None = None
    best_metric: float | None = None
    for item in items:
        metric = metric_of(item)
        if metric is not None and (best_metric is None or better(metric, best_metric, direction)):
            best, best_metric = item, metric
    return best


def comparison(direction: str = DEFAULT_DIRECTION, passed: bool = True) -> str:
    """The operator between a metric and the threshold: '>=' for a maximized metric that
    passed, '<' for one that did not; '<=' and '>' when the metric is minimized."""
    if direction == "minimize":
        return "<=" if passed else ">"
    return ">=" if passed else "<"


def format_threshold(value: float) -> str:
    """0.8 -> '0.80'; 0.805 -> '0.805': two decimals unless that would hide a digit."""
    two = f"{value:.2f}"
    return two if float(two) == value else f"{value:g}"


def trials_since_best(trials: Sequence[TrialResult], direction: str = DEFAULT_DIRECTION) -> int:
    """Trials after the best one (all of them when none scored): patience counts these."""
    best = best_of(list(enumerate(trials)), lambda pair: pair[1].metric, direction)
    return len(trials) - 1 - (best[0] if best is not None else -1)


NOTHING_TO_TUNE = "nothing to tune: no params and no search space"


def decide(trials: Sequence[TrialResult], threshold: float, budget: Budget, elapsed_minutes: float,
           direction: str = DEFAULT_DIRECTION, metric_name: str = "metric", can_search: bool = True) -> Decision:
    """Gate the latest trial. The loop always ends: max_trials bounds it whatever else happens.
    ``can_search``: whether there is anything to vary in another trial."""
    if not trials:
        return Decision("retry", "running", "no trial yet")
    latest = trials[-1]
    op = comparison(direction)
    if passes(latest.metric, threshold, direction):
        return Decision("pass", "passed", f"gate passed: {metric_name} {latest.metric:.4f} {op} {threshold:.2f}")
    if latest.failure_kind in FATAL_FAILURES:
        return Decision("stop", "failed", f"training failed ({latest.failure_kind}) in trial {latest.number}")
    stops = (
        (len(trials) >= budget.max_trials, f"max_trials reached ({budget.max_trials})"),
        (elapsed_minutes >= budget.max_minutes,
         f"max_minutes reached ({elapsed_minutes:.1f} of {budget.max_minutes:g} min)"),
        (trials_since_best([t for t in trials if t.failure_kind != PRUNED], direction) >= budget.patience,
         f"patience spent ({budget.patience} trials without improvement)"),
    )
    for hit, reason in stops:
        if hit:
            return Decision("stop", "budget_spent", reason)
    if not can_search:
        return Decision("stop", "budget_spent", NOTHING_TO_TUNE)
    shown = (f"{latest.metric:.4f}" if latest.metric is not None else "pruned early" if latest.failure_kind == PRUNED
             else f"no metric ({latest.failure_kind})")
    return Decision("retry", "running", f"{metric_name} {shown} below {threshold:.2f}: trying another architecture")
