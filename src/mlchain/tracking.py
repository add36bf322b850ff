"""MLflow: one run per trial, with params, per-epoch metrics, tags and the model.

The embedded default is SQLite plus a local artifact folder under MLCHAIN_HOME;
``MLFLOW_TRACKING_URI`` (or the setting) points it elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlchain import gate, outputs
from mlchain.config import Settings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 5000


# MLflow caches one store per URI, but two threads asking at once would both build it (and,
# on a new SQLite file, both create its tables): the engine's warm-up thread and a job.
_STORE_LOCK = threading.Lock()


def client(settings: Settings) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    settings.ensure_dirs()
    with _STORE_LOCK:
        return MlflowClient(tracking_uri=settings.resolved_tracking_uri,
                            registry_uri=settings.registry_uri or settings.resolved_tracking_uri)


def open_stores(settings: Settings) -> None:
    """Build (and so cache) the tracking and registry stores, for the engine's warm-up, through
    public calls that each open their store (on a new SQLite file, creating its tables)."""
    c = client(settings)
    with _STORE_LOCK:
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)


def experiment_id(mlflow_client: MlflowClient, settings: Settings, name: str) -> str:
    """The experiment of a repository; artifacts under MLCHAIN_HOME for the embedded store."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if settings.resolved_tracking_uri.startswith("sqlite:"):
        location = (settings.artifact_root / name).as_uri()
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except Exception:  # another job created it meanwhile
        again = mlflow_client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def start_run(settings: Settings, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
    c = client(settings)
    run = c.create_run(experiment_id(c, settings, experiment), run_name=run_name,
                       tags={k: str(v)[:MAX_TAG_LEN] for k, v in tags.items()})
    return str(run.info.run_id)


def log_trial(settings: Settings, run_id: str, *, params: Mapping[str, Any], metrics: Mapping[str, float],
              history: Sequence[Mapping[str, Any]], tags: Mapping[str, str], model_dir: Path | None,
              status: str, files: Sequence[Path] = (), artifacts_dir: Path | None = None) -> None:
    """Everything a finished trial has, in one go (a restarted trial logs into the same run);
    ``files`` are the host's own files of the trial (its code's diff), logged at the top;
    ``artifacts_dir`` what the code left besides the model (the executed notebook, model files)."""
    from mlflow.entities import Metric, Param, RunTag

    c = client(settings)
    now = int(time.time() * 1000)
    existing = c.get_run(run_id).data.params
    param_rows = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in sorted(params.items()) if k not in existing]
    metric_rows = []
    for row in history:
        step = int(row.get("epoch", 0))
        stamp = int(float(row.get("time", now / 1000)) * 1000)
        metric_rows += [Metric(f"epoch_{k}", float(v), stamp, step) for k, v in row.items()
                        if k not in ("epoch", "epochs", "time") and isinstance(v, (int, float))]
    metric_rows += [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    tag_rows = [RunTag(k, str(v)[:MAX_TAG_LEN]) for k, v in tags.items()]
    for start in range(0, max(len(metric_rows), 1), 900):  # MLflow caps a batch at 1000 entries
        c.log_batch(run_id, metrics=metric_rows[start:start + 900],
                    params=param_rows if start == 0 else [], tags=tag_rows if start == 0 else [])
    if model_dir is not None and (model_dir / "MLmodel").is_file():
        # MLflow copies whatever it finds and follows links: a tree with a link, a special file
        # or more than the bound is refused whole (trial.collect hands over a checked copy).
        problems = outputs.tree_problems(model_dir)
        if problems:
            raise outputs.UnsafeOutput(f"refused to log {model_dir}: " + "; ".join(problems[:10]),
                                       hint=outputs.HINT)
        c.log_artifacts(run_id, str(model_dir), "model")
    for file in files:
        c.log_artifact(run_id, str(file))
    if artifacts_dir is not None and artifacts_dir.is_dir():
        # checked as the model is: MLflow would follow a link out of the folder
        problems = outputs.tree_problems(artifacts_dir)
        if problems:
            raise outputs.UnsafeOutput(f"refused to log {artifacts_dir}: " + "; ".join(problems[:10]),
                                       hint=outputs.HINT)
        c.log_artifacts(run_id, str(artifacts_dir))
    _terminate(c, run_id, status)


def _terminate(c: MlflowClient, run_id: str, status: str) -> None:
    # Against a tracking server MLflow writes the run's link to stdout, which carries
    # `mlchain run --json`'s one object: the link goes to stderr instead.
    with contextlib.redirect_stdout(sys.stderr):
        c.set_terminated(run_id, status=status)


def end_run(settings: Settings, run_id: str, status: str = "KILLED") -> None:
    """Close a run whose trial ended without an outcome to log (nobody waits for it any more),
    so that MLflow does not show it RUNNING for ever."""
    _terminate(client(settings), run_id, status)


def model_uri(run_id: str) -> str:
    return f"runs:/{run_id}/model"


CHAMPION = "champion"
METRIC_VALUE_TAG = "mlchain.metric_value"
# Rounds of "list the versions, move the alias to the best": each agent re-checks after its move,
# so the last to move sees every version registered before it (they are created before listing).
SETTLE_ROUNDS = 5


def _tagged_metric(version: Any) -> float | None:
    try:
        value = float(version.tags.get(METRIC_VALUE_TAG, "nan"))
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _settle_champion(c: MlflowClient, name: str, direction: str) -> str | None:
    """Point the alias at the best registered version (by the metric tag; the earliest of
    equals) and return that version. Agents registering at once converge: whoever moves the
    alias checks again after moving it."""
    from mlflow.exceptions import MlflowException

    best: Any = None
    for _ in range(SETTLE_ROUNDS):
        quote = "'" if "'" not in name else '"'
        versions = sorted(c.search_model_versions(f"name={quote}{name}{quote}"), key=lambda v: int(v.version))
        best = gate.best_of(versions, _tagged_metric, direction)
        if best is None:
            return None
        try:
            current = str(c.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            current = None
        if current == str(best.version):
            return str(best.version)
        c.set_registered_model_alias(name, CHAMPION, best.version)
    return None if best is None else str(best.version)


def register_best(settings: Settings, name: str, run_id: str, metric_name: str, metric: float,
                  direction: str = gate.DEFAULT_DIRECTION) -> dict[str, Any]:
    """Register the run's model under ``name``; the alias ``champion`` moves to it only when it
    beats the current champion. Several agents may register into one registry at once (the
    team's MLflow server): the alias then ends on the best of their versions, never on whichever
    moved it last."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name, tags={"mlchain.managed": "true"})
        except MlflowException:  # another agent created it meanwhile
            c.get_registered_model(name)
    previous: float | None = None
    try:
        previous = _tagged_metric(c.get_model_version_by_alias(name, CHAMPION))
    except MlflowException:
        previous = None
    version = c.create_model_version(name, f"{c.get_run(run_id).info.artifact_uri}/model", run_id=run_id,
                                     tags={"mlchain.metric": metric_name, METRIC_VALUE_TAG: str(metric)})
    champion = _settle_champion(c, name, direction)
    return {"name": name, "version": int(version.version), "champion": champion == str(version.version),
            "previous_champion_metric": previous, "metric": metric}
