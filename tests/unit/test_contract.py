"""mlchain.yaml validation and the mlchain-train entrypoint's contract checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlchain.errors import ConfigError
from mlchain.repo_config import parse_repo_config
from mlchain.train_entry import check_metrics


def test_defaults() -> None:
    cfg = parse_repo_config("")
    # no entry: job2 finds the file that trains (tests/unit/test_entry_finding.py)
    assert (cfg.entry, cfg.metric, cfg.threshold, cfg.budget.max_trials) == (None, "accuracy", 0.80, 6)


def test_every_problem_is_listed_at_once_with_its_key() -> None:
    text = """
framework: pytorch
threshold: high
budget: {max_trials: 0}
search:
  lr: {type: float, low: 1.0, high: 0.1}
  units: {type: categorical}
notify: {recipients: [not-an-email]}
colour: blue
"""
    with pytest.raises(ConfigError) as err:
        parse_repo_config(text)
    message = err.value.format_message()
    for key in ("framework", "threshold", "budget.max_trials", "search.lr", "search.units", "notify", "colour"):
        assert f"  {key}" in message, key
    assert "7 problem(s)" in message


def test_bad_yaml_says_so() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_repo_config("params: [1, 2\n")


def test_entry_must_stay_inside_the_repository() -> None:
    with pytest.raises(ConfigError, match="entry"):
        parse_repo_config("entry: ../../etc/passwd")


def test_check_metrics(tmp_path: Path) -> None:
    assert "without writing metrics.json" in (check_metrics(tmp_path, "accuracy") or "")
    (tmp_path / "metrics.json").write_text(json.dumps({"f1": 0.5}))
    assert "lacks the gate metric 'accuracy' (it has f1)" in (check_metrics(tmp_path, "accuracy") or "")
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    assert check_metrics(tmp_path, "accuracy") is None


def run_entry(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    return subprocess.run([sys.executable, "-m", "mlchain.train_entry"], env={**clean, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_mlchain_train_without_its_environment_exits_2() -> None:
    done = run_entry({})
    assert done.returncode == 2
    assert "missing environment: MLCHAIN_REPO_DIR" in done.stderr


def contract_env(tmp_path: Path, train_py: str) -> dict[str, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(train_py)
    (tmp_path / "params.json").write_text(json.dumps({"lr": 0.1}))
    return {"MLCHAIN_REPO_DIR": str(repo), "MLCHAIN_ENTRY": "train.py", "MLCHAIN_OUTPUT_DIR": str(tmp_path / "out"),
            "MLCHAIN_PARAMS_FILE": str(tmp_path / "params.json"), "MLCHAIN_CHECKPOINT_DIR": str(tmp_path / "ck"),
            "MLCHAIN_METRIC": "accuracy"}


def test_mlchain_train_runs_the_entry_with_its_params(tmp_path: Path) -> None:
    done = run_entry(contract_env(tmp_path, "from mlchain import sdk\n"
                                            "sdk.report({'accuracy': sdk.params()['lr'] * 5})\n"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"accuracy": 0.5}


def test_mlchain_train_shows_the_traceback_when_the_code_raises(tmp_path: Path) -> None:
    done = run_entry(contract_env(tmp_path, "def load():\n    raise KeyError('label')\nload()\n"))
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "KeyError: 'label'" in done.stderr
    assert "train.py raised" in done.stderr


def test_mlchain_train_fails_when_the_gate_metric_is_missing(tmp_path: Path) -> None:
    done = run_entry(contract_env(tmp_path, "from mlchain import sdk\nsdk.report({'loss': 1.0})\n"))
    assert done.returncode == 3
    assert "lacks the gate metric 'accuracy'" in done.stderr
