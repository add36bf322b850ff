"""Jobs stay cheap by importing only what they need: job1 (pull), job4 (gate) and job6
(monitor) run, for real, in their own `mlchain` process without loading MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import make_git_repo

from mlchain.state import StateStore

HEAVY = ("mlflow", "tensorflow", "keras", "torch", "matplotlib")


def _job(name: str, env: dict[str, str], cwd: Path) -> tuple[int, set[str], str]:
    """Run `mlchain job NAME` as Jenkins' shell step does; its exit code, the top-level
    packages it imported (python -X importtime) and its output."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mlchain.cli", "job", name],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    output = done.stdout + "\n".join(line for line in done.stderr.splitlines()
                                     if not line.startswith("import time:"))
    return done.returncode, imported, output


def test_pull_gate_and_monitor_run_without_importing_mlflow(tmp_path: Path) -> None:
    workspace = make_git_repo(tmp_path / "ws", example="digits_sklearn")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCHAIN_", "MLFLOW_"))}
    env.update({"MLCHAIN_HOME": str(home), "WORKSPACE": str(workspace), "RUN_ID": "r1", "TRIAL": "1",
                "JOB_NAME": "job1-pull"})

    code, imported, output = _job("pull", env, workspace)
    assert code == 0, output
    assert "mlchain" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))

    # job2 and job3 (which do need MLflow) are stood in for: the trial ran and reached 0.95.
    store = StateStore(home / "state.db")
    store.update_run("r1", framework="sklearn")
    store.upsert_trial("r1", 1, {}, status="succeeded", metric=0.95)
    code, imported, output = _job("gate", {**env, "JOB_NAME": "job4-gate"}, workspace)
    assert code == 0, output
    assert "gate:" in output
    assert "optuna" not in imported  # the gate passed: the search is consulted only for another trial
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert store.get_run("r1").status == "passed"

    code, imported, output = _job("monitor", {**env, "JOB_NAME": "job6-monitor"}, workspace)
    assert code == 0, output
    assert "mlchain" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
