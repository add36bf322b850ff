"""Read jobs/ through Jenkins Job Builder's own parser, then check every key against what the
local engine supports. A key it does not support is an error that names the key and lists
what is supported: never silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlchain.errors import EngineError

# What the engine supports, per place in a job. Keys marked "Jenkins only" are accepted and
# have no local meaning (one machine has no nodes, nor a build history to rotate).
JOB_KEYS = {
    "name": "the job's name",
    "description": "shown in Jenkins",
    "project-type": "freestyle only",
    "node": "Jenkins only: the agent label",
    "concurrent": "Jenkins only",
    "disabled": "a disabled job is never triggered",
    "properties": "build-discarder (Jenkins only)",
    "parameters": "string, bool, choice",
    "scm": "git",
    "triggers": "github, generic-webhook-trigger (Jenkins only: `mlchain serve` takes pushes locally), timed",
    "builders": "shell",
    "publishers": "trigger-parameterized-builds",
}
PROPERTY_KEYS = {"build-discarder"}
PARAMETER_TYPES = {"string", "bool", "choice"}
SCM_TYPES = {"git"}
GIT_KEYS = {"url", "branches", "wipe-workspace", "credentials-id", "skip-tag", "shallow-clone"}
TRIGGER_TYPES = {"github", "generic-webhook-trigger", "timed"}
BUILDER_TYPES = {"shell"}
SHELL_KEYS = {"command", "unstable-return"}
PUBLISHER_TYPES = {"trigger-parameterized-builds"}
TRIGGER_BUILD_KEYS = {"project", "condition", "property-file", "fail-on-missing", "current-parameters",
                      "predefined-parameters"}
CONDITIONS = {"SUCCESS", "UNSTABLE", "FAILED", "ALWAYS", "UNSTABLE_OR_BETTER", "UNSTABLE_OR_WORSE"}
# A job's role is the CLI job its shell step calls (`mlchain job monitor`): jobs/ names the jobs,
# the code knows only roles.
ROLE_STEP = re.compile(r"^\s*mlchain\s+job\s+(?P<job>[a-z]+)\s*$")
VIEW_KEYS = {"name", "view-type", "description", "first-job", "title", "no-of-displayed-builds",
             "show-parameters", "parameters-in-headers", "refresh-frequency", "definition-header",
             "node", "concurrent", "properties", "filter-executors", "filter-queue"}


@dataclass(frozen=True)
class Parameter:
    name: str
    default: str


@dataclass(frozen=True)
class ShellStep:
    command: str
    unstable_return: int | None = None


@dataclass(frozen=True)
class TriggerBuild:
    project: str
    condition: str = "SUCCESS"
    property_file: str | None = None
    fail_on_missing: bool = False
    current_parameters: bool = False
    predefined_parameters: str = ""


@dataclass(frozen=True)
class GitScm:
    url: str
    branches: tuple[str, ...] = ("**",)


@dataclass(frozen=True)
class Job:
    name: str
    parameters: tuple[Parameter, ...] = ()
    scm: GitScm | None = None
    triggers: tuple[str, ...] = ()
    timed: str | None = None
    builders: tuple[ShellStep, ...] = ()
    downstream: tuple[TriggerBuild, ...] = ()
    disabled: bool = False


@dataclass(frozen=True)
class Chain:
    jobs: Mapping[str, Job]
    views: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def first_job(self) -> str:
        for view in self.views:
            if view.get("first-job"):
                return str(view["first-job"])
        raise EngineError("no view names a first-job", hint="add a pipeline view with first-job to jobs/")

    def job(self, name: str) -> Job:
        try:
            return self.jobs[name]
        except KeyError:
            raise EngineError(f"jobs/ has no job named {name!r} (it has {', '.join(sorted(self.jobs))})") from None

    @property
    def roles(self) -> dict[str, str]:
        """Job name -> role, for every job whose shell step is `mlchain job ROLE`."""
        return {name: role for name, job in self.jobs.items() if (role := role_of(job)) is not None}

    def job_for(self, role: str) -> str:
        """The name of the job that runs ROLE (`mlchain job ROLE`)."""
        names = sorted(name for name, job_role in self.roles.items() if job_role == role)
        if len(names) != 1:
            found = f"{len(names)} jobs ({', '.join(names)})" if names else "no job"
            raise EngineError(f"jobs/ has {found} whose shell step is `mlchain job {role}`",
                              hint=f"exactly one job in jobs/ must run `mlchain job {role}`")
        return names[0]

    def stages(self) -> tuple[tuple[str, str], ...]:
        """(job name, role) in the chain's order: the first job, then what each triggers, depth
        first along the way a passing build goes (a trigger on failure comes last), then the jobs
        nothing triggers (the monitor), by name."""
        order: list[str] = []
        stack = [self.first_job] if self.views else []
        while stack:
            name = stack.pop()
            if name in order or name not in self.jobs:
                continue
            order.append(name)
            onward = sorted(self.jobs[name].downstream, key=lambda t: t.condition in ("FAILED", "UNSTABLE_OR_WORSE"))
            stack.extend(reversed([trigger.project for trigger in onward]))
        order.extend(sorted(name for name in self.jobs if name not in order))
        roles = self.roles
        return tuple((name, roles.get(name, name)) for name in order)


def role_of(job: Job) -> str | None:
    """The role a job runs: the CLI job of its `mlchain job ROLE` shell step, if it has one."""
    for step in job.builders:
        match = ROLE_STEP.match(step.command)
        if match:
            return match.group("job")
    return None


def _unsupported(where: str, key: str, supported: Iterable[str]) -> EngineError:
    listing = ", ".join(sorted(supported))
    return EngineError(f"{where}: '{key}' is not supported by the local engine (supported: {listing})",
                       hint="use a supported key, or run this job on Jenkins")


def _one_key(item: Any, where: str) -> tuple[str, Any]:
    """JJB lists hold either a bare name ("github") or a one-key mapping ({"shell": ...})."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and len(item) == 1:
        key, value = next(iter(item.items()))
        return str(key), value
    raise EngineError(f"{where}: expected a name or a one-key mapping, got {item!r}")


def _check_keys(where: str, data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for key in data:
        if key not in allowed:
            raise _unsupported(where, str(key), allowed)


def _parameters(name: str, items: Sequence[Any]) -> tuple[Parameter, ...]:
    out = []
    for item in items:
        kind, spec = _one_key(item, f"{name}.parameters")
        if kind not in PARAMETER_TYPES:
            raise _unsupported(f"{name}.parameters", kind, PARAMETER_TYPES)
        default = spec.get("default", "")
        if kind == "choice":
            default = (spec.get("choices") or [""])[0]
        if kind == "bool":
            default = "true" if spec.get("default", False) else "false"
        out.append(Parameter(str(spec["name"]), "" if default is None else str(default)))
    return tuple(out)


def _scm(name: str, items: Sequence[Any]) -> GitScm | None:
    scms = [_one_key(item, f"{name}.scm") for item in items]
    if not scms:
        return None
    if len(scms) > 1:
        raise EngineError(f"{name}.scm: the local engine supports one scm per job, found {len(scms)}")
    kind, spec = scms[0]
    if kind not in SCM_TYPES:
        raise _unsupported(f"{name}.scm", kind, SCM_TYPES)
    _check_keys(f"{name}.scm.git", spec, GIT_KEYS)
    return GitScm(url=str(spec["url"]), branches=tuple(str(b) for b in spec.get("branches", ["**"])))


def _triggers(name: str, items: Sequence[Any]) -> tuple[tuple[str, ...], str | None]:
    kinds, timed = [], None
    for item in items:
        kind, spec = _one_key(item, f"{name}.triggers")
        if kind not in TRIGGER_TYPES:
            raise _unsupported(f"{name}.triggers", kind, TRIGGER_TYPES)
        kinds.append(kind)
        if kind == "timed":
            timed = str(spec)
    return tuple(kinds), timed


def _builders(name: str, items: Sequence[Any]) -> tuple[ShellStep, ...]:
    steps = []
    for item in items:
        kind, spec = _one_key(item, f"{name}.builders")
        if kind not in BUILDER_TYPES:
            raise _unsupported(f"{name}.builders", kind, BUILDER_TYPES)
        if isinstance(spec, str):
            steps.append(ShellStep(spec))
            continue
        _check_keys(f"{name}.builders.shell", spec, SHELL_KEYS)
        code = spec.get("unstable-return")
        steps.append(ShellStep(str(spec["command"]), int(code) if code is not None else None))
    return tuple(steps)


def _publishers(name: str, items: Sequence[Any]) -> tuple[TriggerBuild, ...]:
    out = []
    for item in items:
        kind, spec = _one_key(item, f"{name}.publishers")
        if kind not in PUBLISHER_TYPES:
            raise _unsupported(f"{name}.publishers", kind, PUBLISHER_TYPES)
        for trigger in spec:
            where = f"{name}.publishers.trigger-parameterized-builds"
            _check_keys(where, trigger, TRIGGER_BUILD_KEYS)
            condition = str(trigger.get("condition", "SUCCESS"))
            if condition not in CONDITIONS:
                raise _unsupported(f"{where}.condition", condition, CONDITIONS)
            for project in str(trigger["project"]).split(","):
                out.append(TriggerBuild(
                    project=project.strip(), condition=condition, property_file=trigger.get("property-file"),
                    fail_on_missing=bool(trigger.get("fail-on-missing", False)),
                    current_parameters=bool(trigger.get("current-parameters", False)),
                    predefined_parameters=str(trigger.get("predefined-parameters", "") or "")))
    return tuple(out)


def parse_job(data: Mapping[str, Any]) -> Job:
    name = str(data["name"])
    _check_keys(name, data, JOB_KEYS)
    if data.get("project-type", "freestyle") != "freestyle":
        raise _unsupported(f"{name}.project-type", str(data["project-type"]), {"freestyle"})
    for item in data.get("properties", []):
        kind, _ = _one_key(item, f"{name}.properties")
        if kind not in PROPERTY_KEYS:
            raise _unsupported(f"{name}.properties", kind, PROPERTY_KEYS)
    triggers, timed = _triggers(name, data.get("triggers", []))
    return Job(name=name, parameters=_parameters(name, data.get("parameters", [])),
               scm=_scm(name, data.get("scm", [])), triggers=triggers, timed=timed,
               builders=_builders(name, data.get("builders", [])),
               downstream=_publishers(name, data.get("publishers", [])),
               disabled=bool(data.get("disabled", False)))


def expand(jobs_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JJB's own loading (the same as `mlchain jenkins render`): YAML, defaults, templates and
    projects expanded as JJB expands them; keys JJB itself does not know are refused there."""
    from mlchain import jobdefs

    return jobdefs.load(jobs_dir).expand()


_loaded: dict[Path, tuple[tuple[tuple[str, int, int], ...], Chain]] = {}


def load_chain(jobs_dir: Path) -> Chain:
    """The chain jobs/ defines; kept while its files are unchanged (a long-lived process, the
    webhook service, expands them once)."""
    folder = jobs_dir.resolve()
    stamps = []
    for f in sorted(folder.rglob("*")):
        if f.suffix in (".yaml", ".yml"):
            stat = f.stat()  # once per file
            stamps.append((str(f), stat.st_mtime_ns, stat.st_size))
    stamp = tuple(stamps)
    cached = _loaded.get(folder)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    chain = _load_chain(folder)
    _loaded[folder] = (stamp, chain)
    return chain


def _load_chain(jobs_dir: Path) -> Chain:
    jobs, views = expand(jobs_dir)
    for view in views:
        _check_keys(f"view {view.get('name')}", view, VIEW_KEYS)
    parsed = {job.name: job for job in (parse_job(data) for data in jobs)}
    for job in parsed.values():
        for trigger in job.downstream:
            if trigger.project not in parsed:
                raise EngineError(f"{job.name} triggers {trigger.project!r}, which jobs/ does not define")
    return Chain(jobs=parsed, views=tuple(views))
