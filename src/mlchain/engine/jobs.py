"""The six jobs, as Jenkins' shell steps run them: the build's environment in, a
properties file out (mlchain.properties, read by trigger-parameterized-builds),
an exit code for the build's result (job4: 75 = UNSTABLE = try another trial; any
error ends the build with its own code, which is never 75, so it is a FAILURE and
job5 announces it).

Every job is idempotent for its run and trial, so a resumed engine may run the
job it was running when it died again without repeating finished work.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlchain import gate, searchplan, tracking, tweak
from mlchain import trial as trials
from mlchain.config import Settings
from mlchain.errors import ConfigError, EngineError, GitError, MlchainError, NotFound
from mlchain.fileio import atomic_write
from mlchain.gitrefs import LOCAL_SCHEME, require_clone_url, require_ref
from mlchain.launch import MlflowRunSpec, await_trial, ensure_mlflow_run, launch_trial
from mlchain.repo_config import RepoConfig, inside, load_repo_config, with_overrides
from mlchain.runners.base import TrialSpec
from mlchain.state import (
    FINISHED_TRIAL_STATUSES,
    TERMINAL_RUN_STATUSES,
    RunRow,
    StateStore,
    TrialRow,
    TrialStatus,
)
from mlchain.summary import ERROR_EVENT, NOTE_EVENT, SEARCH_EVENT, build_summary, read_history, recorded_error

Echo = Callable[[str], None]
PROPERTIES_FILE = "mlchain.properties"
# job4's unstable-return in jobs/chain.yaml: sysexits' EX_TEMPFAIL ("try again"). No
# MlchainError exits with it, so an error inside a job is never read as "another trial".
EXIT_UNSTABLE = 75
NO_MODEL_NOTE = ("no model was saved: the best trial reported {metric} but never called sdk.save_model(model);"
                 " call it at the end of training (after sdk.report) so the model can be registered")


class BuildEnv:
    """The environment of a build (Jenkins' variables and the job's parameters)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)

    @classmethod
    def from_environ(cls) -> BuildEnv:
        return cls(os.environ)

    def get(self, name: str, default: str = "") -> str:
        return self.env.get(name) or default

    @property
    def workspace(self) -> Path:
        return Path(self.get("WORKSPACE", os.getcwd()))

    @property
    def run_id(self) -> str:
        run_id = self.get("RUN_ID")
        if not run_id:
            raise EngineError("RUN_ID is not set", hint="this job is started by the chain (job1 sets RUN_ID)")
        return run_id

    @property
    def trial(self) -> int:
        try:
            return int(self.get("TRIAL", "1"))
        except ValueError:
            raise EngineError(f"TRIAL must be a number, got {self.get('TRIAL')!r}") from None


def write_properties(env: BuildEnv, **values: object) -> None:
    lines = [f"{k}={v}" for k, v in values.items()]
    atomic_write(env.workspace / PROPERTIES_FILE, "\n".join(lines) + "\n", mode=0o644)


def repo_name_from_url(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".git") or "repository"


def resolved_config(settings: Settings, cfg: RepoConfig) -> RepoConfig:
    """mlchain.yaml with the operator's overrides (flags, settings) applied once."""
    budget = cfg.budget.model_copy(update={k: v for k, v in {
        "max_trials": settings.max_trials, "max_minutes": settings.max_minutes,
        "patience": settings.patience}.items() if v is not None})
    update: dict[str, Any] = {"budget": budget.model_dump()}
    if settings.threshold is not None:
        update["threshold"] = settings.threshold
    chosen = {k: v for k, v in {"sampler": settings.sampler, "pruner": settings.pruner}.items() if v is not None}
    if chosen:
        update["strategy"] = {**cfg.strategy.model_dump(), **chosen}
    return with_overrides(cfg, update, "mlchain.yaml with the flags and MLCHAIN_* settings")


def run_config(run: RunRow) -> RepoConfig:
    return RepoConfig.model_validate(run.config)


# --- job1 ---------------------------------------------------------------------------

def job_pull(settings: Settings, env: BuildEnv, echo: Echo) -> int:
    run_id = env.get("RUN_ID") or env.get("BUILD_TAG")
    if not run_id:
        raise EngineError("neither RUN_ID nor BUILD_TAG is set", hint="run job1 from Jenkins or `mlchain run`")
    # Under Jenkins these come from a push's payload (job1's webhook trigger): checked as every
    # value that reaches git is, before a run records them or an email names them.
    if env.get("REPO_URL"):
        require_clone_url(env.get("REPO_URL"), (*settings.clone_schemes, LOCAL_SCHEME), source="REPO_URL")
    if env.get("REF"):
        require_ref(env.get("REF"), source="REF")
    workspace = env.workspace
    repo_url = env.get("GIT_URL") or env.get("REPO_URL") or str(workspace)
    commit = env.get("GIT_COMMIT") or trials.git_info(workspace).get("commit", "")
    store = StateStore(settings.state_db)
    store.create_run(run_id, repo_url, repo_name_from_url(repo_url), env.get("REF") or None,
                     env.get("PUSHER_EMAIL") or None, status="running")
    src = settings.runs_dir / run_id / "src"
    if src.exists():
        shutil.rmtree(src)
    # symlinks=True: a link in the repository stays a link (to /etc, say), never a copy of host files
    shutil.copytree(workspace, src, symlinks=True, ignore=shutil.ignore_patterns(".git", PROPERTIES_FILE))
    try:
        cfg = resolved_config(settings, load_repo_config(src))
    except ConfigError as exc:
        store.update_run(run_id, status="failed", stop_reason=f"invalid mlchain.yaml: {exc.reason}",
                         failed_job=env.get("JOB_NAME", "pull"), finished_at=time.time())
        raise
    opened = store.get_run(run_id)
    branch = opened.branch or env.get("REF") or None  # a webhook run names its branch
    reason, dataset = retrain_facts(settings, opened, env)
    if dataset and cfg.data:
        # The code that reads its data: folder by path (not through sdk.data_dir()) reads the dataset too.
        target = inside(src, cfg.data, "data:")
        shutil.rmtree(target)
        shutil.copytree(dataset, target)
    store.update_run(run_id, status="running", commit_sha=commit or None, src_dir=str(src),
                     branch=branch, config=cfg.model_dump(mode="json"), reason=reason, dataset=dataset)
    if reason:
        echo(f"run {run_id}: {reason}" + (f"; dataset {Path(dataset).name}" if dataset else ""))
    echo(f"run {run_id}: {repo_url} at {commit[:12] or '?'}; threshold {cfg.threshold:.2f} on {cfg.metric},"
         f" budget {cfg.budget.max_trials} trials / {cfg.budget.max_minutes:g} min / patience {cfg.budget.patience}")
    write_properties(env, RUN_ID=run_id, TRIAL=1)
    return 0


def retrain_facts(settings: Settings, run: RunRow, env: BuildEnv) -> tuple[str | None, str | None]:
    """Why a run no push asked for runs, and the dataset version it trains on: what `mlchain run`
    recorded, else the build's REASON and DATASET parameters (Jenkins), checked."""
    from mlchain.serving.retrain import require_dataset, require_reason

    reason = run.reason or (require_reason(env.get("REASON")) if env.get("REASON") else None)
    dataset = run.dataset or (str(require_dataset(settings, Path(env.get("DATASET"))))
                              if env.get("DATASET") else None)
    return reason, dataset


# --- job2 ---------------------------------------------------------------------------

def job_classify(settings: Settings, env: BuildEnv, echo: Echo) -> int:
    from mlchain import code_rewrite
    from mlchain.detect import classify_entry

    store = StateStore(settings.state_db)
    run_id, number = env.run_id, env.trial
    run = store.get_run(run_id)
    cfg, src = run_config(run), run.source_dir
    framework = run.framework
    if not framework:
        choice, classification = classify_entry(src, cfg.entry)
        framework = classification.framework
        cfg = cfg.model_copy(update={"entry": choice.entry})  # later trials run the same entry
        store.update_run(run_id, framework=framework, config=cfg.model_dump(mode="json"),
                         classification={**classification.to_dict(max_reasons=50), "entry": choice.to_dict()})
        echo(choice.explain())
        echo(classification.explain(max_reasons=6))
    entry = cfg.entry
    if entry is None:  # recorded with the framework, above, when trial 1 was classified
        raise EngineError(f"run {run_id} has a framework but no entry recorded",
                          hint="start the run again (job1-pull)")
    row = store.get_trial(run_id, number)
    if row is None:
        if number != 1:
            raise EngineError(f"trial {number} of run {run_id} has no params (job4 asks for them)")
        cfg = _tune_literals_found(settings, store, run_id, cfg, framework, src, entry, echo)
        store.upsert_trial(run_id, 1, cfg.params)
        row = store.get_trial(run_id, 1)
    assert row is not None
    write_properties(env, RUN_ID=run_id, TRIAL=number)
    if row.handle_ref:
        echo(f"trial {number} was launched already ({row.runner} {row.handle_ref}); not launching again")
        ensure_mlflow_run(settings, store, run_id, number, _mlflow_run(run, number))
        return 0
    echo(f"trial {number} params: {row.params}")
    found = code_rewrite.load_found(settings.runs_dir / run_id)
    if found is not None:  # the trial's values are written into a copy of the code
        src = code_rewrite.trial_copy(src, entry, found, row.params, trials.trial_dir(settings, run_id, number))
        for change in code_rewrite.kept_changes(trials.trial_dir(settings, run_id, number))[0]:
            echo(f"trial {number} code: {change}")
    row = launch_trial(settings, store, run_id=run_id, number=number, framework=framework, repo_dir=src, cfg=cfg,
                       params=row.params, mlflow_run=_mlflow_run(store.get_run(run_id), number),
                       job="classify", echo=echo, data_dir=Path(run.dataset) if run.dataset else None)
    echo(f"trial {number} launched: {row.runner} {row.handle_ref}"
         + (f" in image {row.image}" if row.image else ""))
    return 0


def _tune_literals_found(settings: Settings, store: StateStore, run_id: str, cfg: RepoConfig, framework: str,
                        src: Path, entry: str, echo: Echo) -> RepoConfig:
    """The code you have: when the repository gives no params/search of its own and does not read
    sdk.params(), the hyperparameter literals found in its entry (and the modules it imports)
    become the run's params and, with the framework's default ranges, its search space; each
    later trial trains on a rewritten copy (the record of what was found says so)."""
    if cfg.params or cfg.search:
        return cfg
    from mlchain import code_rewrite, literals
    found = code_rewrite.find(src, entry)
    if found.uses_sdk_params or not found.literals:
        return cfg
    space = tweak.literal_space(framework, found.kinds())
    if not space:
        return cfg
    code_rewrite.save_found(settings.runs_dir / run_id, found)
    tuned = cfg.model_copy(update={"params": found.params(), "search": space})
    store.update_run(run_id, config=tuned.model_dump(mode="json"))
    echo(f"hyperparameters found in the code ({len(found.literals)}, {len(space)} searched): "
         + ", ".join(f"{lit.name}={literals.fmt_number(lit.value)} ({lit.file}:{lit.line})"
                     for lit in found.literals))
    return tuned


def _mlflow_run(run: RunRow, number: int) -> MlflowRunSpec:
    """The MLflow run of a chain's trial: in the repository's experiment, tagged with the run's facts."""
    tags = trials.base_tags(run_id=run.run_id, trial=number, framework=run.classified_framework,
                            reasons=trials.reason_lines_from_dict(run.classification),
                            git={"commit": run.commit_sha or "", "remote": run.repo_url},
                            repo_name=run.repo_name)
    if run.reason:
        tags["mlchain.reason"] = run.reason
    if run.dataset:
        tags["mlchain.dataset"] = Path(run.dataset).name
        tags["mlchain.dataset_path"] = run.dataset
    name = run.repo_name
    return MlflowRunSpec(name, f"{name}-{run.run_id}-trial-{number}", tags)


# --- job3 ---------------------------------------------------------------------------

def job_train(settings: Settings, env: BuildEnv, echo: Echo) -> int:
    store = StateStore(settings.state_db)
    run_id, number = env.run_id, env.trial
    write_properties(env, RUN_ID=run_id, TRIAL=number)
    row = store.get_trial(run_id, number)
    if row is None or not row.spec:
        raise EngineError(f"trial {number} of run {run_id} was never launched", hint="run job2-classify first")
    if row.finished_at:
        echo(f"trial {number} was collected already: {row.status}")
        return 0
    judge = _prune_judge(settings, store.get_run(run_id), row)
    row, outcome = await_trial(settings, store, run_id, number, echo=echo, judge=judge)
    spec = TrialSpec.from_json(row.launched_spec)
    shown = f"{outcome.metric:.4f}" if outcome.metric is not None else "-"
    echo(f"trial {number}: {outcome.status} ({outcome.verdict.reason}); {spec.metric} = {shown};"
         f" MLflow run {row.mlflow_run_id}")
    return 0


class PruneJudge:
    """The search's pruner over a running trial's progress lines: each call hands the study the
    epochs it has not seen yet and says whether to stop the trial."""

    def __init__(self, search: tweak.Search, optuna_trial: int, spec: TrialSpec) -> None:
        self.search = search
        self.optuna_trial = optuna_trial
        self.spec = spec
        self.last_epoch = 0

    def __call__(self) -> searchplan.Pruned | None:
        values = searchplan.epoch_values(read_history(self.spec.output_dir), self.spec.metric, self.last_epoch)
        if not values:
            return None
        self.last_epoch = values[-1][0]
        epoch = self.search.report(self.optuna_trial, values)
        if epoch is None:
            return None
        rows = read_history(self.spec.output_dir)
        key = next((searchplan.epoch_key(self.spec.metric, r.keys()) for r in rows if r.get("epoch") == epoch),
                   None) or self.spec.metric
        value = dict(values)[epoch]
        return searchplan.Pruned(epoch, key, value, self.search.strategy.pruner)


def _prune_judge(settings: Settings, run: RunRow, row: TrialRow) -> PruneJudge | None:
    """A judge for a trial the study proposed, when the run prunes; None otherwise (the
    repository's own params are never pruned, and a run whose first trial passes never
    opens the study)."""
    cfg = run_config(run)
    if cfg.strategy.resolved().pruner == "none" or row.optuna_trial is None or row.optuna_trial < 0:
        return None
    return PruneJudge(_open_search(settings, run, cfg), int(row.optuna_trial), TrialSpec.from_json(row.launched_spec))


# --- job4 ---------------------------------------------------------------------------

def job_gate(settings: Settings, env: BuildEnv, echo: Echo) -> int:
    from mlchain import code_rewrite

    store = StateStore(settings.state_db)
    run_id, number = env.run_id, env.trial
    run = store.get_run(run_id)
    cfg = run_config(run)
    rows = store.trials(run_id)
    current = next((r for r in rows if r.number == number), None)
    if current is None or current.status not in FINISHED_TRIAL_STATUSES:
        raise EngineError(f"trial {number} of run {run_id} has no result yet", hint="run job3-train first")
    results = [gate.TrialResult(r.number, r.metric, gate.PRUNED if r.status == TrialStatus.PRUNED
                                else code_rewrite.failure_for_gate(r.failure_kind, code_rewrite.diff_file(
                                    trials.trial_dir(settings, run_id, r.number)) is not None))
               for r in rows if r.number <= number and r.status in FINISHED_TRIAL_STATUSES]
    budget = gate.Budget(cfg.budget.max_trials, cfg.budget.max_minutes, cfg.budget.patience)
    elapsed = (time.time() - run.created_at) / 60.0
    space = tweak.search_space(run.classified_framework, cfg.search, cfg.params)
    decision = gate.decide(results, cfg.threshold, budget, elapsed, cfg.direction, cfg.metric,
                           can_search=bool(space))
    echo(f"gate: {decision.reason}")
    search: tweak.Search | None = None
    if current.optuna_trial is not None and current.optuna_trial >= 0:
        # A trial the study proposed: its result is the study's, whatever the gate decided.
        search = _open_search(settings, run, cfg)
        search.tell(int(current.optuna_trial), current.metric, pruned=current.status == TrialStatus.PRUNED)
    if decision.action == "retry":  # only now is the search consulted
        nxt = store.get_trial(run_id, number + 1)
        if nxt is None:
            search = search or _open_search(settings, run, cfg)
            if current.optuna_trial is None:  # the repository's own params, taught when they fit
                _start_search(search, store, run, current, space, echo)
            optuna_number, params = search.ask(space, cfg.params, run_id=run_id)
            store.upsert_trial(run_id, number + 1, params, optuna_trial=optuna_number)
            nxt = store.get_trial(run_id, number + 1)
        assert nxt is not None
        changed = {k: v for k, v in nxt.params.items() if current.params.get(k) != v}
        echo(f"next: trial {number + 1} with {changed}")
        write_properties(env, RUN_ID=run_id, TRIAL=number + 1)
        return EXIT_UNSTABLE
    if run.status not in TERMINAL_RUN_STATUSES:
        store.update_run(run_id, status=decision.status, stop_reason=decision.reason)
    write_properties(env, RUN_ID=run_id, TRIAL=number)
    return 0


def _start_search(search: tweak.Search, store: StateStore, run: RunRow, baseline: TrialRow,
                  space: Mapping[str, Any], echo: Echo) -> None:
    """After the repository's own params (trial 1) missed the gate: teach the study them and
    their learning curve, and enqueue the previous push's best params when the space is the same."""
    cfg = run_config(run)
    curve = []
    if baseline.spec:
        curve = searchplan.epoch_values(read_history(TrialSpec.from_json(baseline.spec).output_dir), cfg.metric, 0)
    search.add_baseline(baseline.params, space, baseline.metric, curve, run_id=run.run_id)
    store.update_trial(run.run_id, baseline.number, optuna_trial=-1)
    search.mark_space(space)
    if not search.strategy.warm_start:
        return
    start = searchplan.warm_start(search.past_trials(), run.run_id, searchplan.space_hash(space), baseline.params,
                                  cfg.direction)
    if start.params is not None:
        search.enqueue(start.params)
    if start.worth_saying:
        echo(f"search: {start.reason}")
        store.add_event(run.run_id, SEARCH_EVENT, start.reason, trial=baseline.number + 1)


def _open_search(settings: Settings, run: RunRow, cfg: RepoConfig) -> tweak.Search:
    """The study of this repository and branch, with the run's sampler and pruner."""
    space = tweak.search_space(run.classified_framework, cfg.search, cfg.params)
    return tweak.Search(settings.resolved_optuna_storage, tweak.study_name(run.repo_name, run.branch),
                        cfg.direction, seed=settings.search_seed, strategy=cfg.strategy.resolved(), space=space)


# --- job5 ---------------------------------------------------------------------------

def job_notify(settings: Settings, env: BuildEnv, echo: Echo) -> int:
    from mlchain import notify

    store = StateStore(settings.state_db)
    # job1 may fail before it opened the run (Jenkins names that run after job1's build)
    run_id = env.get("RUN_ID") or env.get("FAILED_BUILD_TAG")
    if not run_id:
        raise EngineError("RUN_ID is not set", hint="this job is started by the chain (job1 sets RUN_ID)")
    failed_job = env.get("FAILED_JOB")
    try:
        run = store.get_run(run_id)
    except NotFound:
        if not failed_job:
            raise
        url = env.get("REPO_URL") or "(unknown repository)"
        store.create_run(run_id, url, repo_name_from_url(url), env.get("REF") or None,
                         env.get("PUSHER_EMAIL") or None, status="queued")
        run = store.get_run(run_id)
    for retried in notify.flush_outbox(settings):  # emails kept while SMTP was down go out first
        echo(f"outbox: {retried.summary}")
    if failed_job and not recorded_error(store.events(run_id)):
        # The job failed outside its `mlchain job` step (the SCM checkout, another shell step).
        message, hint = failure_from_log(store, run_id, failed_job)
        exit_code = GitError.exit_code if message.startswith("git ") else EngineError.exit_code
        record_error(store, run_id, failed_job, message, hint, exit_code)
        run = store.get_run(run_id)
    if failed_job and run.status not in TERMINAL_RUN_STATUSES:
        store.update_run(run_id, status="failed", failed_job=failed_job,
                         stop_reason=run.stop_reason or f"{failed_job} failed")
    summary = build_summary(store, run_id, settings)
    best = summary.best
    if summary.passed and best is not None and best.mlflow_run_id and not run.registered:
        if _has_model(settings, best.mlflow_run_id):
            registered = tracking.register_best(settings, summary.repo_name, best.mlflow_run_id,
                                                summary.metric_name, float(best.metric or 0.0), summary.direction)
            store.update_run(run_id, registered=registered)
            echo(f"registered {registered['name']} version {registered['version']}"
                 f" ({'champion moved' if registered['champion'] else 'champion unchanged'})")
        else:  # a version pointing at no model must never become champion
            note = NO_MODEL_NOTE.format(metric=summary.metric_name)
            if not any(e.kind == NOTE_EVENT for e in store.events(run_id)):
                store.add_event(run_id, NOTE_EVENT, note, trial=best.number)
            echo(f"not registered: {note}")
        summary = build_summary(store, run_id, settings)
    if run.email:
        echo(f"email already handled: {run.email.get('summary')}")
    else:
        delivery = notify.send_run_email(summary, settings, once=True)  # a resumed job5 sends no second one
        store.update_run(run_id, email=delivery.to_dict())
        echo(f"email: {delivery.summary}")
    store.update_run(run_id, finished_at=time.time())
    return 0


def _has_model(settings: Settings, mlflow_run_id: str) -> bool:
    """Whether the trial's MLflow run holds a model (sdk.save_model was called)."""
    from mlchain import contract

    return bool(tracking.client(settings).list_artifacts(mlflow_run_id, contract.MODEL_DIR))


def failure_from_log(store: StateStore, run_id: str, job: str) -> tuple[str, str | None]:
    """What the console log of the job's last build says went wrong (the engine writes a failing
    step's error as ``ERROR: message`` and ``  fix: hint``), for a failure outside a job step."""
    logs = [b.log_path for b in store.builds(run_id) if b.job == job and b.log_path]
    message, hint = f"{job} failed", None
    if not logs:
        return message, hint
    try:
        lines = Path(logs[-1]).read_text(errors="replace").splitlines()
    except OSError:
        return message, hint
    for i, line in enumerate(lines):
        if line.startswith(("ERROR: ", "Error: ")):
            message = line.split(": ", 1)[1].strip() or message
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            hint = following.removeprefix("fix: ").strip() if following.startswith("fix: ") else None
    return message, hint


def record_error(store: StateStore, run_id: str, job: str, message: str, hint: str | None,
                 exit_code: int) -> None:
    """Keep the error that stopped the run (the first one: later ones follow from it) and mark
    the run failed, so that job5 announces what stopped it, how to fix it, and the exit code."""
    try:
        run = store.get_run(run_id)
    except NotFound:
        return
    if recorded_error(store.events(run_id)) is not None:
        return
    store.add_event(run_id, ERROR_EVENT, json.dumps({"job": job, "message": message, "hint": hint,
                                                     "exit_code": exit_code}))
    if run.status not in TERMINAL_RUN_STATUSES:
        first = message.strip().splitlines()[0] if message.strip() else "error"
        store.update_run(run_id, status="failed", failed_job=job, stop_reason=f"{job} failed: {first}",
                         finished_at=time.time())


def announced(fn: Callable[[Settings, BuildEnv, Echo], int]) -> Callable[[Settings, BuildEnv, Echo], int]:
    """A job whose errors are recorded on its run before they end the build (as a FAILURE)."""
    @functools.wraps(fn)
    def job(settings: Settings, env: BuildEnv, echo: Echo) -> int:
        try:
            return fn(settings, env, echo)
        except MlchainError as exc:
            _record_job_error(settings, env, exc.reason, exc.hint, exc.exit_code)
            raise
        except Exception as exc:
            _record_job_error(settings, env, f"{type(exc).__name__}: {exc}", None, 1)
            raise

    return job


def _record_job_error(settings: Settings, env: BuildEnv, message: str, hint: str | None, exit_code: int) -> None:
    run_id = env.get("RUN_ID") or env.get("BUILD_TAG")
    if not run_id or not settings.state_db.exists():
        return
    try:
        record_error(StateStore(settings.state_db), run_id, env.get("JOB_NAME", "mlchain job"), message, hint,
                     exit_code)
    except Exception:  # noqa: BLE001,S110 - the job's own error is what the build must end with
        pass


def job_monitor(settings: Settings, env: BuildEnv, echo: Echo) -> int:
    from mlchain.monitor import monitor_pass

    for line in monitor_pass(settings):
        echo(line)
    return 0


JOBS: dict[str, Callable[[Settings, BuildEnv, Echo], int]] = {
    "pull": announced(job_pull),
    "classify": announced(job_classify),
    "train": announced(job_train),
    "gate": announced(job_gate),
    "notify": announced(job_notify),
    "monitor": job_monitor,
}
