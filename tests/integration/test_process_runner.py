"""The process runner's handle: wait, status, logs, cancel, attach from another process, kill."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlchain.runners.base import TrialSpec
from mlchain.runners.process import ProcessRunner

SLOW = """
import time
from mlchain import sdk
for epoch in range(1, 200):
    sdk.log_epoch(epoch, 200, loss=1.0 / epoch)
    time.sleep(0.1)
sdk.report({"accuracy": 1.0})
"""
FAST = "from mlchain import sdk\nprint('hello from training')\nsdk.report({'accuracy': 0.9})\n"


def spec_for(tmp_path: Path, train_py: str) -> TrialSpec:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "train.py").write_text(train_py)
    return TrialSpec(run_id="r", trial=1, framework="sklearn", repo_dir=repo, entry="train.py", params={"a": 1},
                     output_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ck", data_dir=tmp_path / "data")


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_trial_runs_to_completion(tmp_path: Path, make_settings: Any) -> None:
    handle = ProcessRunner(make_settings()).start(spec_for(tmp_path, FAST))
    info = handle.wait(timeout=120)
    assert info.exit_code == 0 and info.signal is None and not info.engine_lost
    assert handle.status() == "exited"
    assert "hello from training" in handle.logs()
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_cancel_attach_and_kill(tmp_path: Path, make_settings: Any) -> None:
    settings = make_settings()
    spec = spec_for(tmp_path, SLOW)
    handle = ProcessRunner(settings).start(spec)
    wait_for(lambda: (spec.output_dir / "progress.jsonl").is_file())
    # another process (job3, the monitor) finds it again by its ref
    attached = ProcessRunner(settings).attach(spec, handle.ref)
    assert attached.status() == "running"
    assert attached.wait(timeout=0.3).exit_code is None  # still running: no exit yet
    attached.cancel()
    info = attached.wait(timeout=30)
    assert attached.status() == "exited" and info.exit_code != 0

    # SIGKILL of the training process: the supervisor records the signal
    spec = replace(spec, output_dir=tmp_path / "out2")
    handle = ProcessRunner(settings).start(spec)
    progress = spec.output_dir / "progress.jsonl"
    wait_for(lambda: progress.is_file() and len(progress.read_text().splitlines()) >= 3)
    trainer_pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_trainer(int(p), handle.pid))
    os.kill(trainer_pid, signal.SIGKILL)
    info = handle.wait(timeout=30)
    assert info.signal == signal.SIGKILL and info.exit_code == 137
    assert info.heartbeat_age_s is not None and info.heartbeat_age_s < 30


def _is_trainer(pid: int, supervisor: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1]) == supervisor
    except (OSError, ValueError, IndexError):
        return False


def test_the_training_process_does_not_see_host_secrets(tmp_path: Path, make_settings: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLCHAIN_SMTP_PASSWORD", "hunter2")
    code = "import os\nfrom mlchain import sdk\nprint(sorted(os.environ))\n" \
           "assert 'hunter2' not in repr(dict(os.environ))\nsdk.report({'accuracy': 1.0})\n"
    handle = ProcessRunner(make_settings()).start(spec_for(tmp_path, code))
    assert handle.wait(timeout=120).exit_code == 0, handle.logs()
    assert "MLCHAIN_SMTP_PASSWORD" not in handle.logs()
