"""`mlchain train` waits for its trial as job3 does: a training killed for a transient reason
is restarted from its last checkpoint and the command still succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_for
from test_monitor_support import (
    Kill,
    Killer,
    _alive,
    epochs_started,
    hold_epoch,
    progress_rows,
    write_workload,
)

from mlchain.config import Settings
from mlchain.runners.base import TrialSpec
from mlchain.state import StateStore, TrialRow

pytestmark = pytest.mark.slow


def start_train(tmp_path: Path, repo: Path) -> tuple[Settings, subprocess.Popen[str]]:
    home = tmp_path / "home"
    settings = Settings(home=home, runner="process", backoff_base_s=0.05, monitor_interval_s=0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    env.update({"MLCHAIN_HOME": str(home), "MLCHAIN_BACKOFF_BASE_S": "0.05", "MLCHAIN_MONITOR_INTERVAL_S": "0.2"})
    train = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "train", str(repo), "--runner", "process",
                              "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return settings, train


def the_trial(settings: Settings) -> TrialRow:
    """The trial `mlchain train` launched, once it runs (its run id is minted inside the command)."""
    state = wait_for(lambda: settings.state_db.exists() and StateStore(settings.state_db), 120, "the run state")
    return wait_for(lambda: next((r for r in state.active_trials() if r.handle_ref), None),
                    120, "the trial of mlchain train")


def test_mlchain_train_restarts_a_killed_training_and_finishes(tmp_path: Path) -> None:
    epochs = 8
    repo = write_workload(tmp_path, epochs=epochs, epoch_s=0.2, hold_at=hold_epoch(epochs))
    settings, train = start_train(tmp_path, repo)
    try:
        row = the_trial(settings)
        # SIGKILL of the training process itself (not its supervisor) after two epochs
        killer = Killer(settings, row.run_id, [Kill(2, 0.05, "training")])
        killer.start()
        out, err = train.communicate(timeout=300)
    finally:
        if train.poll() is None:
            train.kill()
    killer.join(timeout=30)
    assert not killer.is_alive() and killer.error is None, repr(killer.error)
    assert len(killer.killed_at) == 1
    assert train.returncode == 0, out + err
    result = json.loads(out[out.index("{"):])
    assert result["status"] == "succeeded" and result["metric"] is not None
    trial = StateStore(settings.state_db).get_trial(row.run_id, 1)
    assert trial is not None
    assert (trial.status, trial.restarts, trial.attempt) == ("succeeded", 1, 2)
    assert trial.mlflow_run_id == result["mlflow_run_id"]
    events = [e.message for e in StateStore(settings.state_db).events(row.run_id)]
    assert any(m.startswith("restart 1/3 after killed") for m in events), events
    # resumed from the checkpoint: the epochs after the kill were not all trained again from 1
    output = TrialSpec.from_json(trial.launched_spec).output_dir
    started = epochs_started(output)
    assert started.count(1) == 1 and started[-1] == epochs, started
    assert max(r["epoch"] for r in progress_rows(output)) == epochs
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=settings.resolved_tracking_uri).get_run(result["mlflow_run_id"])
    assert run.data.tags["mlchain.restarts"] == "1"
    assert run.info.status == "FINISHED"


def test_an_interrupted_mlchain_train_stops_its_training_and_marks_the_trial_failed(tmp_path: Path) -> None:
    repo = write_workload(tmp_path, epochs=6, epoch_s=0.1, hold_at=2)  # held at epoch 2: it never ends alone
    settings, train = start_train(tmp_path, repo)
    try:
        row = the_trial(settings)
        output = TrialSpec.from_json(row.launched_spec).output_dir
        wait_for(lambda: len(progress_rows(output)) >= 1, 120, "the first epoch")
        state = StateStore(settings.state_db)
        wait_for(lambda: state.get_trial(row.run_id, 1).mlflow_run_id, 120, "the trial's MLflow run")
        train.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = train.communicate(timeout=60)
    finally:
        if train.poll() is None:
            train.kill()
    assert train.returncode != 0, out + err
    trial = StateStore(settings.state_db).get_trial(row.run_id, 1)
    assert trial is not None
    assert (trial.status, trial.failure_kind, trial.restarts) == ("failed", "killed", 0), out + err
    assert not _alive(int(row.handle_ref))  # the training's supervisor (and its group) is gone
    events = [e.message for e in StateStore(settings.state_db).events(row.run_id)]
    assert events == ["gave up: killed: mlchain train stopped waiting for it"]
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=settings.resolved_tracking_uri).get_run(trial.mlflow_run_id)
    assert run.info.status == "KILLED"  # not left RUNNING for ever
