"""Pruning in a real chain (issue 19): the process runner, real git, real MLflow, Optuna and
state SQLite stores. The training logs one progress line per epoch; its held-out metric (and
each epoch's val_accuracy) is its ``quality`` param. The repository's own params (0.5, the top of
the space) miss the gate; every trial the study proposes is worse at epoch 1, so successive
halving stops each one after its first epoch."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path
from typing import Any

import pytest
from helpers import make_git_repo

from mlchain.engine.chain import run_chain
from mlchain.monitor import monitor_pass
from mlchain.state import StateStore
from mlchain.tweak import Search, study_name

pytestmark = pytest.mark.slow

EPOCH_S = 1.0
TRAIN = f"""\
import time

from mlchain import sdk

p = sdk.params()
quality = float(p["quality"])
for epoch in range(1, int(p["epochs"]) + 1):
    time.sleep({EPOCH_S})
    sdk.log_epoch(epoch, int(p["epochs"]), val_accuracy=quality, accuracy=quality)
sdk.report({{"accuracy": quality}})
"""
CONFIG = """\
framework: sklearn
threshold: 0.9
budget: {max_trials: 3, patience: 1}
params: {quality: 0.5, epochs: 4}
search:
  pruner: halving
  quality: {type: float, low: 0.1, high: 0.5}
"""


def _process_group(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_a_trial_behind_the_others_is_pruned_stopped_and_reported(tmp_path: Path, make_settings: Any) -> None:
    repo = make_git_repo(tmp_path / "pruned", files={"train.py": TRAIN, "mlchain.yaml": CONFIG})
    settings = make_settings()
    summary = run_chain(settings, str(repo), ref="main", live=False)

    assert summary.status == "budget_spent" and summary.stop_reason == "max_trials reached (3)"
    assert [(t.number, t.status) for t in summary.trials] == [(1, "succeeded"), (2, "pruned"), (3, "pruned")]
    as_json = summary.to_dict()["trials"]
    assert [t["status"] for t in as_json] == ["succeeded", "pruned", "pruned"]
    store = StateStore(settings.state_db)
    rows = store.trials(summary.run_id)
    events = store.events(summary.run_id)
    for row in rows[1:]:
        # its last epoch and value are kept; it is not a failure and was never restarted
        assert row.metric is None and row.failure_kind is None and row.restarts == 0
        assert row.metrics is not None and row.metrics["epoch"] == 1
        assert row.metrics["val_accuracy"] == pytest.approx(row.params["quality"])
        assert row.params["quality"] < 0.5
        # stopped within one epoch of the decision: at most one more progress line after it
        decided = next(e.at for e in events if e.kind == "pruned" and e.trial == row.number)
        output = Path(json.loads(row.spec or "{}")["output_dir"])
        lines = [json.loads(line) for line in (output / "progress.jsonl").read_text().splitlines()]
        assert len([r for r in lines if r["time"] > decided]) <= 1, lines
        assert len(lines) < 4
        # nothing of it is left running
        assert _process_group(int(str(row.handle_ref))) == []
    assert not [e for e in events if e.kind in ("restart", "give_up")]

    # the monitor leaves pruned trials alone
    assert monitor_pass(settings, run_id=summary.run_id) == []
    assert [t.status for t in store.trials(summary.run_id)] == ["succeeded", "pruned", "pruned"]

    # the study holds each pruned trial's intermediate values and knows it was pruned
    search = Search(settings.resolved_optuna_storage, study_name("pruned", "main"))
    study_trials = {t.number: t for t in search.study.trials}
    for row in rows[1:]:
        assert row.optuna_trial is not None
        told = study_trials[row.optuna_trial]
        assert told.state.name == "PRUNED"
        assert told.intermediate_values == {1: pytest.approx(row.params["quality"])}
    baseline = next(t for t in search.study.trials if t.params == {"quality": 0.5})
    assert baseline.intermediate_values == {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}

    # the email says so
    (eml,) = sorted((settings.home_abs / "outbox").glob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = str(msg.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    assert text.count("pruned after epoch 1") == 2
    html = str(msg.get_body(preferencelist=("html",)).get_content())  # type: ignore[union-attr]
    assert html.count("pruned after epoch 1") == 2
    assert "pruned after epoch 1" in summary.explain()

    # and the dashboard
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mlchain.engine.jjb import load_chain
    from mlchain.jobdefs import default_jobs_dir
    from mlchain.webhook.dashboard import DashboardData, router
    from mlchain.webhook.queue import WebhookQueue

    app = FastAPI()
    app.state.dashboard = DashboardData(store, WebhookQueue(tmp_path / "queue.db"), tmp_path / "logs",
                                        load_chain(default_jobs_dir()).stages())
    app.include_router(router)
    page = TestClient(app).get(f"/runs/{summary.run_id}").text
    assert page.count('<tr class="trial-pruned"') == 2
    assert page.count("stopped after epoch 1") == 2


WARM = """\
framework: sklearn
threshold: 0.99
budget: {max_trials: 3, patience: 3}
params: {quality: 0.1, epochs: 1}
search:
  pruner: none
  quality: {type: float, low: 0.1, high: 0.9}
"""


def test_a_new_push_tries_the_previous_push_best_params_second_and_says_so(tmp_path: Path,
                                                                              make_settings: Any) -> None:
    from helpers import git

    repo = make_git_repo(tmp_path / "warm", files={"train.py": TRAIN.replace(str(EPOCH_S), "0.1"), "mlchain.yaml": WARM})
    settings = make_settings()
    first = run_chain(settings, str(repo), ref="main", live=False)
    assert [t.status for t in first.trials] == ["succeeded"] * 3
    best = first.best
    assert best is not None and best.number > 1
    assert not first.search_notes  # nothing to start from on the first push

    (repo / "train.py").write_text((repo / "train.py").read_text() + "# changed code\n")
    git(repo, "commit", "-qam", "a second push")
    second = run_chain(settings, str(repo), ref="main", live=False)
    assert second.trials[1].params == best.params
    assert second.trials[1].metric == pytest.approx(best.metric)
    (note,) = second.search_notes
    assert note.startswith(f"warm start: trying the previous push's best params (its {best.metric:.4f})")
    (eml,) = [m for m in sorted((settings.home_abs / "outbox").glob("*.eml")) if second.run_id in m.name]
    text = email.message_from_bytes(eml.read_bytes(), policy=policy.default).get_body(  # type: ignore[union-attr]
        preferencelist=("plain",)).get_content()
    assert f"Search      {note}" in text

    # a changed space starts afresh, and says so
    (repo / "mlchain.yaml").write_text(WARM.replace("high: 0.9", "high: 0.8"))
    git(repo, "commit", "-qam", "a narrower space")
    third = run_chain(make_settings(max_trials=2), str(repo), ref="main", live=False)
    assert third.search_notes == ["the search space changed since the last push: starting afresh"]
    assert third.trials[1].params != best.params


@pytest.mark.docker
def test_a_pruned_trial_leaves_no_running_container(tmp_path: Path) -> None:
    from docker_support import built_image, docker_settings, require_docker

    client = require_docker()
    built_image("sklearn")
    repo = make_git_repo(tmp_path / "pruned", files={"train.py": TRAIN, "mlchain.yaml": CONFIG})
    settings = docker_settings(tmp_path / "home", monitor_interval_s=0.5, max_trials=2)
    summary = run_chain(settings, str(repo), ref="main", live=False)
    try:
        assert [(t.number, t.status) for t in summary.trials] == [(1, "succeeded"), (2, "pruned")]
        store = StateStore(settings.state_db)
        row = store.trials(summary.run_id)[1]
        decided = next(e.at for e in store.events(summary.run_id) if e.kind == "pruned")
        output = Path(json.loads(row.spec or "{}")["output_dir"])
        lines = [json.loads(line) for line in (output / "progress.jsonl").read_text().splitlines()]
        assert len([r for r in lines if r["time"] > decided]) <= 1, lines
        assert row.restarts == 0
        assert client.containers.get(str(row.handle_ref)).status == "exited"
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.mlchain.run={summary.run_id}"}):
            container.remove(force=True)
