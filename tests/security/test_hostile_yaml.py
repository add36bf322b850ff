"""A hostile mlchain.yaml (alias bombs, a cycle, deep nesting, a 50 MB file) is refused in
bounded time and memory, with a message; and a run stopped in job1 is never resumed by the
next `mlchain run`.

Each load runs in a child process with a time limit and an address-space cap, so that the old
behaviour (minutes, gigabytes) fails the test instead of taking the machine down; the child
reports its own wall time and peak memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_git_repo

from mlchain.state import StateStore

CHILD_MEMORY_CAP = 2 * 1024**3   # the child is killed past this: the old code went far beyond
CHILD_TIMEOUT_S = 60.0
LOAD_BOUND_S = 5.0               # the refusal itself, measured inside the child (imports excluded)
LOAD_BOUND_RSS_MB = 250.0        # peak RSS of the whole child (Python, pydantic, yaml: ~60 MB)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["params:", f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"  bomb: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def wide_reuse() -> str:
    """One 20,000-item list named 20,000 times: 4*10^8 values, in ~140 KB of YAML."""
    items = ", ".join("1" for _ in range(20_000))
    refs = ", ".join("*big" for _ in range(20_000))
    return f"params:\n  big: &big [{items}]\n  all: [{refs}]\n"


def fifty_megabytes() -> str:
    row = "  k{}: " + "x" * 90 + "\n"
    return "params:\n" + "".join(row.format(i) for i in range(50 * 1024 * 1024 // 100))


HOSTILE = {
    "billion-laughs": (billion_laughs, "expands to more than"),
    "wide-reuse": (wide_reuse, "expands to more than"),
    "alias-cycle": (lambda: "params: &p\n  self: *p\n", "refers to a node that contains it"),
    "deep-nesting": (lambda: "params:\n  x: " + "[" * 500 + "]" * 500 + "\n", "deeper than"),
    "deeper-nesting": (lambda: "params:\n  x: " + "[" * 60_000 + "]" * 60_000 + "\n", "nesting depth"),
    "fifty-megabytes": (fifty_megabytes, "mlchain reads at most"),
}

CHILD = """
import json, sys, time
from pathlib import Path
from mlchain.errors import MlchainError
from mlchain.repo_config import load_repo_config
import mlchain.engine.jobs as jobs
from mlchain.config import load_settings
settings = load_settings({"home": sys.argv[2]}, env={})
start = time.perf_counter()
try:
    cfg = jobs.resolved_config(settings, load_repo_config(Path(sys.argv[1])))
    cfg.model_dump(mode="json")  # what job1 stores
    outcome = {"refused": None}
except MlchainError as exc:
    outcome = {"refused": exc.format_message(), "exit_code": exc.exit_code}
outcome["seconds"] = time.perf_counter() - start
# This process's own peak (VmHWM): getrusage's ru_maxrss keeps the forking parent's across exec.
hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
outcome["rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(outcome))
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_CAP, CHILD_MEMORY_CAP))


def child(argv: list[str], env: dict[str, str] | None = None,
          timeout: float = CHILD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, env={**os.environ, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, preexec_fn=_cap_memory, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout:.0f} s: {argv[2:5]}")


def write_repo(root: Path, text: str) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True)
    (repo / "train.py").write_text("print('never trained')\n")
    (repo / "mlchain.yaml").write_text(text)
    return repo


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_mlchain_yaml_is_refused_in_bounded_time_and_memory(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    repo = write_repo(tmp_path, make())
    done = child([sys.executable, "-c", CHILD, str(repo), str(tmp_path / "home")])
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["refused"] is not None and message in outcome["refused"], outcome
    assert outcome["exit_code"] == 3
    assert outcome["seconds"] < LOAD_BOUND_S, outcome
    assert outcome["rss_mb"] < LOAD_BOUND_RSS_MB, outcome


def test_a_large_but_flat_file_under_the_bound_still_loads(tmp_path: Path) -> None:
    params = "".join(f"  p{i}: {i}\n" for i in range(5000))  # ~55 KB: plenty for any real config
    repo = write_repo(tmp_path, "threshold: 0.5\nparams:\n" + params)
    done = child([sys.executable, "-c", CHILD, str(repo), str(tmp_path / "home")])
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["refused"] is None, outcome


def mlchain(home: Path, *args: str, timeout: float = CHILD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return child([sys.executable, "-m", "mlchain.cli", *args],
                 env={"MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process"}, timeout=timeout)


@pytest.mark.parametrize("case", ["billion-laughs", "fifty-megabytes"])
def test_mlchain_run_on_a_hostile_yaml_ends_in_job1_with_a_message(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    repo = make_git_repo(tmp_path / "repo", files={"train.py": "print(1)\n", "mlchain.yaml": make()})
    started = time.monotonic()
    done = mlchain(tmp_path / "home", "run", str(repo), "--no-resume", "--json")
    elapsed = time.monotonic() - started
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and message in summary["stop_reason"], summary
    assert elapsed < 45, f"{elapsed:.1f} s"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_stopped_in_job1_is_not_resumed_by_the_next_run(tmp_path: Path) -> None:
    """The state a kill in job1 leaves (job1 RUNNING, its engine dead, the repository not yet
    read) on a billion-laughs repository: the next `mlchain run` must not read it again."""
    home = tmp_path / "home"
    bomb = make_git_repo(tmp_path / "bomb", files={"train.py": "print(1)\n", "mlchain.yaml": billion_laughs()})
    store = StateStore(home / "state.db")
    store.create_run("stopped-in-job1", bomb.as_uri(), "bomb", "main", None, status="queued")
    seq = store.add_build("stopped-in-job1", "job1-pull", {"REPO_URL": bomb.as_uri(), "REF": "main",
                                                           "PUSHER_EMAIL": "", "RUN_ID": "stopped-in-job1"})
    store.update_build("stopped-in-job1", seq, result="RUNNING", started_at=time.time())
    store.update_run("stopped-in-job1", engine_pid=_dead_pid())
    other = make_git_repo(tmp_path / "other", files={"train.py": "print(1)\n", "mlchain.yaml": "threshold: 7\n"})

    done = mlchain(home, "run", str(other), "--json")
    assert "resuming run stopped-in-job1" not in done.stderr
    stopped = store.get_run("stopped-in-job1")
    assert stopped.status == "failed" and "not resumed" in stopped.stop_reason, stopped
    assert [b.result for b in store.builds("stopped-in-job1")] == ["FAILURE"]
    assert not list((home / "runs" / "stopped-in-job1").glob("logs/*")), "job1 ran again"
    assert store.unfinished_runs() == []

    again = mlchain(home, "run", str(other), "--json")  # the run that failed in job1 is not resumed either
    assert "resuming run" not in again.stderr
    assert len(store.list_runs()) == 3
