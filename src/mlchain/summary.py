"""What a chain run came to: built from the run state, shown by `mlchain run`, sent by job5."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlchain import code_rewrite, contract, gate, outputs
from mlchain.errors import (
    EXIT_GATE_NOT_REACHED,
    ContractError,
    EngineError,
    TrainingFailed,
)
from mlchain.fileio import last_lines
from mlchain.gate import NOTHING_TO_TUNE
from mlchain.provenance import read_provenance

if TYPE_CHECKING:
    from mlchain.config import Settings
    from mlchain.state import EventRow, StateStore, TrialRow

# Exit codes of `mlchain run` by final status; a failed run exits with the code of what stopped it.
STATUS_EXIT = {"passed": 0, "budget_spent": EXIT_GATE_NOT_REACHED, "failed": TrainingFailed.exit_code,
               "running": EngineError.exit_code, "queued": EngineError.exit_code}
# A trial's failure kind -> the exit code of the run it stopped.
FAILURE_EXIT = {"contract_error": ContractError.exit_code}
# Run events: the error that stopped a run (JSON: job, message, hint, exit_code), and notes.
ERROR_EVENT = "error"
NOTE_EVENT = "note"
SEARCH_EVENT = "search"  # what the search did that people should know (a warm start across pushes)
PRUNED_EVENT = "pruned"  # the pruner stopped a trial (the message says at which epoch and why)
CODE_ERROR_HINT = "fix the training code: the last lines of its log above show where it raised"
BUDGET_HINT = ("give the search more room (budget: in mlchain.yaml, or --max-trials / --max-minutes /"
               " --patience), widen its 'search:' space, or lower the threshold")
NOTHING_TO_TUNE_HINT = ("add the hyperparameters to mlchain.yaml (params: {n_estimators: 100, max_depth: 8})"
                        " and read them with sdk.params(): the framework's default space tunes the ones it"
                        " knows, and a 'search:' section says how to vary any other")


def run_exit_code(status: str, error: dict[str, Any] | None, trials: list[TrialRecord]) -> int:
    """`mlchain run`'s exit code: 0 passed, EXIT_GATE_NOT_REACHED when the budget was spent, else the
    code of what stopped the run (the recorded error, or the failing trial's kind)."""
    if status != "failed":
        return STATUS_EXIT.get(status, 1)
    if error and isinstance(error.get("exit_code"), int) and error["exit_code"] > 0:
        return int(error["exit_code"])
    kinds = [t.failure_kind for t in trials if t.failure_kind]
    return FAILURE_EXIT.get(kinds[-1], TrainingFailed.exit_code) if kinds else STATUS_EXIT["failed"]


def stop_hint(status: str, stop_reason: str | None, error: dict[str, Any] | None,
              trials: list[TrialRecord]) -> str | None:
    """How to fix what stopped the run: the hint of the error that stopped it, never another's."""
    if status == "passed":
        return None
    if error:
        return error.get("hint") or None
    if status == "budget_spent":
        return NOTHING_TO_TUNE_HINT if stop_reason == NOTHING_TO_TUNE else BUDGET_HINT
    failed = [t for t in trials if t.failure_kind]
    if not failed:
        return None
    last = failed[-1]
    if last.failure_kind == "contract_error":
        return contract.last_complaint(last.failure_log) or "follow the training contract (README, 'The training contract')"
    if last.failure_kind == "code_error":
        return CODE_ERROR_HINT
    return None


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    status: str                       # pending | running | succeeded | failed | pruned
    metric: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    runner: str | None = None
    image: str | None = None
    image_id: str | None = None
    restarts: int = 0
    failure_kind: str | None = None
    failure_log: str | None = None
    duration_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch progress lines
    code_changes: list[str] = field(default_factory=list)  # its rewritten literals, in short form
    code_diff: str = ""                                    # its code's diff against the pushed code
    metric_source: str | None = None  # where its metric came from ("accuracy 0.93 from ... at mnist.py:41")
    model_files: list[str] = field(default_factory=list)  # model files the code wrote, kept as artifacts

    @property
    def status_text(self) -> str:
        """The status as people read it: 'pruned after epoch 3', 'failed: oom', 'succeeded'."""
        if self.status == "pruned":
            epoch = self.metrics.get("epoch")
            return f"pruned after epoch {int(epoch)}" if isinstance(epoch, (int, float)) else "pruned"
        return f"{self.status}: {self.failure_kind}" if self.failure_kind else self.status


@dataclass
class RunSummary:
    run_id: str
    repo_name: str
    repo_url: str
    ref: str | None
    commit: str | None
    status: str
    stop_reason: str | None
    metric_name: str
    threshold: float
    direction: str
    framework: str | None
    trials: list[TrialRecord]
    best: TrialRecord | None
    recipients: list[str] = field(default_factory=list)
    email: dict[str, Any] | None = None
    registered: dict[str, Any] | None = None
    failed_job: str | None = None
    events: list[EventRow] = field(default_factory=list)
    tracking_uri: str = ""
    mlflow_ui_url: str | None = None
    branch: str | None = None  # where ``ref`` came from (the webhook builds a commit of a branch)
    error: dict[str, Any] | None = None     # the error that stopped the run (job, message, hint, exit_code)
    notes: list[str] = field(default_factory=list)  # what the run could not do (say, register a model)
    reason: str | None = None   # why it ran, when no push asked for it (a retraining on drift)
    dataset: str | None = None  # the dataset version folder it trained on
    entry: str | None = None  # the file that trained
    entry_why: str | None = None  # why that file (found by job2, or named in mlchain.yaml)
    search_notes: list[str] = field(default_factory=list)  # what the search did (a warm start)

    @property
    def source(self) -> str:
        """What was built, as people name it: ``main (0123456789ab)``."""
        name = self.branch or self.ref or "HEAD"
        return f"{name} ({(self.commit or '?')[:12]})"

    @property
    def exit_code(self) -> int:
        return run_exit_code(self.status, self.error, self.trials)

    @property
    def hint(self) -> str | None:
        return stop_hint(self.status, self.stop_reason, self.error, self.trials)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def mlflow_run_ids(self) -> list[str]:
        return [t.mlflow_run_id for t in self.trials if t.mlflow_run_id]

    @property
    def failure_log_tail(self) -> str | None:
        failed = [t for t in self.trials if t.failure_log]
        return failed[-1].failure_log if failed else None

    def mlflow_ui_command(self) -> str:
        from mlchain.notify.build import redact_uri

        uri = redact_uri(self.tracking_uri)
        if uri.startswith("sqlite:///"):
            artifacts = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
            return f"mlflow ui --backend-store-uri {uri} --default-artifact-root {artifacts}"
        return f"mlflow ui --backend-store-uri {uri}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for t in d["trials"]:
            t.pop("history", None)
        if d["best"]:
            d["best"].pop("history", None)
        from mlchain.notify.build import redact_uri

        d["tracking_uri"] = redact_uri(self.tracking_uri)
        d["mlflow_run_ids"] = self.mlflow_run_ids
        d["mlflow_ui"] = self.mlflow_ui_command()
        d["hint"] = self.hint
        d["exit_code"] = self.exit_code
        return d

    def explain(self, settings: Settings | None = None) -> str:
        threshold = gate.format_threshold(self.threshold)
        head = {
            "passed": f"PASSED: {self.metric_name} reached the gate ({threshold})",
            "budget_spent": f"GATE NOT REACHED: the gate ({threshold}) was not reached",
            "failed": "FAILED",
        }.get(self.status, self.status.upper())
        lines = [f"run {self.run_id}: {head}" + (f" — {self.stop_reason}" if self.stop_reason else "")]
        lines.append(f"  repository {self.repo_url} @ {self.source}, framework {self.framework or '?'}")
        if self.entry:
            lines.append(f"  entry {self.entry}" + (f" ({self.entry_why})" if self.entry_why else ""))
        lines.append(f"  {'trial':>5}  {'status':<10} {self.metric_name:>10}  restarts  params")
        for t in self.trials:
            metric = f"{t.metric:.4f}" if t.metric is not None else "-"
            mark = " *" if self.best is not None and t.number == self.best.number else "  "
            params = json.dumps(t.params, sort_keys=True)
            if len(params) > 90:
                params = params[:87] + "..."
            lines.append(f"{mark}{t.number:>5}  {t.status_text:<10} {metric:>10}  {t.restarts:>8}  {params}")
        if self.best is not None and self.best.metric is not None:
            lines.append(f"  best: trial {self.best.number}, {self.metric_name} = {self.best.metric:.4f}")
            if self.best.code_changes:
                lines.append(f"  its code changes: {'; '.join(self.best.code_changes)}")
            if self.best.metric_source:
                lines.append(f"  metric: {self.best.metric_source}")
        for note in self.search_notes:
            lines.append(f"  search: {note}")
        for ev in self.events:
            if ev.kind in ("restart", "give_up"):
                lines.append(f"  monitor: trial {ev.trial}: {ev.message}")
            elif ev.kind == PRUNED_EVENT:
                lines.append(f"  search: trial {ev.trial} {ev.message}")
        if self.failed_job:
            lines.append(f"  failed job: {self.failed_job}")
        tail = self.failure_log_tail
        if tail:
            lines.append("  last lines of the failing training log:")
            lines.extend("    " + line for line in last_lines(tail, 10))
        if self.registered:
            reg = self.registered
            lines.append(f"  registered: {reg.get('name')} version {reg.get('version')}"
                         f" ({'now champion' if reg.get('champion') else 'champion unchanged'})")
        if self.email:
            lines.append(f"  email: {self.email.get('summary')}")
        for note in self.notes:
            lines.append(f"  {note}")
        if self.mlflow_run_ids:
            lines.append(f"  MLflow runs: {', '.join(self.mlflow_run_ids)}")
            lines.append(f"  see them with: {self.mlflow_ui_command()}")
        if self.error and self.error.get("message"):
            lines.append(f"  error ({self.error.get('job') or 'the chain'}): {self.error['message']}")
        hint = self.hint
        if hint:
            lines.append(f"  fix: {hint}")
        if self.status != "passed":
            lines.append(f"  exit code {self.exit_code}")
        return "\n".join(lines)


def read_history(output_dir: str | Path | None) -> list[dict[str, Any]]:
    """The per-epoch progress lines a trial wrote (its learning curve)."""
    if not output_dir:
        return []
    try:
        text = outputs.read_text(Path(output_dir) / contract.PROGRESS_FILE, outputs.PROGRESS_BYTES)
    except outputs.UnsafeOutput:
        return []  # the trial itself is failed for it (trial.collect); the curve stays empty
    rows = []
    for line in (text or "").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def trial_record(row: TrialRow) -> TrialRecord:
    spec = json.loads(row.spec) if row.spec else {}
    duration = None
    if row.started_at and row.finished_at:
        duration = row.finished_at - row.started_at
    changes, diff = code_rewrite.kept_changes(Path(spec["output_dir"]).parent) if spec.get("output_dir") else ([], "")
    provenance = read_provenance(Path(spec["output_dir"])) if spec.get("output_dir") else None
    source = (provenance or {}).get("text") if row.status == "succeeded" else None
    return TrialRecord(
        number=row.number, params=row.params, status=row.status, metric=row.metric,
        metrics=row.metrics or {}, mlflow_run_id=row.mlflow_run_id, runner=row.runner,
        image=row.image, image_id=row.image_id, restarts=row.restarts,
        failure_kind=row.failure_kind, failure_log=row.failure_log, duration_s=duration,
        history=read_history(spec.get("output_dir")), code_changes=changes, code_diff=diff,
        metric_source=source, model_files=list((provenance or {}).get("model_files") or []),
    )


def build_summary(store: StateStore, run_id: str, settings: Settings) -> RunSummary:
    run = store.get_run(run_id)
    cfg = run.config or {}
    trials = [trial_record(r) for r in store.trials(run_id)]
    direction = cfg.get("direction", gate.DEFAULT_DIRECTION)  # no config: job1 refused mlchain.yaml
    events = store.events(run_id)
    recipients = (cfg.get("notify") or {}).get("recipients") or []
    if not recipients:
        recipients = [run.pusher_email] if run.pusher_email else list(settings.default_recipients)
    return RunSummary(
        run_id=run_id, repo_name=run.repo_name, repo_url=run.repo_url, ref=run.ref,
        commit=run.commit_sha, status=run.status, stop_reason=run.stop_reason,
        metric_name=cfg.get("metric", contract.DEFAULT_METRIC),
        threshold=float(cfg.get("threshold", gate.DEFAULT_THRESHOLD)),
        direction=direction, framework=run.framework, trials=trials,
        best=gate.best_of(trials, lambda t: t.metric, direction), recipients=recipients, email=run.email,
        registered=run.registered, failed_job=run.failed_job,
        events=events, tracking_uri=settings.resolved_tracking_uri,
        mlflow_ui_url=settings.mlflow_ui_url, error=recorded_error(events), branch=run.branch,
        notes=[e.message for e in events if e.kind == NOTE_EVENT], reason=run.reason, dataset=run.dataset,
        entry=cfg.get("entry"), entry_why=((run.classification or {}).get("entry") or {}).get("why"),
        search_notes=[e.message for e in events if e.kind == SEARCH_EVENT],
    )


def recorded_error(events: list[EventRow]) -> dict[str, Any] | None:
    """The error event job steps record (engine.jobs.record_error), parsed."""
    for event in events:
        if event.kind == ERROR_EVENT:
            try:
                return dict(json.loads(event.message))
            except (TypeError, ValueError):
                return {"message": event.message}
    return None
