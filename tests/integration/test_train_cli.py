"""`mlchain train` on both examples, into a fresh SQLite MLflow store, with the process runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlchain.cli import cli

pytestmark = pytest.mark.slow


def train(home: Path, repo: Path, params: dict[str, Any]) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--home", str(home), "train", str(repo), "--runner", "process",
                                      "--params", json.dumps(params), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])  # type: ignore[no-any-return]


def store_of(home: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


@pytest.mark.parametrize("example,params,framework", [
    ("digits_sklearn", {"hidden_units": 32, "learning_rate": 0.005, "epochs": 6}, "sklearn"),
    ("digits_cnn", {"filters": 16, "dense_units": 32, "learning_rate": 0.005, "epochs": 4, "dropout": 0.0}, "keras"),
])
def test_train_logs_params_history_tags_and_a_loadable_model(tmp_path: Path, git_repo: Any, example: str,
                                                              params: dict[str, Any], framework: str) -> None:
    import mlflow
    import numpy as np

    repo = git_repo(example, example=example)
    home = tmp_path / "home"
    out = train(home, repo, params)
    assert out["framework"] == framework and out["status"] == "succeeded"
    assert 0.0 <= out["metric"] <= 1.0
    client = store_of(home)
    run = client.get_run(out["mlflow_run_id"])
    # params: the repository's own, with the overrides
    assert run.data.params["epochs"] == str(params["epochs"])
    assert run.data.params["learning_rate"] == str(params["learning_rate"])
    # the held-out metric, and the per-epoch history with steps
    assert run.data.metrics["accuracy"] == pytest.approx(out["metric"])
    history = client.get_metric_history(run.info.run_id, "epoch_loss")
    assert [m.step for m in history] == list(range(1, params["epochs"] + 1))
    # tags: commit and remote of the git repository, framework and reasons, data hash
    tags = run.data.tags
    commit = (repo / ".git").exists() and __import__("subprocess").run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["mlchain.commit"] == commit
    assert tags["mlchain.framework"] == framework
    assert "train.py:" in tags["mlchain.reasons"]
    assert len(tags["mlchain.data_hash"]) == 16
    assert tags["mlchain.runner"] == "process"
    # the model, as an MLflow model, loads and predicts
    # (no mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to later tests)
    model = mlflow.pyfunc.load_model(f"{run.info.artifact_uri}/model")
    sample = np.zeros((2, 64)) if framework == "sklearn" else np.zeros((2, 8, 8, 1), dtype="float32")
    assert len(model.predict(sample)) == 2


def test_a_training_script_that_raises_fails_clearly(tmp_path: Path, git_repo: Any) -> None:
    repo = git_repo(files={
        "train.py": "from sklearn.linear_model import LogisticRegression\n"
                    "def main():\n    raise ValueError('the data is broken')\nmain()\n"})
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "train", str(repo), "--runner", "process"])
    assert result.exit_code == 6
    assert "code_error" in result.output
    assert "ValueError: the data is broken" in result.output  # the traceback's tail


def test_missing_gate_metric_names_what_to_do(tmp_path: Path, git_repo: Any) -> None:
    repo = git_repo(files={
        "train.py": "from sklearn.linear_model import LogisticRegression\nfrom mlchain import sdk\n"
                    "sdk.report({'f1': 0.5})\n"})
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "train", str(repo), "--runner", "process"])
    assert result.exit_code == 5  # ContractError: the entry broke the training contract
    assert "lacks the gate metric 'accuracy'" in result.output
    assert "the entry broke the training contract" in result.output


def test_bad_params_option_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "train", str(tmp_path), "--params", "[1, 2]"])
    assert result.exit_code == 3
    assert "--params must be a JSON object" in result.output
