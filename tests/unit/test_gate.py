"""The gate's decision, without I/O."""

from __future__ import annotations

import pytest

from mlchain import contract, gate
from mlchain.gate import Budget, TrialResult, best_of, better, comparison, decide, passes, trials_since_best
from mlchain.repo_config import RepoConfig

BUDGET = Budget(max_trials=5, max_minutes=30, patience=3)


def results(*metrics: float | None) -> list[TrialResult]:
    return [TrialResult(i + 1, m, None if m is not None else "killed") for i, m in enumerate(metrics)]


def test_a_metric_at_the_threshold_passes() -> None:
    decision = decide(results(0.5, 0.80), 0.80, BUDGET, 1.0, metric_name="accuracy")
    assert (decision.action, decision.status) == ("pass", "passed")
    assert "accuracy 0.8000 >= 0.80" in decision.reason


def test_below_the_threshold_with_budget_left_retries() -> None:
    decision = decide(results(0.5), 0.80, BUDGET, 1.0)
    assert decision.action == "retry"
    assert "below 0.80" in decision.reason


def test_max_trials_stops_the_loop() -> None:
    decision = decide(results(0.1, 0.2, 0.3, 0.4, 0.5), 0.80, BUDGET, 1.0)
    assert (decision.action, decision.status) == ("stop", "budget_spent")
    assert "max_trials reached (5)" in decision.reason


def test_max_minutes_stops_the_loop() -> None:
    decision = decide(results(0.1, 0.2), 0.80, BUDGET, 31.0)
    assert decision.action == "stop" and "max_minutes" in decision.reason


def test_patience_counts_trials_without_improvement() -> None:
    assert trials_since_best(results(0.6, 0.5, 0.4), "maximize") == 2
    decision = decide(results(0.6, 0.5, 0.4, 0.3), 0.80, Budget(10, 30, 3), 1.0)
    assert decision.action == "stop" and "patience spent (3" in decision.reason
    assert decide(results(0.6, 0.5, 0.7), 0.80, Budget(10, 30, 3), 1.0).action == "retry"


def test_failed_trials_count_against_patience_and_trials() -> None:
    decision = decide(results(None, None, None), 0.80, Budget(10, 30, 3), 1.0)
    assert decision.action == "stop" and "patience" in decision.reason


def test_a_code_error_stops_with_failure() -> None:
    trials = [TrialResult(1, 0.5), TrialResult(2, None, "code_error")]
    decision = decide(trials, 0.80, BUDGET, 1.0)
    assert (decision.action, decision.status) == ("stop", "failed")
    assert "code_error" in decision.reason


@pytest.mark.parametrize("direction,metric,ok", [("maximize", 0.9, True), ("maximize", 0.7, False),
                                                  ("minimize", 0.1, True), ("minimize", 0.9, False)])
def test_direction(direction: str, metric: float, ok: bool) -> None:
    assert passes(metric, 0.8 if direction == "maximize" else 0.2, direction) is ok


def test_the_loop_always_ends() -> None:
    """Whatever the metrics, max_trials bounds the loop."""
    trials: list[TrialResult] = []
    for n in range(1, 100):
        trials.append(TrialResult(n, 0.1 + n * 0.001))  # always improving, never passing
        if decide(trials, 0.80, Budget(7, 1e9, 1000), 0.0).action != "retry":
            break
    assert len(trials) == 7


def test_with_nothing_to_tune_a_failed_gate_stops_and_says_why() -> None:
    decision = decide(results(0.5), 0.80, BUDGET, 1.0, can_search=False)
    assert (decision.action, decision.status) == ("stop", "budget_spent")
    assert decision.reason == "nothing to tune: no params and no search space"


def test_with_nothing_to_tune_a_passing_trial_still_passes() -> None:
    decision = decide(results(0.96), 0.80, BUDGET, 1.0, metric_name="accuracy", can_search=False)
    assert (decision.action, decision.status) == ("pass", "passed")


def test_best_of_picks_the_best_metric_the_first_of_equals_and_skips_missing_ones() -> None:
    trials = results(0.7, None, 0.9, 0.9, 0.4)
    assert best_of(trials, lambda t: t.metric, "maximize") is trials[2]
    assert best_of(trials, lambda t: t.metric, "minimize") is trials[4]
    assert best_of(results(None, None), lambda t: t.metric, "maximize") is None
    assert best_of([], lambda t: t, "maximize") is None
    rows = [{"metric": 0.3}, {"metric": 0.1}, {}]  # any item, with its own way to read the metric
    assert best_of(rows, lambda r: r.get("metric"), "minimize") == {"metric": 0.1}


def test_better_is_strict_and_follows_the_direction() -> None:
    assert better(0.9, 0.8, "maximize") and not better(0.8, 0.9, "maximize")
    assert better(0.1, 0.2, "minimize") and not better(0.2, 0.1, "minimize")
    assert not better(0.5, 0.5, "maximize") and not better(0.5, 0.5, "minimize")


def test_a_missing_metric_never_passes_and_the_threshold_itself_passes_both_ways() -> None:
    assert not passes(None, 0.8, "maximize") and not passes(None, 0.8, "minimize")
    assert passes(0.8, 0.8, "maximize") and passes(0.8, 0.8, "minimize")


@pytest.mark.parametrize("direction,passed,op", [("maximize", True, ">="), ("maximize", False, "<"),
                                                 ("minimize", True, "<="), ("minimize", False, ">")])
def test_comparison_names_the_gate_operator(direction: str, passed: bool, op: str) -> None:
    assert comparison(direction, passed) == op


def test_patience_counts_from_the_first_of_equal_bests_and_for_a_minimized_metric() -> None:
    assert trials_since_best(results(0.6, 0.6, 0.5), "maximize") == 2
    assert trials_since_best(results(0.6, 0.2, 0.5), "minimize") == 1
    assert trials_since_best(results(None, None), "maximize") == 2


def test_a_minimized_metric_passes_below_the_threshold() -> None:
    decision = decide(results(0.3, 0.15), 0.2, BUDGET, 1.0, "minimize", "rmse")
    assert (decision.action, decision.reason) == ("pass", "gate passed: rmse 0.1500 <= 0.20")


def test_mlchain_yaml_defaults_are_the_gates() -> None:
    cfg = RepoConfig()
    assert (cfg.threshold, cfg.direction, cfg.metric) == (gate.DEFAULT_THRESHOLD, gate.DEFAULT_DIRECTION,
                                                          contract.DEFAULT_METRIC)
    assert (cfg.threshold, cfg.direction, cfg.metric) == (0.80, "maximize", "accuracy")
    assert (cfg.budget.max_trials, cfg.budget.max_minutes, cfg.budget.patience) == (
        gate.DEFAULT_MAX_TRIALS, gate.DEFAULT_MAX_MINUTES, gate.DEFAULT_PATIENCE) == (6, 60.0, 3)
