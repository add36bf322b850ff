"""Shared by the monitor's integration tests and benchmarks/bench_resume.py (no tests here).

- ``write_workload``: a small training repository that checkpoints each epoch through the
  sdk (a softmax regression trained by ``partial_fit``, numpy only, so a restarted
  attempt starts in about a second), with slow epochs (``time.sleep`` inside the training
  loop: the workload, so a kill lands mid-epoch) and switches to raise or hang.
- ``Killer``: kills the current attempt of a trial on a seeded schedule, waiting on the
  progress file and the run state (never on a fixed sleep) before each kill. A workload
  written with ``hold_at`` waits before that epoch until the killer is done (``release``),
  so the training cannot finish before the last kill however slow the machine is.
- ``launch``/``collect``: job1..job3 as the chain runs them, for tests that do not need
  the gate and the email.
"""

from __future__ import annotations

import json
import os
import random
import signal
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import wait_for

from mlchain import contract
from mlchain.config import Settings
from mlchain.engine import jobs
from mlchain.monitor import LAUNCH_FAILED, LAUNCHING
from mlchain.runners.base import TrialSpec
from mlchain.state import StateStore, TrialRow

TINY_MODEL = '''
    """A softmax regression trained one pass per partial_fit call: a stand-in for an
    scikit-learn estimator (same protocol: partial_fit, predict, get_params)."""
    import numpy as np


    class SoftmaxRegression:
        def __init__(self, lr=0.5, seed=0):
            self.lr = lr
            self.seed = seed

        def get_params(self, deep=True):
            return {"lr": self.lr, "seed": self.seed}

        def partial_fit(self, x, y, classes=None):
            if not hasattr(self, "coef_"):
                self.classes_ = np.asarray(classes)
                self.coef_ = np.random.default_rng(self.seed).normal(scale=0.01, size=(x.shape[1], len(classes)))
            logits = x @ self.coef_
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            onehot = (y[:, None] == self.classes_[None, :]).astype(float)
            self.loss_ = float(-np.mean(np.log((p * onehot).sum(1) + 1e-12)))
            self.coef_ -= self.lr * x.T @ (p - onehot) / len(x)
            return self

        def predict(self, x):
            return self.classes_[(x @ self.coef_).argmax(1)]
'''

TRAIN = '''
    """Epoch by epoch with sdk checkpoints; slow epochs; can raise or hang (see params)."""
    import time

    import numpy as np

    from mlchain import sdk
    from tiny_model import SoftmaxRegression

    p = sdk.params()
    epochs, epoch_s = int(p["epochs"]), float(p["epoch_s"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    y = (x @ rng.normal(size=(8, 3))).argmax(1)
    x_train, y_train, x_test, y_test = x[:450], y[:450], x[450:], y[450:]
    started = sdk.output_dir() / "epochs-started.txt"
    hang_marker = sdk.checkpoint_dir() / "hung-once"
    release = sdk.checkpoint_dir() / RELEASE

    model, done = sdk.resume(lambda: SoftmaxRegression(lr=float(p["lr"])))
    for epoch in range(done + 1, epochs + 1):
        while epoch == p.get("hold_at") and not release.exists():
            time.sleep(0.02)             # held until the test's killer has done its kills
        with open(started, "a") as fh:   # every epoch begun, across attempts: the work done
            fh.write(f"{epoch}\\n")
        time.sleep(epoch_s)
        model.partial_fit(x_train, y_train, classes=np.arange(3))
        if p.get("raise_at") == epoch:
            raise ValueError(f"the training data is broken at epoch {epoch}")
        sdk.checkpoint(model, epoch)
        sdk.log_epoch(epoch, epochs, loss=model.loss_)
        if p.get("hang_after") == epoch and not hang_marker.exists():
            hang_marker.touch()      # hangs once: the restarted attempt goes on
            print("hanging now", flush=True)
            time.sleep(3600)
    sdk.report({"accuracy": float(np.mean(model.predict(x_test) == y_test))})
'''


def write_workload(root: Path, *, epochs: int = 30, epoch_s: float = 0.15, threshold: float = 0.5,
                   name: str = "workload", **params: Any) -> Path:
    repo = root / name
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "tiny_model.py").write_text(textwrap.dedent(TINY_MODEL))
    (repo / "train.py").write_text(textwrap.dedent(TRAIN).replace("RELEASE", repr(RELEASE)))
    all_params = {"epochs": epochs, "epoch_s": epoch_s, "lr": 0.5, **params}
    (repo / "mlchain.yaml").write_text(textwrap.dedent(f"""\
        framework: sklearn
        metric: accuracy
        threshold: {threshold}
        budget: {{max_trials: 1, max_minutes: 30, patience: 1}}
        notify: {{recipients: [ds@example.com]}}
        params: {json.dumps(all_params)}
        """))
    return repo


# --- reading a trial's files --------------------------------------------------------------

def progress_rows(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / contract.PROGRESS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def epochs_started(output_dir: Path) -> list[int]:
    path = output_dir / "epochs-started.txt"
    return [int(x) for x in path.read_text().split()] if path.is_file() else []


def trial_row(settings: Settings, run_id: str, number: int = 1) -> TrialRow | None:
    try:
        return StateStore(settings.state_db).get_trial(run_id, number)
    except Exception:  # noqa: BLE001 - the state file is being created
        return None


def live_ref(row: TrialRow | None) -> str | None:
    """The current attempt's handle, when one is launched and recorded."""
    if row is None or row.status != "running":
        return None
    ref = str(row.handle_ref or "")
    return ref if ref and not ref.startswith((LAUNCHING, LAUNCH_FAILED)) else None


# --- killing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kill:
    after_lines: int     # progress lines written since the previous kill's mark (0: kill it while it starts)
    delay_s: float       # then, this far into the next epoch
    mode: str            # process: "group" (supervisor and training) or "training" (the pid); docker: "container"


UNKILLED_EPOCHS = 5
RELEASE = "release"  # in the trial's checkpoint folder: a held workload goes on (see hold_at)


def hold_epoch(epochs: int) -> int:
    """Where a workload killed on ``schedule`` waits for the killer: its first unkilled epoch."""
    return epochs - UNKILLED_EPOCHS + 1


def schedule(seed: int, kills: int, epochs: int, epoch_s: float, runner: str) -> list[Kill]:
    """A seeded schedule that leaves the last epochs unkilled, so training always finishes; and
    enough of them that the last kill lands before the attempt ends (a trial's tail after its
    last epoch is short now that mlchain-train skips the interpreter's teardown)."""
    rng = random.Random(seed)
    plan, lines = [], 0
    for _ in range(kills):
        n = rng.choice([0, 1, 1, 2, 3])
        if lines + n > epochs - UNKILLED_EPOCHS:
            n = 0
        lines += n
        mode = "container" if runner == "docker" else rng.choice(["group", "training"])
        delay = rng.uniform(0.05, 0.6) if n == 0 else rng.uniform(0.0, 0.7 * epoch_s)
        plan.append(Kill(n, delay, mode))
    return plan


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def kill_attempt(settings: Settings, row: TrialRow, mode: str, docker_client: Any = None) -> None:
    ref = str(row.handle_ref)
    if row.runner == "docker":
        import docker

        try:
            docker_client.containers.get(ref).kill()
        except docker.errors.APIError:
            pass  # it ended meanwhile
        return
    pid = int(ref)
    try:
        if mode == "group":
            os.killpg(pid, signal.SIGKILL)
            return
        # The training process itself (the supervisor's child): the supervisor records the signal.
        children = wait_for(lambda: _children(pid) or not _alive(pid), 30, "the training process")
        for child in children if isinstance(children, list) else []:
            os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Killer(threading.Thread):
    """Kills a trial's attempts on a schedule; records when (for the kill-to-progress latency)."""

    def __init__(self, settings: Settings, run_id: str, plan: list[Kill], *, number: int = 1,
                 docker_client: Any = None, timeout_s: float = 120.0,
                 before_kill: Callable[[TrialRow], None] | None = None, marks_from_kill: bool = False) -> None:
        super().__init__(daemon=True, name="killer")
        # marks_from_kill: each kill waits for after_lines more than were written when the
        # previous kill landed (not more than the plan's sum), so the attempt it kills has
        # itself trained that far, however late the previous kill was.
        self.marks_from_kill = marks_from_kill
        self.settings, self.run_id, self.plan, self.number = settings, run_id, plan, number
        self.docker_client = docker_client
        self.timeout_s = timeout_s
        self.before_kill = before_kill
        self.killed_at: list[float] = []
        self.error: BaseException | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.release()

    def release(self) -> None:
        """Let a held workload (hold_at) go on: the kills are done (or failed)."""
        row = trial_row(self.settings, self.run_id, self.number)
        if row is not None and row.spec:
            folder = TrialSpec.from_json(row.launched_spec).checkpoint_dir
            folder.mkdir(parents=True, exist_ok=True)
            (folder / RELEASE).touch()

    def _output_dir(self) -> Path:
        row = wait_for(lambda: trial_row(self.settings, self.run_id, self.number), self.timeout_s, "the trial")
        return TrialSpec.from_json(row.launched_spec).output_dir

    def _run(self) -> None:
        # The marks add up over the plan (the Nth kill waits for the sum of the first N
        # after_lines), so a kill that lands late does not push the later ones back: on a
        # loaded machine that drift had let the training finish before the last kill.
        last_ref: str | None = None
        mark = 0
        for kill in self.plan:
            if self.stopped.is_set():
                return
            mark += kill.after_lines
            last_ref = self._kill_one(kill, mark, last_ref)
            if self.marks_from_kill:
                mark = len(progress_rows(self._output_dir()))

    def _new_attempt(self, last_ref: str | None) -> TrialRow | None:
        row = trial_row(self.settings, self.run_id, self.number)
        if row is not None and row.status not in ("pending", "running"):
            raise AssertionError(f"the trial ended ({row.status}) before the kill schedule did")
        return row if row is not None and live_ref(row) not in (None, last_ref) else None

    def _still_running(self, seen: TrialRow) -> bool:
        row = trial_row(self.settings, self.run_id, self.number)
        if row is None or row.status != "running" or row.attempt != seen.attempt:
            raise AssertionError("the attempt to kill ended before its kill was due")
        return True

    def _kill_one(self, kill: Kill, mark: int, last_ref: str | None) -> str | None:
        row = wait_for(lambda: self._new_attempt(last_ref), self.timeout_s, "a new attempt")
        out = self._output_dir()
        wait_for(lambda: self._still_running(row) and len(progress_rows(out)) >= mark,
                 self.timeout_s, f"{mark} progress lines")
        time.sleep(kill.delay_s)  # the schedule: this far into the epoch (or the start)
        if self.before_kill is not None:
            self.before_kill(row)
        kill_attempt(self.settings, row, kill.mode, self.docker_client)
        self.killed_at.append(time.time())
        return live_ref(row)


def resume_latencies(output_dir: Path, killed_at: list[float]) -> list[float]:
    """Seconds from each kill to the first progress line written after it."""
    times = sorted(float(r["time"]) for r in progress_rows(output_dir))
    out = []
    for t in killed_at:
        later = [x for x in times if x > t]
        if later:
            out.append(later[0] - t)
    return out


# --- job1..job3 without the gate and the email --------------------------------------------

def build_env(run_id: str, workspace: Path, **extra: str) -> jobs.BuildEnv:
    return jobs.BuildEnv({"RUN_ID": run_id, "TRIAL": "1", "WORKSPACE": str(workspace),
                          "REPO_URL": workspace.as_uri(), **extra})


def launch(settings: Settings, repo: Path, run_id: str, echo: Callable[[str], None] = lambda _l: None) -> None:
    """job1 (copy the repository into the run) and job2 (classify, launch trial 1)."""
    settings.ensure_dirs()
    workspace = settings.runs_dir / run_id / "workspace-test"
    assert jobs.job_pull(settings, build_env(run_id, repo), echo) == 0
    assert jobs.job_classify(settings, build_env(run_id, workspace), echo) == 0


def collect(settings: Settings, run_id: str, echo: Callable[[str], None] = lambda _l: None) -> TrialRow:
    """job3: wait for the trial (restarting what dies), log it to MLflow; returns the trial row."""
    workspace = settings.runs_dir / run_id / "workspace-test"
    assert jobs.job_train(settings, build_env(run_id, workspace), echo) == 0
    row = trial_row(settings, run_id)
    assert row is not None
    return row


@dataclass
class Lines:
    """An echo that keeps what it was given."""

    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)
