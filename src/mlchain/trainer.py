"""`mlchain train PATH`: classify, run one trial, log it to MLflow."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlchain import contract, tracking
from mlchain import trial as trials
from mlchain.config import Settings
from mlchain.errors import ConfigError, ContractError, TrainingFailed
from mlchain.repo_config import load_repo_config
from mlchain.runids import new_run_id
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
    from mlchain.detect import classify_repo
    from mlchain.runners.select import get_runner

    started = time.monotonic()
    settings.ensure_dirs()
    cfg = load_repo_config(path)
    classification = classify_repo(path)
    params = {**cfg.params, **overrides}
    runner = get_runner(settings, echo=echo)
    image = image_id = None
    if runner.name == "docker":
        from mlchain.images import ensure_image

        ref = ensure_image(settings, classification.framework, echo=echo)
        image, image_id = ref.tag, ref.image_id
    run_id = new_run_id("train-")
    spec = trials.make_spec(settings, run_id=run_id, trial=1, framework=classification.framework,
                            repo_dir=path, cfg=cfg, params=params, image=image, job="mlchain-train")
    name = repo_name_of(path)
    tags = trials.base_tags(run_id=run_id, trial=1, framework=classification.framework,
                            reasons=trials.reason_lines(classification),
                            git=trials.git_info(path), repo_name=name)
    handle = runner.start(spec)  # training starts first; MLflow's import and run creation overlap it
    mlflow_run_id = tracking.start_run(settings, name, f"{name}-trial-1", tags)
    info = trials.wait_following(handle, echo, settings.train_timeout_s)
    if handle.status() == "running":
        handle.cancel()
        info = handle.exit_info()
    outcome = trials.collect(spec, info, hung_after_s=settings.hung_after_s)
    trials.log_outcome(settings, mlflow_run_id, spec, outcome, runner=runner.name, image=image,
                       image_id=image_id, restarts=0)
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
                       runner=runner.name, image=image, params=params, metric_name=cfg.metric,
                       metric=outcome.metric, metrics=outcome.metrics, status=outcome.status,
                       duration_s=time.monotonic() - started)
