"""build_summary takes the gate's defaults by name when a run has no resolved mlchain.yaml (job1
refused it), and picks the best trial through the gate (its direction, the first of equals)."""

from __future__ import annotations

from typing import Any

from mlchain import contract, gate
from mlchain.state import StateStore
from mlchain.summary import build_summary


def test_a_run_without_a_config_is_summarised_with_the_gates_defaults(make_settings: Any) -> None:
    settings = make_settings()
    store = StateStore(settings.state_db)
    store.create_run("r1", "https://example.com/acme/repo.git", "repo", "refs/heads/main", None, status="failed")
    summary = build_summary(store, "r1", settings)
    assert (summary.threshold, summary.metric_name, summary.direction) == (
        gate.DEFAULT_THRESHOLD, contract.DEFAULT_METRIC, gate.DEFAULT_DIRECTION)
    assert summary.best is None


def test_the_best_trial_follows_the_direction_and_is_the_first_of_equals(make_settings: Any) -> None:
    settings = make_settings()
    store = StateStore(settings.state_db)
    store.create_run("r2", "https://example.com/acme/repo.git", "repo", "refs/heads/main", None, status="running")
    for number, metric in ((1, 0.4), (2, 0.2), (3, 0.2), (4, None)):
        store.upsert_trial("r2", number, {"n": number}, status="succeeded" if metric is not None else "failed",
                           metric=metric)
    store.update_run("r2", config={"metric": "rmse", "direction": "minimize", "threshold": 0.1})
    summary = build_summary(store, "r2", settings)
    assert summary.best is not None and summary.best.number == 2
    store.update_run("r2", config={"metric": "accuracy", "direction": "maximize", "threshold": 0.9})
    best = build_summary(store, "r2", settings).best
    assert best is not None and best.number == 1
