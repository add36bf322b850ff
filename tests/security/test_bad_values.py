"""Bad values (a threshold no metric can meet, negative budgets, a memory size that is not one)
are refused when the command starts, with mlchain.yaml's messages; bad files (a non-UTF-8
mlchain.yaml, an unwritable home, a damaged state.db) end with a message and an exit code,
never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import git, make_git_repo

from mlchain.config import load_settings
from mlchain.errors import ConfigError, StateError
from mlchain.repo_config import load_repo_config, parse_repo_config
from mlchain.state import StateStore

TIMEOUT_S = 240.0


def mlchain(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "MLCHAIN_RUNNER": "process", **(env or {})}
    full.pop("MLCHAIN_HOME", None)
    return subprocess.run([sys.executable, "-m", "mlchain.cli", "--home", str(home), *args], env=full,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "digits", example="digits_sklearn")


# --- mlchain.yaml ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("threshold: 5\n", "threshold: Value error, 5 is outside 0..1, the range of accuracy"),
    ("threshold: -1\n", "threshold: Value error, -1 is outside 0..1, the range of accuracy"),
    ("threshold: .nan\n", "threshold: Input should be a finite number"),
    ("threshold: .inf\n", "threshold: Input should be a finite number"),
    ("metric: val_f1\nthreshold: 1.5\n", "threshold: Value error, 1.5 is outside 0..1, the range of val_f1"),
    ("budget: {max_trials: -1}\n", "budget.max_trials: Input should be greater than or equal to 1"),
    ("budget: {max_minutes: 0}\n", "budget.max_minutes: Input should be greater than 0"),
    ("budget: {max_minutes: .nan}\n", "budget.max_minutes: Input should be a finite number"),
    ("budget: {patience: 0}\n", "budget.patience: Input should be greater than or equal to 1"),
])
def test_mlchain_yaml_bad_values_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_repo_config(text)
    assert message in caught.value.message


def test_a_threshold_above_one_is_fine_for_a_metric_that_is_not_a_fraction() -> None:
    cfg = parse_repo_config("metric: rmse\ndirection: minimize\nthreshold: 5\n")
    assert (cfg.metric, cfg.threshold) == ("rmse", 5.0)
    assert parse_repo_config("metric: neg_log_loss\nthreshold: -0.3\n").threshold == -0.3


# --- flags and settings: refused when the command starts ------------------------------------

@pytest.mark.parametrize(("args", "env", "message"), [
    (["--threshold", "nan"], {}, "--threshold (threshold): Input should be a finite number"),
    (["--threshold", "inf"], {}, "--threshold (threshold): Input should be a finite number"),
    (["--max-trials", "-1"], {}, "--max-trials (max_trials): Input should be greater than or equal to 1"),
    (["--max-trials", "5000"], {}, "--max-trials (max_trials): Input should be less than or equal to 1000"),
    (["--max-minutes", "0"], {}, "--max-minutes (max_minutes): Input should be greater than 0"),
    (["--patience", "0"], {}, "--patience (patience): Input should be greater than or equal to 1"),
    ([], {"MLCHAIN_DOCKER_MEMORY": "lots"}, ("docker_memory (MLCHAIN_DOCKER_MEMORY or the config file): Value error,"
                                             " 'lots' is not a size")),
    ([], {"MLCHAIN_DOCKER_MEMORY": "1k"}, "below Docker's minimum"),
    ([], {"MLCHAIN_DOCKER_CPUS": "0"}, ("docker_cpus (MLCHAIN_DOCKER_CPUS or the config file): Input should be"
                                        " greater than 0")),
    ([], {"MLCHAIN_MONITOR_INTERVAL_S": "0"}, "monitor_interval_s"),
    ([], {"MLCHAIN_SMTP_PORT": "70000"}, "smtp_port"),
    ([], {"MLCHAIN_THRESHOLD": "nan"}, "threshold (MLCHAIN_THRESHOLD or the config file): Input should be a finite"),
])
def test_bad_flags_and_settings_stop_the_command_at_start(tmp_path: Path, repo: Path, args: list[str],
                                                          env: dict[str, str], message: str) -> None:
    home = tmp_path / "home"
    done = mlchain(home, "run", str(repo), *args, "--json", env=env)
    assert done.returncode == ConfigError.exit_code, done.stdout[-2000:] + done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stdout + done.stderr
    assert not home.exists(), "the command ran before refusing its settings"


def test_flag_and_mlchain_yaml_give_the_same_message() -> None:
    with pytest.raises(ConfigError) as from_yaml:
        parse_repo_config("budget: {max_trials: -1}\n")
    with pytest.raises(ConfigError) as from_flag:
        load_settings({"home": "/unused", "max_trials": -1}, env={})
    said = from_yaml.value.message.split("budget.max_trials: ")[1].splitlines()[0]
    assert f"--max-trials (max_trials): {said}" in from_flag.value.message


@pytest.mark.parametrize("threshold", ["5", "-1"])
def test_a_threshold_flag_outside_the_metrics_range_fails_the_run_before_training(tmp_path: Path, repo: Path,
                                                                                  threshold: str) -> None:
    """The metric is the repository's: known in job1, which refuses the run before any trial."""
    home = tmp_path / "home"
    done = mlchain(home, "run", str(repo), "--threshold", threshold, "--max-trials", "1", "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed", summary
    assert f"threshold: Value error, {threshold} is outside 0..1, the range of accuracy" in summary["stop_reason"]
    assert summary["trials"] == [] and summary["registered"] is None
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr


# --- files that are not what they should be -------------------------------------------------

def test_a_non_utf8_mlchain_yaml_is_a_message(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo", files={"train.py": "print(1)\n"})
    (repo / "mlchain.yaml").write_bytes(b"threshold: 0.5\nmetric: acc\xe9\xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_repo_config(repo)
    done = mlchain(tmp_path / "home", "train", str(repo))
    assert done.returncode == ConfigError.exit_code and "is not UTF-8 text" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_non_utf8_mlchain_yaml_fails_the_run_in_job1(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo", files={"train.py": "print(1)\n"})
    (repo / "mlchain.yaml").write_bytes(b"\xff\xfe threshold: 0.5\n")
    git(repo, "add", "mlchain.yaml")
    git(repo, "commit", "-qm", "a config in another encoding")
    done = mlchain(tmp_path / "home", "run", str(repo), "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and "is not UTF-8 text" in summary["stop_reason"], summary
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", [["run", "{repo}", "--json"], ["resume", "some-run"], ["train", "{repo}"]])
def test_a_home_where_nothing_can_be_written_is_a_message(tmp_path: Path, repo: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = mlchain(blocker / "home", *[c.format(repo=repo) for c in command])
    assert done.returncode == ConfigError.exit_code, done.stderr[-2000:]
    assert f"MLCHAIN_HOME {blocker / 'home'}" in done.stderr and "cannot be written" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database, whatever its name says\n" * 100)


def _truncated(path: Path) -> None:
    store = StateStore(path)
    for i in range(200):
        store.create_run(f"r{i}", "file:///x", "x", "main", None)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    for leftover in (path.with_name("state.db-wal"), path.with_name("state.db-shm")):
        leftover.unlink(missing_ok=True)
    path.write_bytes(data[:4096] + b"\x00" * 512 + data[4096 + 512:len(data) // 2])


@pytest.mark.parametrize("damage", [_garbage, _truncated])
@pytest.mark.parametrize("command", [["run", "{repo}", "--json"], ["resume", "r1"]])
def test_a_damaged_state_db_is_a_message(tmp_path: Path, repo: Path, damage: object, command: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    damage(home / "state.db")  # type: ignore[operator]
    done = mlchain(home, *[c.format(repo=repo) for c in command])
    assert done.returncode == StateError.exit_code, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"the run state {home / 'state.db'} cannot be used" in done.stderr
    assert "move it aside" in done.stderr and "Traceback" not in done.stdout + done.stderr
