"""The run state reads back typed records: statuses as enums equal to their stored strings,
JSON columns decoded, and a JSON-ready to_dict() for the dashboard's API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlchain.errors import NotFound, StateError
from mlchain.state import (
    TERMINAL_RUN_STATUSES,
    BuildResult,
    RunRow,
    RunStatus,
    StateStore,
    TrialRow,
    TrialStatus,
)


@pytest.fixture()
def store(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path / "state.db")
    store.create_run("r1", "https://github.com/acme/digits.git", "digits", "main", "ana@example.com")
    store.update_run("r1", status=RunStatus.RUNNING, config={"metric": "accuracy", "threshold": 0.9},
                     email={"summary": "sent to ana@example.com"}, src_dir="/work/r1/src")
    store.upsert_trial("r1", 1, {"max_depth": 8}, status="running", runner="process", spec='{"trial": 1}',
                       metrics={"accuracy": 0.93})
    return store


def test_a_run_reads_back_typed_with_its_json_decoded(store: StateStore) -> None:
    run = store.get_run("r1")
    assert isinstance(run, RunRow)
    assert run.status is RunStatus.RUNNING and run.status == "running"
    assert run.status not in TERMINAL_RUN_STATUSES
    assert run.config == {"metric": "accuracy", "threshold": 0.9}
    assert run.email == {"summary": "sent to ana@example.com"}
    assert (run.registered, run.classification, run.branch) == (None, None, None)
    assert run.source_dir == Path("/work/r1/src")
    with pytest.raises(StateError, match="not classified yet"):
        _ = run.classified_framework
    store.update_run("r1", status="budget_spent")  # writers may still pass the plain string
    assert store.get_run("r1").status is RunStatus.BUDGET_SPENT
    assert store.get_run("r1").status in TERMINAL_RUN_STATUSES


def test_a_trial_reads_back_typed_and_its_spec_stays_text(store: StateStore) -> None:
    trial = store.get_trial("r1", 1)
    assert isinstance(trial, TrialRow)
    assert trial.status is TrialStatus.RUNNING
    assert (trial.params, trial.metrics) == ({"max_depth": 8}, {"accuracy": 0.93})
    assert trial.spec == '{"trial": 1}' and trial.launched_spec == '{"trial": 1}'
    assert (trial.attempt, trial.restarts) == (1, 0)
    assert store.trials("r1") == [trial] and store.active_trials() == [trial]
    assert store.get_trial("r1", 2) is None
    store.upsert_trial("r1", 2, {"max_depth": 4})
    with pytest.raises(StateError, match="trial 2 of run 'r1' has no MLflow run: it was never launched"):
        _ = store.get_trial("r1", 2).launched_mlflow_run_id  # type: ignore[union-attr]


def test_builds_and_events_read_back_typed(store: StateStore) -> None:
    seq = store.add_build("r1", "job1-pull", {"RUN_ID": "r1"})
    store.update_build("r1", seq, result="SUCCESS", log_path="/logs/1.log")
    (build,) = store.builds("r1")
    assert build.result is BuildResult.SUCCESS and build.result == "SUCCESS"
    assert (build.job, build.number, build.params, build.log_path) == ("job1-pull", 1, {"RUN_ID": "r1"},
                                                                        "/logs/1.log")
    assert store.get_build("r1", seq) == build
    store.add_event("r1", "restart", "restart 1/3 after killed", trial=1)
    (event,) = store.events("r1")
    assert (event.kind, event.trial, event.message) == ("restart", 1, "restart 1/3 after killed")
    assert store.events("r1", after_id=event.id) == []


def test_the_dashboard_view_is_plain_json_without_specs(store: StateStore) -> None:
    store.add_build("r1", "job1-pull", {"RUN_ID": "r1"})
    store.add_event("r1", "info", "hello")
    view = store.run_view("r1")
    again = json.loads(json.dumps(view))
    assert again == view
    assert type(view["status"]) is str and view["status"] == "running"
    assert view["config"]["threshold"] == 0.9
    assert [type(t["status"]) for t in view["trials"]] == [str]
    assert "spec" not in view["trials"][0] and view["trials"][0]["params"] == {"max_depth": 8}
    assert [(b["job"], b["result"]) for b in view["builds"]] == [("job1-pull", "PENDING")]
    assert [(e["kind"], e["message"]) for e in view["events"]] == [("info", "hello")]


def test_an_unknown_run_is_not_found(store: StateStore) -> None:
    with pytest.raises(NotFound, match="no run 'nope'"):
        store.get_run("nope")
