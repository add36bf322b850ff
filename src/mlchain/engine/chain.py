"""`mlchain run` and `mlchain resume`: the chain on one machine, with a live view."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from mlchain import contract, tracking
from mlchain.config import Settings
from mlchain.engine.jjb import Chain, load_chain
from mlchain.engine.jobs import repo_name_from_url
from mlchain.engine.local import LocalEngine
from mlchain.errors import EngineError, GitError
from mlchain.gitrefs import LOCAL_SCHEME, require_clone_url, require_ref
from mlchain.jobdefs import default_jobs_dir
from mlchain.runids import new_run_id
from mlchain.state import TERMINAL_RUN_STATUSES, RunRow, StateStore
from mlchain.summary import RunSummary, build_summary


def repo_url_of(settings: Settings, repo: str, echo: Any = print) -> str:
    """A path becomes a file:// URL (git clones it like any remote); URLs pass through.
    A folder that is not the root of a git repository (say models/digits_cnn inside this
    checkout) is committed as a snapshot into a repository under MLCHAIN_HOME first."""
    if "://" in repo or repo.startswith("git@") or "::" in repo:
        return require_clone_url(repo, (*settings.clone_schemes, LOCAL_SCHEME), source="REPO")
    path = Path(repo).expanduser().resolve()
    if not path.is_dir():
        raise GitError(f"{repo} is neither a git URL nor an existing folder",
                       hint="pass a path to a git repository or a clone URL (https://, file://, git@)")
    if (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir()):
        return path.as_uri()
    snapshot = settings.home_abs / "sources" / path.name
    _snapshot(path, snapshot)
    echo(f"{path} is not a git repository: running a snapshot of it committed in {snapshot}")
    return snapshot.as_uri()


def _snapshot(src: Path, dest: Path) -> None:
    import shutil
    import subprocess

    def git(*args: str) -> None:
        done = subprocess.run(["git", "-C", str(dest), *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed in {dest}: {done.stderr.strip()}")

    if not (dest / ".git").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", "main")
    for item in dest.iterdir():
        if item.name != ".git":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    shutil.copytree(src, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".git", "__pycache__", "mlchain-output", ".mlchain"))
    git("add", "-A")
    git("-c", "user.name=mlchain", "-c", "user.email=mlchain@localhost", "commit", "-q", "--allow-empty",
        "-m", f"snapshot of {src}")


class LiveView:
    """What a person watching `mlchain run` sees: the job running, each trial's params,
    per-epoch progress, restarts. Plain lines when the output is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.enabled = enabled
        # soft_wrap: a long line (a path) stays one line in a log, whatever the terminal's width
        self.console = Console(stderr=False, highlight=False, soft_wrap=True)
        self.progress: Any = None
        self.task: Any = None
        self.trial = "?"

    def __call__(self, kind: str, **data: Any) -> None:
        if not self.enabled:
            if kind == "log" and str(data.get("line", "")).startswith("warning:"):
                print(data["line"], file=sys.stderr)  # even with --json, the person sees a warning
            return
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(**data)

    def on_job_started(self, job: str, number: int, params: dict[str, str], **_: Any) -> None:
        self._stop_progress()
        self.trial = params.get("TRIAL", self.trial)
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v and k not in ("RUN_ID",))
        self.console.print(f"[bold cyan]▶ {job} #{number}[/] {shown}")

    def on_job_finished(self, job: str, number: int, result: str, **_: Any) -> None:
        self._stop_progress()
        colour = {"SUCCESS": "green", "UNSTABLE": "yellow", "FAILURE": "red"}.get(result, "white")
        self.console.print(f"  [{colour}]{job} #{number}: {result}[/]")

    def on_log(self, job: str, line: str, **_: Any) -> None:
        if line.startswith(contract.PROGRESS_PREFIX):
            self._progress_line(line)
            return
        keep = ("trial ", "gate:", "next:", "search:", "email:", "registered", "framework:", "run ", "Error", "monitor:", "warning:",
                "not registered:",
                "mlchain-train: error", "Traceback", "ERROR")
        if line.startswith(keep):
            self._stop_progress()
            self.console.print(f"  {line}")

    def _progress_line(self, line: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        try:
            row = json.loads(line[len(contract.PROGRESS_PREFIX):])
        except json.JSONDecodeError:
            return
        total = row.get("epochs")
        metrics = " ".join(f"{k}={v:.4f}" for k, v in row.items()
                           if k not in ("epoch", "epochs", "time") and isinstance(v, float))
        if self.progress is None:
            self.progress = Progress(TextColumn("  trial {task.fields[trial]} epoch"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"),
                                     console=self.console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, trial=self.trial, metrics="")
        self.progress.update(self.task, completed=row.get("epoch", 0), total=total, metrics=metrics)

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        self._stop_progress()


class MonitorThread(threading.Thread):
    """job6's timed trigger, locally: a monitor pass every few seconds while the run is active."""

    def __init__(self, settings: Settings, run_id: str, view: LiveView, job: str) -> None:
        super().__init__(daemon=True, name="mlchain-monitor")
        self.job = job  # the monitor's job in jobs/: its lines show as that job's
        self.settings = settings
        self.run_id = run_id
        self.view = view
        self.stopped = threading.Event()

    def run(self) -> None:
        from mlchain.monitor import monitor_pass

        while not self.stopped.wait(self.settings.monitor_interval_s):
            try:
                for line in monitor_pass(self.settings, run_id=self.run_id):
                    self.view("log", job=self.job, line=f"monitor: {line}")
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next interval
                self.view("log", job=self.job, line=f"monitor: pass failed: {exc}")

    def stop(self) -> None:
        self.stopped.set()


def _engine(settings: Settings, store: StateStore, view: LiveView, jobs_dir: Path | None) -> tuple[LocalEngine, Chain]:
    chain = load_chain(jobs_dir or default_jobs_dir())
    return LocalEngine(settings, chain, store, on_event=view), chain


def warm_up(settings: Settings, start: threading.Event | None = None) -> threading.Thread:
    """While the training runs: import what every run's later jobs need, open MLflow's stores
    and draw a first picture, so that job3 to job5 do not wait for it. It waits for ``start``
    (the training launched): before, it would compete with job1 and job2, which the training
    waits for. The search's storage is not opened here: a run whose first trial passes never
    needs it, and job4 opens it when another trial is needed."""
    def work() -> None:
        import importlib

        if start is not None:
            start.wait()
        steps: list[Any] = [
            lambda: tracking.open_stores(settings),
            lambda: importlib.import_module("mlchain.notify"),
            warm_plot,
        ]
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001,S112 - the job that needs it will report the error
                continue

    thread = threading.Thread(target=work, daemon=True, name="mlchain-warm-up")
    thread.start()
    return thread


def warm_plot() -> None:
    """matplotlib's first picture loads fonts and the Agg backend; job5 then draws at full speed."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=20)
    FigureCanvasAgg(fig)
    fig.subplots().set_title("warm-up 0.9")
    fig.savefig(io.BytesIO(), format="png")


def _drive(settings: Settings, engine: LocalEngine, store: StateStore, run_id: str, view: LiveView) -> RunSummary:
    launched = threading.Event()
    sink = engine.on_event

    def on_event(kind: str, **data: Any) -> None:
        sink(kind, **data)
        if kind == "job_finished" and data.get("job") != engine.chain.first_job:
            launched.set()  # job2 has launched the training (or the chain is past it)

    engine.on_event = on_event
    warm_up(settings, start=launched)
    if _maybe_run(store, run_id) is not None:
        store.update_run(run_id, engine_pid=os.getpid())
    monitor = MonitorThread(settings, run_id, view, engine.chain.job_for("monitor"))
    monitor.start()
    try:
        engine.drain(run_id)
    finally:
        monitor.stop()
        view.close()
    run = _maybe_run(store, run_id)
    if run is None:  # job1 failed before the run existed: keep a record anyway
        raise EngineError(f"run {run_id} failed before job1 could open it; see "
                          f"{settings.runs_dir / run_id / 'logs'}", hint="check the repository URL and ref")
    if run.status not in TERMINAL_RUN_STATUSES:
        store.update_run(run_id, status="failed", stop_reason=run.stop_reason or "the chain ended early")
    return build_summary(store, run_id, settings)


def _maybe_run(store: StateStore, run_id: str) -> RunRow | None:
    from mlchain.errors import NotFound

    try:
        return store.get_run(run_id)
    except NotFound:
        return None


def run_chain(settings: Settings, repo: str, ref: str | None = None, pusher_email: str | None = None,
              live: bool = True, run_id: str | None = None, jobs_dir: Path | None = None,
              branch: str | None = None, reason: str | None = None, dataset: Path | None = None) -> RunSummary:
    """Run the chain on ``repo`` at ``ref``; ``branch`` is where that ref came from (a push
    of a commit on ``main``), else ``ref`` itself: it names the search's study. A run no push
    asked for (a retraining on drift) says why in ``reason``, and trains on the dataset
    version ``dataset`` instead of the repository's data folder."""
    from mlchain.serving.retrain import require_dataset, require_reason

    for name in (ref, branch):
        if name is not None:
            require_ref(name)  # before anything is created: git must never see an option here
    reason = require_reason(reason) if reason is not None else None
    dataset = require_dataset(settings, dataset) if dataset is not None else None
    settings.ensure_dirs()
    store = StateStore(settings.state_db)
    view = LiveView(live)
    engine, chain = _engine(settings, store, view, jobs_dir)
    run_id = run_id or new_run_id()
    if _maybe_run(store, run_id) is not None or store.builds(run_id):
        return resume_chain(settings, run_id, live=live, jobs_dir=jobs_dir)
    url = repo_url_of(settings, repo, echo=view.console.print if live else (lambda *_a: None))
    store.create_run(run_id, url, repo_name_from_url(url), ref, pusher_email, status="queued")
    if branch:
        store.update_run(run_id, branch=branch)  # job1 keeps it
    if reason or dataset:
        store.update_run(run_id, reason=reason, dataset=str(dataset) if dataset else None)  # job1 keeps them
    # Owned before job1 is queued: another `mlchain run` must never take it for an interrupted run.
    store.update_run(run_id, engine_pid=os.getpid())
    engine.enqueue(run_id, chain.first_job, {"REPO_URL": url, "REF": ref or "HEAD",
                                             "PUSHER_EMAIL": pusher_email or "", "RUN_ID": run_id})
    if live:
        view.console.print(f"[bold]mlchain run {run_id}[/]: {url} @ {ref or 'HEAD'}")
    return _drive(settings, engine, store, run_id, view)


def resume_chain(settings: Settings, run_id: str, live: bool = True, jobs_dir: Path | None = None) -> RunSummary:
    store = StateStore(settings.state_db)
    if not store.builds(run_id):
        store.get_run(run_id)  # NotFound with a clear message
    view = LiveView(live)
    engine, _ = _engine(settings, store, view, jobs_dir)
    if live:
        view.console.print(f"[bold]resuming run {run_id}[/] from its last finished job")
    return _drive(settings, engine, store, run_id, view)


def interrupted_runs(store: StateStore) -> list[str]:
    """Unfinished runs whose engine is gone (killed, or the machine restarted), to resume.
    A run stopped before job1 finished reading its repository is ended instead: that
    repository (a hostile mlchain.yaml, a hanging fetch) would stop every later run again."""
    from mlchain.procs import pid_alive

    resumable = []
    for run in store.unfinished_runs():
        if run.engine_pid and pid_alive(int(run.engine_pid)):
            continue
        if not opened_by_job1(run):
            store.abandon_run(run.run_id, "interrupted before the chain's first job (the pull) had read the repository;"
                                             " not resumed (start it again with `mlchain run`)")
            continue
        resumable.append(run.run_id)
    return resumable


def opened_by_job1(run: RunRow) -> bool:
    """job1 finished with this run: it copied and validated the repository (src_dir is its last write)."""
    return bool(run.src_dir)


def resume_unfinished(settings: Settings, live: bool = False) -> list[RunSummary]:
    """On start: finish the runs whose engine was killed."""
    store = StateStore(settings.state_db)
    return [resume_chain(settings, run_id, live=live) for run_id in interrupted_runs(store)]
