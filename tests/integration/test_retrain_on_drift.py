"""Retraining on drift, end to end: a real chain run registers a champion (process runner, real
MLflow store); the drift observer watches a stream of digits predicted by that champion, with
the true labels sent back; the pixels get brighter; exactly one retraining run is queued
through the webhook's durable queue, on a new dataset version (the repository's data folder
plus the feedback), and run as the service runs it (`mlchain run` in a child process); its
model becomes champion only if it beats the champion."""

from __future__ import annotations

import json
import os
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlchain.engine.chain import run_chain
from mlchain.serving.drift import SUMMARY_STREAMS
from mlchain.serving.observe import DriftObserver
from mlchain.serving.retrain import content_hash
from mlchain.state import StateStore
from mlchain.webhook.queue import SubprocessExecutor, WebhookQueue, queue_path

pytestmark = pytest.mark.slow

TRAIN = '''
"""Logistic regression on every CSV of the data folder (the repository's, or a dataset version)."""
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mlchain import sdk

data = pd.concat([pd.read_csv(p) for p in sorted(sdk.data_dir().glob("*.csv"))], ignore_index=True)
x, y = data.drop(columns=["label"]), data["label"]
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
model = LogisticRegression(max_iter=5000).fit(x_train, y_train)
sdk.report({"accuracy": float((model.predict(x_test) == y_test).mean())})
sdk.save_model(model)
'''
CONFIG = "entry: train.py\nmetric: accuracy\nthreshold: 0.5\ndata: data\nbudget:\n  max_trials: 1\n"
BASE_ROWS = 100
BATCH = 50
MIN_FEEDBACK = 800


def test_drift_queues_one_retraining_on_the_new_data(make_settings: Any, git_repo: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from sklearn.datasets import load_digits

    digits = load_digits()
    frame = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    target = digits.target
    # The repository's own data is small and a quarter of it mislabeled: its champion is weak,
    # and a retraining on the labeled feedback beats it (on the same repository and commit).
    labels = target[:BASE_ROWS].copy()
    labels[::4] = (labels[::4] + 1) % 10
    base = frame.iloc[:BASE_ROWS].assign(label=labels)
    repo = git_repo("digits_drift", files={"train.py": TRAIN, "mlchain.yaml": CONFIG,
                                           "data/train.csv": base.to_csv(index=False)})
    settings = make_settings(retrain_cooldown_s=3600.0, retrain_max_per_day=3, retrain_min_feedback=MIN_FEEDBACK)
    first = run_chain(settings, str(repo), ref="main", live=False)
    assert first.status == "passed" and first.registered and first.registered["champion"], first.explain()
    name, old_metric = first.repo_name, float(first.best.metric)  # type: ignore[union-attr]

    # For this test only (mlflow.set_tracking_uri would export it to every later test's processes)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.resolved_tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", settings.resolved_tracking_uri)
    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    observer = DriftObserver(settings, name)
    version = str(first.registered["version"])
    rng = np.random.default_rng(0)
    rest, rest_y = frame.iloc[BASE_ROWS:].reset_index(drop=True), target[BASE_ROWS:]

    def serve(n: int, brighten: float) -> None:
        """n rows as the server sees them: predicted by the champion, then labeled."""
        for _ in range(n // BATCH):
            pick = rng.integers(0, len(rest), BATCH)
            batch = pd.DataFrame(np.clip(rest.iloc[pick].to_numpy() + brighten, 0, 16), columns=rest.columns)
            ids = observer.record_predictions(version, batch, list(champion.predict(batch)))
            assert observer.record_feedback({**dict(zip(ids, rest_y[pick].tolist(), strict=True)),
                                             "f" * 32: 1}) == BATCH  # an unknown id is not accepted

    serve(1500, 0.0)
    assert observer.detections() == [] and observer.requests() == []
    serve(1500, 3.0)  # brighter pixels: drift, then the feedback the request waits for
    serve(1500, 7.0)  # brighter still: drift again, within the cooldown
    observer.wait_idle()
    detections = observer.detections()
    assert len(detections) >= 2 and {d["stream"] for d in detections} & set(SUMMARY_STREAMS)
    (request,) = observer.requests()
    assert request["status"] == "asked" and request["error"] is None
    assert request["reason"] == next(f"drift in {d['stream']} at sample {d['sample']:,}: "
                                     f"{d['before']:.2f} -> {d['after']:.2f}" for d in detections)
    assert observer.state()["mlchain_retrain_refused_total"] >= 1
    assert observer.state()["mlchain_feedback_unknown_total"] == 4500 // BATCH
    samples = observer.detectors.samples()
    observer.close()
    assert DriftObserver(settings, name).detectors.samples() == samples  # the state outlives the observer

    # the dataset version: the repository's data folder plus every labeled row, named by its content
    dataset = Path(request["dataset"])
    assert dataset.parent == settings.datasets_dir / name and dataset.name == content_hash(dataset)[:12]
    manifest = json.loads((dataset / "manifest.json").read_text())
    feedback = pd.read_csv(dataset / "feedback.csv")
    assert manifest["feedback_rows"] == len(feedback) >= 1500 + MIN_FEEDBACK
    assert manifest["commit"] == first.commit and manifest["reason"] == request["reason"]
    assert (dataset / "train.csv").read_text() == (repo / "data" / "train.csv").read_text()

    # exactly one run was queued, and it runs as `mlchain serve` runs it
    queue = WebhookQueue(queue_path(settings.home_abs))
    (entry,) = queue.entries()
    assert (entry["run_id"], entry["reason"], entry["dataset"]) == (request["run_ref"], request["reason"],
                                                                     str(dataset))
    (claim, _), = queue.claim("test", 1)
    env = {**os.environ, "MLCHAIN_RUNNER": "process"}
    result = SubprocessExecutor(settings.home_abs, tmp_path / "logs", base_env=env)(claim, lambda pid: None)
    assert result.returncode == 0, (tmp_path / "logs" / f"{claim.run_id}.log").read_text()[-3000:]

    store = StateStore(settings.state_db)
    run = store.get_run(claim.run_id)
    assert (run.status, run.commit_sha, run.reason, run.dataset) == ("passed", first.commit, request["reason"],
                                                                       str(dataset))
    (trial,) = store.trials(claim.run_id)
    assert json.loads(trial.spec or "{}")["data_dir"] == str(dataset)  # trained on the dataset version
    # and code that opens data/ by its path reads the same files
    assert (Path(run.source_dir) / "data" / "feedback.csv").read_bytes() == (dataset / "feedback.csv").read_bytes()
    tags = mlflow.tracking.MlflowClient(settings.resolved_tracking_uri).get_run(trial.mlflow_run_id).data.tags
    assert (tags["mlchain.reason"], tags["mlchain.dataset"]) == (request["reason"], dataset.name)
    (eml,) = [p for p in settings.outbox_dir.glob("*.eml") if claim.run_id in p.read_text(errors="replace")]
    text = message_from_bytes(eml.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()
    assert f"Why         {request['reason']}" in text and f"Dataset     {dataset.name}" in text

    # the champion moves only when the new model beats it (job5's rule); here the new data makes it better
    new_metric = float(trial.metric or 0.0)
    assert run.registered is not None and run.registered["champion"] == (new_metric > old_metric)
    assert old_metric < 0.9 < new_metric
    client = mlflow.tracking.MlflowClient(settings.resolved_tracking_uri)
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(run.registered["version"])
    shifted = pd.DataFrame(np.clip(rest.to_numpy() + 3.0, 0, 16), columns=rest.columns)
    new_champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    old_accuracy = float((champion.predict(shifted) == rest_y).mean())
    new_accuracy = float((new_champion.predict(shifted) == rest_y).mean())
    assert new_accuracy > old_accuracy  # better on the new data
