"""One trial's life, shared by `mlchain train` and the chain's jobs: where its files go,
how it is launched, what it left behind, and what MLflow is told about it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlchain import code_rewrite, contract, outputs, tracking
from mlchain.config import Settings
from mlchain.failures import Verdict, classify_exit
from mlchain.provenance import read_provenance
from mlchain.repo_config import RepoConfig
from mlchain.repo_config import data_dir as repo_data_dir
from mlchain.runners.base import ExitInfo, TrialSpec

Echo = Callable[[str], None]
LOG_TAIL_LINES = 30
DATA_RECORD = "data.json"  # what sdk.record_data() writes


def trial_dir(settings: Settings, run_id: str, trial: int) -> Path:
    return settings.runs_dir / run_id / "trials" / str(trial)


def make_spec(settings: Settings, *, run_id: str, trial: int, framework: str, repo_dir: Path,
              cfg: RepoConfig, params: Mapping[str, Any], attempt: int = 1, image: str | None = None,
              job: str = "classify", data_dir: Path | None = None, datasets: Mapping[str, str] | None = None,
              python: str | None = None) -> TrialSpec:
    """``data_dir``: a dataset version to train on (a retraining), instead of the repository's data."""
    base = trial_dir(settings, run_id, trial)
    if data_dir is None:
        data_dir = repo_data_dir(repo_dir, cfg) or base / "data"  # inside the repository, existing
    return TrialSpec(run_id=run_id, trial=trial, framework=framework, repo_dir=repo_dir.resolve(),
                     entry=cfg.entry or contract.DEFAULT_ENTRY, params=dict(params), output_dir=base / "output",
                     checkpoint_dir=base / "checkpoints", data_dir=data_dir, metric=cfg.metric,
                     attempt=attempt, image=image, job=job, network=cfg.network, datasets=dict(datasets or {}),
                     python=python)


@dataclass
class TrialOutcome:
    status: str                      # succeeded | failed | pruned
    verdict: Verdict
    metric: float | None
    metrics: dict[str, float]
    failure_log: str | None
    model_dir: Path | None = None    # the host's checked copy of the training's model folder
    artifacts_dir: Path | None = None  # the host's checked copy of its artifacts (notebook, model files)
    provenance: dict[str, Any] | None = None  # where the metric came from (provenance.json)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def pruned(self) -> bool:
        return self.status == "pruned"


MAX_METRICS = 1000
MAX_METRIC_NAME = 250  # MLflow's bound on a metric key


def metrics_problem(value: Any) -> str | None:
    """Pure: what is wrong with a parsed metrics.json (None when nothing is)."""
    name = contract.METRICS_FILE
    if not isinstance(value, dict):
        return f"{name} holds a {type(value).__name__}, not an object of metrics"
    if len(value) > MAX_METRICS:
        return f"{name} has {len(value)} metrics, over the bound of {MAX_METRICS}"
    for key, number in value.items():
        if len(key) > MAX_METRIC_NAME:
            return f"{name}: a metric name is over {MAX_METRIC_NAME} characters"
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return f"{name}: {key[:60]!r} is {type(number).__name__}, not a number"
    return None


def parse_metrics(text: str) -> dict[str, float]:
    """Pure: metrics.json as the training wrote it (hostile) -> name: number; ValueError saying
    what is wrong. sdk.report() writes a valid one; this guards the host against any other."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{contract.METRICS_FILE} is not valid JSON ({exc})") from exc
    problem = metrics_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return {key: float(number) for key, number in value.items()}


def collect(spec: TrialSpec, info: ExitInfo, *, hung_after_s: float) -> TrialOutcome:
    """Read what a finished attempt left: metrics.json and a checked copy of its model folder
    (in the host's folder of the trial), or the tail of its log. Output the host refuses to
    read (a symlink, a hard link, a special file, over a bound) fails the trial, copying nothing."""
    verdict = classify_exit(info, running=False, hung_after_s=hung_after_s)
    metrics: dict[str, float] = {}
    tail = "\n".join(info.last_lines[-LOG_TAIL_LINES:])
    model_dir: Path | None = None
    artifacts_dir: Path | None = None
    provenance: dict[str, Any] | None = None
    if verdict.kind in ("completed", "contract_error"):
        provenance = read_provenance(spec.output_dir)
    if verdict.kind == "completed":
        try:
            outputs.check_file(spec.output_dir / contract.PROGRESS_FILE, outputs.PROGRESS_BYTES)
            outputs.check_file(spec.output_dir / DATA_RECORD)
            text = outputs.read_text(spec.output_dir / contract.METRICS_FILE)
            metrics = parse_metrics(text) if text is not None else {}
            if metrics.get(spec.metric) is not None and outputs.mtime(spec.output_dir / contract.MODEL_DIR):
                model_dir = outputs.copy_tree(spec.output_dir / contract.MODEL_DIR,
                                              spec.host_dir / contract.MODEL_DIR)
            if outputs.mtime(spec.output_dir / contract.ARTIFACTS_DIR):
                artifacts_dir = outputs.copy_tree(spec.output_dir / contract.ARTIFACTS_DIR,
                                                  spec.host_dir / contract.ARTIFACTS_DIR)
        except outputs.UnsafeOutput as exc:
            reason = exc.message.splitlines()[0]
            return TrialOutcome("failed", Verdict("contract_error", reason), None, {},
                                f"{reason}\n{outputs.HINT}\n{tail}".rstrip())
        except ValueError as exc:
            return TrialOutcome("failed", Verdict("contract_error", str(exc)), None, {},
                                f"{exc}\nwrite it with sdk.report({{'{spec.metric}': <value>}})\n{tail}".rstrip())
    metric = metrics.get(spec.metric)
    if verdict.kind == "completed" and metric is not None:
        return TrialOutcome("succeeded", verdict, float(metric), metrics, None, model_dir, artifacts_dir, provenance)
    return TrialOutcome("failed", verdict, None, metrics, tail or None, provenance=provenance)


def git_info(path: Path) -> dict[str, str]:
    """Commit and remote when ``path`` is a git checkout (empty otherwise)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    info = {"commit": git("rev-parse", "HEAD"), "remote": git("remote", "get-url", "origin")}
    return {k: v for k, v in info.items() if v}


def data_hash(spec: TrialSpec) -> str:
    """The fingerprint sdk.record_data() wrote, else a hash of the data folder's files."""
    try:
        recorded = outputs.read_text(spec.output_dir / DATA_RECORD)
        if recorded is not None:
            return str(json.loads(recorded).get("hash", ""))
    except (outputs.UnsafeOutput, ValueError, AttributeError):
        return ""
    digest = hashlib.sha256()
    if spec.data_dir.is_dir():
        for file in sorted(p for p in spec.data_dir.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(spec.data_dir)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def reason_lines(classification: Any, limit: int = 20) -> list[str]:
    """The classifier's strongest reasons, one line each (file:line, evidence, kind)."""
    return [f"{r.where}: {r.evidence} ({r.framework}, {r.kind})" for r in classification.reasons[:limit]]


def reason_lines_from_dict(classification: Mapping[str, Any] | None, limit: int = 20) -> list[str]:
    """The same lines, from the classification stored in the run state."""
    reasons = (classification or {}).get("reasons") or []
    return [f"{r['file']}:{r['line']}: {r['evidence']} ({r['framework']}, {r['kind']})" for r in reasons[:limit]]


def base_tags(*, run_id: str, trial: int, framework: str, reasons: list[str], git: Mapping[str, str],
              repo_name: str) -> dict[str, str]:
    tags = {
        "mlchain.run_id": run_id,
        "mlchain.trial": str(trial),
        "mlchain.repo": repo_name,
        "mlchain.framework": framework,
        "mlchain.reasons": "\n".join(reasons),
    }
    if git.get("commit"):
        tags["mlchain.commit"] = git["commit"]
        tags["mlflow.source.git.commit"] = git["commit"]
    if git.get("remote"):
        tags["mlchain.remote"] = git["remote"]
        tags["mlflow.source.git.repoURL"] = git["remote"]
    return tags


def read_history(spec: TrialSpec) -> list[dict[str, Any]]:
    from mlchain.summary import read_history as read

    return read(spec.output_dir)


def log_outcome(settings: Settings, mlflow_run_id: str, spec: TrialSpec, outcome: TrialOutcome, *,
                runner: str, image: str | None, image_id: str | None, restarts: int) -> None:
    tags = {
        "mlchain.data_hash": data_hash(spec),
        "mlchain.runner": runner,
        "mlchain.status": outcome.status,
        "mlchain.exit": outcome.verdict.kind,
        "mlchain.restarts": str(restarts),
    }
    if image:
        tags["mlchain.image"] = image
    if image_id:
        tags["mlchain.image_id"] = image_id
    if outcome.failure_log:
        tags["mlchain.failure"] = outcome.verdict.reason + "\n" + outcome.failure_log
    diff = code_rewrite.diff_file(spec.output_dir.parent)  # the trial's code, when it was rewritten
    if diff is not None:
        tags["mlchain.code_changes"] = "\n".join(code_rewrite.kept_changes(spec.output_dir.parent)[0])
    if outcome.succeeded and outcome.provenance and outcome.provenance.get("text"):
        tags["mlchain.metric_source"] = outcome.provenance["text"]
    tracking.log_trial(settings, mlflow_run_id, params=spec.params, metrics=outcome.metrics,
                       history=read_history(spec), tags=tags,
                       model_dir=outcome.model_dir if outcome.succeeded else None,
                       status="FINISHED" if outcome.succeeded else "KILLED" if outcome.pruned else "FAILED",
                       files=[diff] if diff else [], artifacts_dir=outcome.artifacts_dir)
    for copied in (outcome.model_dir, outcome.artifacts_dir):
        if copied is not None:
            shutil.rmtree(copied, ignore_errors=True)  # MLflow holds it now
