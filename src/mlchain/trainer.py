"""`mlchain train PATH`: classify, run one trial, log it to MLflow."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlchain import contract
from mlchain import trial as trials
from mlchain.config import Settings
from mlchain.errors import ConfigError, ContractError, TrainingFailed
from mlchain.launch import MlflowRunSpec, abandon_trial, await_trial, launch_trial
from mlchain.repo_config import load_repo_config
from mlchain.runids import new_run_id
from mlchain.state import StateStore
from mlchain.trial import Echo


def parse_params_option(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}",
                          hint='pass an object, e.g. --params \'{"epochs": 10}\'') from exc
    if not isinstance(value, dict):
        raise ConfigError(f"--params must be a JSON object, got {type(value).__name__}",
                          hint='pass an object, e.g. --params \'{"epochs": 10}\'')
    return value


@dataclass
class TrainResult:
    mlflow_run_id: str
    experiment: str
    framework: str
    runner: str
    image: str | None
    params: dict[str, Any]
    metric_name: str
    metric: float | None
    metrics: dict[str, float]
    status: str
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self, settings: Settings) -> str:
        metric = f"{self.metric:.4f}" if self.metric is not None else "-"
        return "\n".join([
            (f"trained {self.experiment} ({self.framework}, {self.runner} runner) in {self.duration_s:.1f} s:"
             f" {self.metric_name} = {metric}"),
            f"  MLflow run {self.mlflow_run_id} in {settings.resolved_tracking_uri}",
            f"  see it with: mlflow ui --backend-store-uri {settings.resolved_tracking_uri}",
        ])


def repo_name_of(path: Path) -> str:
    return path.resolve().name


def train_once(settings: Settings, path: Path, overrides: dict[str, Any], echo: Echo | None = None) -> TrainResult:
    """One trial of the repository at ``path``, launched and waited for as the chain's job2 and
    job3 do (so a training killed for a transient reason is restarted from its checkpoint)."""
    from mlchain.detect import classify_entry

    started = time.monotonic()
    settings.ensure_dirs()
    cfg = load_repo_config(path)
    choice, classification = classify_entry(path, cfg.entry)
    cfg = cfg.model_copy(update={"entry": choice.entry})
    if echo is not None:
        echo(choice.explain())
    params = {**cfg.params, **overrides}
    run_id = new_run_id("train-")
    name = repo_name_of(path)
    tags = trials.base_tags(run_id=run_id, trial=1, framework=classification.framework,
                            reasons=trials.reason_lines(classification),
                            git=trials.git_info(path), repo_name=name)
    store = StateStore(settings.state_db)
    store.upsert_trial(run_id, 1, params)
    try:
        launch_trial(settings, store, run_id=run_id, number=1, framework=classification.framework,
                     repo_dir=path, cfg=cfg, params=params, mlflow_run=MlflowRunSpec(name, f"{name}-trial-1", tags),
                     job="mlchain-train", echo=echo)
        row, outcome = await_trial(settings, store, run_id, 1, echo=echo)
    except BaseException:  # Ctrl-C, or an error on the way: the training must not go on alone
        abandon_trial(settings, store, run_id, 1, "mlchain train stopped waiting for it")
        raise
    mlflow_run_id = row.launched_mlflow_run_id
    if not outcome.succeeded and outcome.verdict.kind == "contract_error":
        said = contract.last_complaint(outcome.failure_log) or outcome.verdict.reason
        raise ContractError(f"the entry broke the training contract: {said};"
                            f" logged as MLflow run {mlflow_run_id}",
                            hint="follow the training contract (README, 'The training contract')")
    if not outcome.succeeded:
        raise TrainingFailed(f"training failed ({outcome.verdict.kind}: {outcome.verdict.reason});"
                             f" logged as MLflow run {mlflow_run_id}\n{outcome.failure_log or ''}",
                             hint="fix the training code and run again")
    return TrainResult(mlflow_run_id=mlflow_run_id, experiment=name, framework=classification.framework,
                       runner=row.launched_runner, image=row.image, params=params, metric_name=cfg.metric,
                       metric=outcome.metric, metrics=outcome.metrics, status=outcome.status,
                       duration_s=time.monotonic() - started)
