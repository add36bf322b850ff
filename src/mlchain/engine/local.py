"""Jenkins' semantics for the subset jobs/ uses, on one machine.

A build: a workspace per job (kept across the run's builds, as Jenkins keeps
one per job), the environment a Jenkins build sets plus its parameters, the
git SCM step, shell builders (exit code == unstable-return makes the build
UNSTABLE, any other non-zero makes it FAILURE and stops the steps), then the
parameterized triggers whose condition matches the result, with current
parameters, property files and predefined parameters. Queued and finished
builds live in the run state, written after every step, so a killed engine
resumes where it stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mlchain.config import Settings
from mlchain.engine.jjb import ROLE_STEP, Chain, GitScm, Job, ShellStep, TriggerBuild
from mlchain.errors import GitError, MlchainError
from mlchain.gitrefs import LOCAL_SCHEME, is_commit, require_clone_url, require_ref
from mlchain.state import BuildResult, BuildRow, StateStore

SUCCESS, UNSTABLE, FAILURE = "SUCCESS", "UNSTABLE", "FAILURE"
# Which results start a downstream build, by the trigger's condition (parameterized-trigger plugin).
CONDITION_MATCHES: dict[str, frozenset[str]] = {
    "SUCCESS": frozenset({SUCCESS}),
    "UNSTABLE": frozenset({UNSTABLE}),
    "FAILED": frozenset({FAILURE}),
    "ALWAYS": frozenset({SUCCESS, UNSTABLE, FAILURE}),
    "UNSTABLE_OR_BETTER": frozenset({SUCCESS, UNSTABLE}),
    "UNSTABLE_OR_WORSE": frozenset({UNSTABLE, FAILURE}),
}
# `mlchain job NAME` steps run in the engine's own process: the same function the CLI calls,
# without paying a Python start-up and MLflow import per job.
INPROCESS_STEP = ROLE_STEP  # a step the engine runs in its own process
VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")

EventSink = Callable[..., None]


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """$VAR and ${VAR} as Jenkins expands them in SCM fields and predefined parameters."""
    def repl(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        return env.get(name, match.group(0))

    return VAR.sub(repl, text)


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties, the format of trigger-parameterized-builds' property files."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
        if match:
            out[match.group(1)] = match.group(2).replace("\\n", "\n").replace("\\\\", "\\")
    return out


def triggered(job: Job, result: str) -> list[TriggerBuild]:
    return [t for t in job.downstream if result in CONDITION_MATCHES[t.condition]]


def downstream_params(trigger: TriggerBuild, target: Job, current: Mapping[str, str],
                      workspace: Path, env: Mapping[str, str]) -> dict[str, str] | None:
    """The parameters a trigger passes, or None when a required property file is missing.
    As Jenkins does, only parameters the target job defines are kept (defaults fill the rest)."""
    given: dict[str, str] = {}
    if trigger.current_parameters:
        given.update(current)
    if trigger.property_file:
        for name in trigger.property_file.split(","):
            path = workspace / expand_vars(name.strip(), env)
            if path.is_file():
                given.update(parse_properties(path.read_text()))
            elif trigger.fail_on_missing:
                return None
    if trigger.predefined_parameters:
        given.update({k: expand_vars(v, env) for k, v in parse_properties(trigger.predefined_parameters).items()})
    return {p.name: given.get(p.name, p.default) for p in target.parameters}


@dataclass
class BuildContext:
    run_id: str
    seq: int
    job: Job
    number: int
    params: dict[str, str]
    workspace: Path
    log: TextIO

    def echo(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()


class LocalEngine:
    def __init__(self, settings: Settings, chain: Chain, store: StateStore,
                 on_event: EventSink | None = None, inprocess: bool = True) -> None:
        self.settings = settings
        self.chain = chain
        self.store = store
        self.on_event = on_event or (lambda *a, **k: None)
        self.inprocess = inprocess

    # queue --------------------------------------------------------------------------
    def enqueue(self, run_id: str, job: str, params: Mapping[str, str]) -> int:
        target = self.chain.job(job)
        full = {p.name: str(params.get(p.name, p.default)) for p in target.parameters}
        return self.store.add_build(run_id, job, full)

    def drain(self, run_id: str, stop: Callable[[], bool] = lambda: False) -> None:
        """Run queued builds in order until none is left. A build the engine was running
        when it died is run again: every job is idempotent for its run and trial."""
        while not stop():
            pending = [b for b in self.store.builds(run_id) if b.result in (BuildResult.PENDING, BuildResult.RUNNING)]
            if not pending:
                return
            self.execute(pending[0])

    # one build ------------------------------------------------------------------------
    def execute(self, build: BuildRow) -> str:
        run_id, seq = build.run_id, build.seq
        job = self.chain.job(build.job)
        workspace = self.settings.runs_dir / run_id / "workspace" / job.name
        workspace.mkdir(parents=True, exist_ok=True)
        log_path = self.settings.runs_dir / run_id / "logs" / f"{seq:03d}-{job.name}-{build.number}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.store.update_build(run_id, seq, result="RUNNING", started_at=time.time(), log_path=str(log_path))
        params = dict(build.params)
        self.on_event("job_started", run_id=run_id, job=job.name, number=build.number, params=params)
        with open(log_path, "a") as log:
            ctx = BuildContext(run_id, seq, job, int(build.number), params, workspace, log)
            env = self.build_env(ctx)
            result = self._steps(ctx, env)
            ctx.echo(f"Finished: {result}")
        self.store.update_build(run_id, seq, result=result, finished_at=time.time())
        self.on_event("job_finished", run_id=run_id, job=job.name, number=build.number, result=result)
        for trigger in triggered(job, result):
            target = self.chain.job(trigger.project)
            if target.disabled:
                continue
            passed = downstream_params(trigger, target, params, workspace, env)
            if passed is None:
                with open(log_path, "a") as log:
                    log.write(f"Property file {trigger.property_file} not found: {target.name} not triggered\n")
                continue
            self.enqueue(run_id, target.name, passed)
        return result

    def build_env(self, ctx: BuildContext) -> dict[str, str]:
        """What a Jenkins build's environment holds, plus the parameters."""
        env = dict(os.environ)
        env.update(settings_env(self.settings))
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env.update({
            "WORKSPACE": str(ctx.workspace),
            "JOB_NAME": ctx.job.name,
            "JOB_BASE_NAME": ctx.job.name,
            "BUILD_NUMBER": str(ctx.number),
            "BUILD_ID": str(ctx.number),
            "BUILD_TAG": f"jenkins-{ctx.job.name}-{ctx.number}",
            "BUILD_URL": (self.settings.runs_dir / ctx.run_id / "logs").as_uri() + "/",
            "JOB_URL": (self.settings.runs_dir / ctx.run_id / "workspace" / ctx.job.name).as_uri() + "/",
            "NODE_NAME": "built-in",
            "NODE_LABELS": "built-in docker",
            "EXECUTOR_NUMBER": "0",
            "JENKINS_URL": "",
            "MLCHAIN_ENGINE": "local",
        })
        env.update(ctx.params)
        return env

    def _steps(self, ctx: BuildContext, env: dict[str, str]) -> str:
        ctx.echo(f"Started by mlchain local engine: {ctx.job.name} #{ctx.number}")
        ctx.echo("Parameters: " + ", ".join(f"{k}={v}" for k, v in sorted(ctx.params.items())))
        if ctx.job.scm is not None:
            try:
                schemes = (*self.settings.clone_schemes, LOCAL_SCHEME)  # the engine runs on this machine
                env.update(checkout(ctx.job.scm, ctx.workspace, env, ctx.echo, clone_schemes=schemes))
            except MlchainError as exc:
                ctx.echo(f"ERROR: {exc.message}")
                return FAILURE
        result = SUCCESS
        for step in ctx.job.builders:
            code = self._shell(ctx, step, env)
            if code == 0:
                continue
            if step.unstable_return is not None and code == step.unstable_return:
                ctx.echo(f"Build step 'Execute shell' marked build as unstable (exit {code})")
                result = UNSTABLE
                continue
            ctx.echo(f"Build step 'Execute shell' marked build as failure (exit {code})")
            return FAILURE
        return result

    def _shell(self, ctx: BuildContext, step: ShellStep, env: dict[str, str]) -> int:
        match = INPROCESS_STEP.match(step.command) if self.inprocess else None
        if match:
            from mlchain.engine.jobs import JOBS, BuildEnv

            name = match.group("job")
            if name in JOBS:
                ctx.echo(f"+ {step.command.strip()}")
                return run_job_inprocess(JOBS[name], self.settings, BuildEnv(env), ctx, self.on_event)
        script = ctx.workspace.parent / f".{ctx.job.name}-{ctx.number}.sh"
        script.write_text(step.command)
        proc = subprocess.Popen(["/bin/sh", "-xe", str(script)], cwd=ctx.workspace, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            ctx.echo(line.rstrip("\n"))
            self.on_event("log", run_id=ctx.run_id, job=ctx.job.name, line=line.rstrip("\n"))
        return proc.wait()


def run_job_inprocess(fn: Callable[..., int], settings: Settings, env: Any, ctx: BuildContext,
                      on_event: EventSink) -> int:
    def echo(line: str) -> None:
        ctx.echo(line)
        on_event("log", run_id=ctx.run_id, job=ctx.job.name, line=line)

    try:
        return int(fn(settings, env, echo))
    except MlchainError as exc:
        echo(f"Error: {exc.format_message()}")
        return exc.exit_code
    except Exception:  # noqa: BLE001 - the job crashed: its console shows why, as Jenkins' would
        for line in traceback.format_exc().splitlines():
            echo(line)
        return 1


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings a child process must see to resolve the same settings (secrets excluded:
    they reach children through the environment or the config file they came from)."""
    out = {"MLCHAIN_HOME": str(settings.home_abs)}
    for name, value in settings.model_dump(exclude={"home"}).items():
        field = type(settings).model_fields[name]
        if value is None or value == field.default or name in ("smtp_password", "webhook_secret", "jenkins_token"):
            continue
        out[f"MLCHAIN_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    return out


def _git(args: list[str], cwd: Path | None, echo: Callable[[str], None]) -> str:
    echo(" > git " + " ".join(shlex.quote(a) for a in args))
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}",
                       hint="check the repository URL and that the ref exists")
    return done.stdout.strip()


def checkout(scm: GitScm, workspace: Path, env: Mapping[str, str], echo: Callable[[str], None],
             clone_schemes: tuple[str, ...] = (LOCAL_SCHEME,)) -> dict[str, str]:
    """The git SCM step: clone or fetch into the workspace, check out the ref (detached).
    The URL and the ref come from outside: checked first, and after ``--`` (or
    ``--end-of-options``) in every git call, so git never reads them as options."""
    url = expand_vars(scm.url, env)
    if not url:
        raise GitError("the repository URL is empty", hint="pass REPO_URL (mlchain run REPO)")
    require_clone_url(url, clone_schemes, source="REPO_URL")
    ref = expand_vars(scm.branches[0], env) if scm.branches else "HEAD"
    if ref in ("", "**"):
        ref = "HEAD"
    require_ref(ref, source="REF")
    if not (workspace / ".git").is_dir():
        _git(["init", "-q", "--", str(workspace)], None, echo)
        _git(["remote", "add", "--", "origin", url], workspace, echo)
    else:
        _git(["remote", "set-url", "--", "origin", url], workspace, echo)
    _git(["fetch", "-q", "--tags", "--force", "--", "origin", "+refs/heads/*:refs/remotes/origin/*"],
         workspace, echo)
    candidates = [f"origin/{ref}", ref] if ref != "HEAD" else ["FETCH_HEAD"]
    if ref == "HEAD":
        _git(["fetch", "-q", "--", "origin", "HEAD"], workspace, echo)
    commit = ""
    for candidate in candidates:
        try:
            commit = _git(["rev-parse", "--verify", "--end-of-options", f"{candidate}^{{commit}}"], workspace,
                          lambda _l: None)
            break
        except GitError:
            continue
    if not commit:  # a commit sha not on any branch head
        _git(["fetch", "-q", "--", "origin", ref], workspace, echo)
        commit = _git(["rev-parse", "--verify", "--end-of-options", "FETCH_HEAD^{commit}"], workspace, echo)
    if not is_commit(commit):
        raise GitError(f"git named {commit!r} as the commit of {ref}, which is not a commit id")
    _git(["checkout", "-q", "-f", "--detach", commit], workspace, echo)
    _git(["clean", "-q", "-fdx"], workspace, echo)
    echo(f"Checking out Revision {commit} ({ref})")
    return {"GIT_COMMIT": commit, "GIT_URL": url, "GIT_BRANCH": f"origin/{ref}" if ref != "HEAD" else "HEAD"}
