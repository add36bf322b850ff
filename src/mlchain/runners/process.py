"""The process runner: training as a local subprocess, for machines without Docker.

A small supervisor process owns the training process and records its exit
status in ``exit.json``, so a job in another process (job3, the monitor) can
learn how training ended even though it is not the parent. The supervisor
starts a new session: killing the group kills both, as killing a container would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mlchain import outputs
from mlchain.config import Settings
from mlchain.fileio import last_lines, tail_text
from mlchain.procs import pid_alive, wait_for_exit
from mlchain.runners.base import ExitInfo, Status, TrialSpec, heartbeat_age, open_log

EXIT_FILE = "exit.json"
PID_FILE = "supervisor.pid"
WORK_DIR = "src"  # beside the trial's output/ and checkpoints/
# Host variables a training process may see; everything else (secrets included) stays out.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH",
              "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "TF_CPP_MIN_LOG_LEVEL",
              "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def training_env(spec: TrialSpec, host_env: dict[str, str] | None = None,
                 repo_dir: Path | None = None) -> dict[str, str]:
    host = dict(os.environ if host_env is None else host_env)
    env = {k: host[k] for k in PASSED_ENV if k in host}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(spec.contract_env(repo_dir=str(repo_dir) if repo_dir is not None else None))
    env.update(spec.dataset_env())
    if spec.python:  # the repository's venv: its scripts first, as `activate` would
        venv = Path(spec.python).parent.parent
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv / "bin"), *([env["PATH"]] if env.get("PATH") else [])])
    return env


def working_copy(spec: TrialSpec) -> Path:
    """The trial's own copy of the repository, made once per trial (a restart keeps it): what
    one trial writes beside its code (a pickled model, a cache) never reaches another, as each
    container has its own filesystem. Symlinks are copied as links, never followed."""
    work = spec.output_dir.parent / WORK_DIR
    if work.is_dir():
        return work
    partial = work.with_name(f".{WORK_DIR}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(spec.repo_dir, partial, symlinks=True)
    os.replace(partial, work)
    return work


class ProcessHandle:
    runner = "process"

    def __init__(self, spec: TrialSpec, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.spec = spec
        self.pid = pid
        self.ref = str(pid)
        self._popen = popen
        self.image: str | None = None
        self.image_id: str | None = None

    def _exit_record(self) -> dict[str, int | None] | None:
        try:
            text = outputs.read_text(self.spec.host_dir / EXIT_FILE)
            record: dict[str, int | None] | None = None if text is None else json.loads(text)
            return record
        except (outputs.UnsafeOutput, json.JSONDecodeError):
            return None

    def _running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_alive(self.pid)

    def status(self) -> Status:
        if self._running():
            return "running"
        return "exited" if self._exit_record() is not None else "missing"

    def wait(self, timeout: float | None = None) -> ExitInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running():
            if deadline is not None and time.monotonic() >= deadline:
                return self.exit_info()
            if self._popen is not None:
                try:
                    self._popen.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                wait_for_exit(self.pid, 0.2)
        return self.exit_info()

    def exit_info(self) -> ExitInfo:
        info = ExitInfo(last_lines=last_lines(self.logs(200), 40), heartbeat_age_s=heartbeat_age(self.spec))
        if self._running():
            return info
        record = self._exit_record()
        if record is None:
            # The supervisor died with its child (the group was killed): nothing recorded how.
            info.engine_lost = True
            info.signal = signal.SIGKILL
            return info
        code = record.get("returncode")
        if code is not None and code < 0:
            info.signal = -code
            info.exit_code = 128 - code
        else:
            info.exit_code = code
        info.oom_killed = info.signal == signal.SIGKILL and bool(record.get("oom"))
        return info

    def logs(self, tail: int | None = None) -> str:
        return tail_text(self.spec.log_file, tail)

    def cancel(self) -> None:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._running():
                return


class ProcessRunner:
    name = "process"

    def __init__(self, settings: Settings, echo: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.echo = echo

    def start(self, spec: TrialSpec) -> ProcessHandle:
        spec.prepare()
        work = working_copy(spec)
        (spec.host_dir / EXIT_FILE).unlink(missing_ok=True)
        with os.fdopen(open_log(spec.log_file, append=True), "ab") as log:
            popen = subprocess.Popen(
                [spec.python or sys.executable, "-m", "mlchain.runners.supervise", str(spec.host_dir / EXIT_FILE)],
                env=training_env(spec, repo_dir=work), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=spec.output_dir, start_new_session=True)
        (spec.host_dir / PID_FILE).write_text(str(popen.pid))
        return ProcessHandle(spec, popen.pid, popen)

    def attach(self, spec: TrialSpec, ref: str) -> ProcessHandle:
        return ProcessHandle(spec, int(ref))
