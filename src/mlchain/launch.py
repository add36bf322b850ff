"""The one way to launch a trial and the one way to wait for it, shared by `mlchain train`
and the chain's job2 (launch) and job3 (wait).

Both work on the trial's row in the run state, so whoever waits (job3, `mlchain train`) and
job6 restart a training that died the same way, through :func:`mlchain.monitor.supervise_trial`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlchain import tracking
from mlchain import trial as trials
from mlchain.config import Settings
from mlchain.repo_config import RepoConfig
from mlchain.runners.base import TrialSpec
from mlchain.searchplan import Pruned
from mlchain.state import StateStore, TrialRow, TrialStatus
from mlchain.trial import TrialOutcome

Echo = Callable[[str], None]


@dataclass(frozen=True)
class MlflowRunSpec:
    """Where a trial's MLflow run goes: the experiment, the run's name and its tags."""

    experiment: str
    run_name: str
    tags: Mapping[str, str]


def launch_trial(settings: Settings, store: StateStore, *, run_id: str, number: int, framework: str,
                 repo_dir: Path, cfg: RepoConfig, params: Mapping[str, Any], mlflow_run: MlflowRunSpec,
                 job: str, echo: Echo | None = None, data_dir: Path | None = None) -> TrialRow:
    """Start trial ``number`` of ``run_id`` (its row must exist): choose the runner, fill the dataset
    cache, ensure the image (with the repository's requirements layer), make the spec, start the
    handle, create the MLflow run. ``data_dir``: a dataset version to train on (a retraining).
    Returns the trial's row."""
    from mlchain.datasets import find_dataset_calls, prepare_datasets
    from mlchain.runners.select import get_runner

    runner = get_runner(settings, echo=echo)
    datasets = prepare_datasets(settings, find_dataset_calls(repo_dir), network=cfg.network, echo=echo)
    image = image_id = python = None
    if runner.name == "process":
        from mlchain.repo_layer import ensure_repo_venv

        venv_python = ensure_repo_venv(settings, repo_dir, framework, echo=echo)
        python = str(venv_python) if venv_python is not None else None
    if runner.name == "docker":
        from mlchain.images import ensure_image
        from mlchain.repo_layer import ensure_repo_image

        ref = ensure_image(settings, framework, echo=echo)
        ref = ensure_repo_image(settings, ref, repo_dir, echo=echo) or ref
        image, image_id = ref.tag, ref.image_id
    spec = trials.make_spec(settings, run_id=run_id, trial=number, framework=framework, repo_dir=repo_dir,
                            cfg=cfg, params=params, image=image, job=job, data_dir=data_dir, datasets=datasets,
                            python=python)
    store.update_trial(run_id, number, runner=runner.name, image=image, image_id=image_id, spec=spec.to_json(),
                       status="running", started_at=time.time())
    handle = runner.start(spec)  # training starts first; the MLflow run is created while it imports
    store.update_trial(run_id, number, handle_ref=handle.ref)
    ensure_mlflow_run(settings, store, run_id, number, mlflow_run)
    row = store.get_trial(run_id, number)
    assert row is not None
    return row


def ensure_mlflow_run(settings: Settings, store: StateStore, run_id: str, number: int,
                      mlflow_run: MlflowRunSpec) -> None:
    """One MLflow run per trial, created once; restarts log into the same run."""
    row = store.get_trial(run_id, number)
    if row is None or row.mlflow_run_id:
        return
    mlflow_run_id = tracking.start_run(settings, mlflow_run.experiment, mlflow_run.run_name, dict(mlflow_run.tags))
    store.update_trial(run_id, number, mlflow_run_id=mlflow_run_id)


def await_trial(settings: Settings, store: StateStore, run_id: str, number: int,
                echo: Echo | None = None, judge: Callable[[], Pruned | None] | None = None) -> tuple[TrialRow, TrialOutcome]:
    """Wait for a launched trial, restarting what dies for a transient reason (the monitor's
    rules) and stopping what the pruner (``judge``) finds hopeless, then log its outcome to
    MLflow and record it. Returns the final row and the outcome."""
    from mlchain.monitor import supervise_trial

    outcome = supervise_trial(settings, store, run_id, number, echo=echo, judge=judge)
    row = store.get_trial(run_id, number)
    assert row is not None
    spec = TrialSpec.from_json(row.launched_spec)
    trials.log_outcome(settings, row.launched_mlflow_run_id, spec, outcome, runner=row.launched_runner, image=row.image,
                       image_id=row.image_id, restarts=row.restarts)
    store.update_trial(run_id, number, status=outcome.status, metric=outcome.metric, metrics=outcome.metrics,
                       failure_kind=None if outcome.succeeded or outcome.pruned else outcome.verdict.kind,
                       failure_log=outcome.failure_log, finished_at=time.time())
    final = store.get_trial(run_id, number)
    assert final is not None
    return final, outcome


def abandon_trial(settings: Settings, store: StateStore, run_id: str, number: int, reason: str) -> None:
    """Stop a trial nobody will wait for any more (its waiter was interrupted) and mark it failed,
    so that job6 does not restart it for nobody."""
    from mlchain.monitor import attach, give_up_now

    row = store.get_trial(run_id, number)
    if row is None or row.status not in (TrialStatus.PENDING, TrialStatus.RUNNING):
        return
    if row.status == TrialStatus.PENDING:  # never launched
        store.update_trial(run_id, number, status="failed", failure_log=reason, finished_at=time.time())
        return
    try:
        attach(settings, row).cancel()
    except Exception:  # noqa: BLE001,S110 - marked failed below whatever the runner says
        pass
    give_up_now(store, row, "killed", reason, None)
    if row.mlflow_run_id:
        tracking.end_run(settings, row.mlflow_run_id)
