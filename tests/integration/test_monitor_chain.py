"""Fault injection on the whole chain: the training of a trial is SIGKILLed twenty times at
seeded random points (mid-epoch, or while it starts); the monitor restarts it from its last
checkpoint each time, and the trial still finishes with little work repeated.

Process runner always; docker runner when an engine answers (skipped without one on a
developer's machine, failing in CI)."""

from __future__ import annotations

import email
from pathlib import Path
from typing import Any

import pytest
from docker_support import docker_settings
from test_monitor_support import Killer, epochs_started, hold_epoch, progress_rows, schedule, write_workload

from mlchain import tracking
from mlchain.config import Settings
from mlchain.engine.chain import run_chain
from mlchain.runners.base import TrialSpec
from mlchain.state import StateStore
from mlchain.summary import RunSummary

SEED = 20261124
KILLS = 20
EPOCHS = 30
EPOCH_S = 0.15
FAST_MONITOR: dict[str, Any] = {"max_restarts": 25, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                                "monitor_interval_s": 0.2, "hung_after_s": 60.0}


def run_with_kills(settings: Settings, repo: Path, run_id: str, docker_client: Any = None) -> tuple[RunSummary, Killer]:
    plan = schedule(SEED, KILLS, EPOCHS, EPOCH_S, settings.runner)
    killer = Killer(settings, run_id, plan, docker_client=docker_client, timeout_s=180)
    killer.start()
    try:
        summary = run_chain(settings, str(repo), live=False, run_id=run_id)
    finally:
        killer.stopped.set()
        killer.join(timeout=30)
    assert not killer.is_alive() and killer.error is None, f"the killer failed: {killer.error!r}"
    return summary, killer


def check_the_run(settings: Settings, summary: RunSummary, killer: Killer) -> None:
    assert len(killer.killed_at) == KILLS
    assert summary.status == "passed", summary.explain()
    (trial,) = summary.trials
    assert trial.status == "succeeded" and trial.restarts == KILLS, summary.explain()
    row = StateStore(settings.state_db).get_trial(summary.run_id, 1)
    assert row is not None
    out = TrialSpec.from_json(row.launched_spec).output_dir
    # Work: every epoch begun across the attempts, and every progress line, is at most the
    # epochs needed plus one per kill (the epoch each kill interrupted).
    started, lines = epochs_started(out), progress_rows(out)
    assert len(started) <= EPOCHS + KILLS, (len(started), started)
    assert len(lines) <= EPOCHS + KILLS
    assert max(r["epoch"] for r in lines) == EPOCHS and set(started) == set(range(1, EPOCHS + 1))
    # Restarts and their reasons are in the run state and in `mlchain run`'s output.
    restarts = [e for e in summary.events if e.kind == "restart"]
    assert len(restarts) == KILLS
    assert all("after killed" in e.message for e in restarts)
    assert any("resuming SoftmaxRegression from the checkpoint of epoch" in e.message for e in restarts)
    assert f"monitor: trial 1: restart {KILLS}/{settings.max_restarts} after killed" in summary.explain()
    # One MLflow run for the trial, logged once, that knows it was restarted.
    client = tracking.client(settings)
    experiment = client.get_experiment_by_name(summary.repo_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == trial.mlflow_run_id
    assert int(runs[0].data.tags["mlchain.restarts"]) == KILLS
    assert runs[0].data.tags["mlchain.status"] == "succeeded"
    # The email tells the restarts.
    (eml,) = settings.outbox_dir.glob("*.eml")
    body = _text(email.message_from_bytes(eml.read_bytes()))
    assert f"trial 1: restart {KILLS}/{settings.max_restarts} after killed" in body


def _text(message: email.message.Message) -> str:
    parts = []
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode("utf-8", "replace"))
    return "\n".join(parts)


def test_twenty_kills_on_the_process_runner(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", runner="process", **FAST_MONITOR)
    repo = write_workload(tmp_path, epochs=EPOCHS, epoch_s=EPOCH_S, hold_at=hold_epoch(EPOCHS))
    summary, killer = run_with_kills(settings, repo, "faults-process")
    check_the_run(settings, summary, killer)


@pytest.mark.docker
def test_twenty_kills_on_the_docker_runner(tmp_path: Path, docker_client: Any, sklearn_image: Any,
                                           run_id: str) -> None:
    settings = docker_settings(tmp_path / "home", **FAST_MONITOR)
    repo = write_workload(tmp_path, epochs=EPOCHS, epoch_s=EPOCH_S, hold_at=hold_epoch(EPOCHS))
    summary, killer = run_with_kills(settings, repo, run_id, docker_client=docker_client)
    check_the_run(settings, summary, killer)
    assert summary.trials[0].runner == "docker"

