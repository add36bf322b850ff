"""Deploy jobs/ to a controller (only what changed), show the chain's last builds, start a run.

"Changed" is decided against the controller itself, not a local cache: the
rendered XML is compared with the job's current config.xml after
normalisation (``render.normalise_xml``), so a job edited by hand in the UI
is put back, and two people deploying from two machines agree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlchain.config import Settings
from mlchain.engine.jjb import Chain, load_chain
from mlchain.errors import JenkinsError
from mlchain.jenkins.client import Controller, plugin_for_class
from mlchain.jenkins.render import Definitions, Item, is_managed, load, normalise_xml
from mlchain.jobdefs import default_jobs_dir

BUILDS_SHOWN = 3
# Build parameters worth a column in `status`, in this order.
STATUS_PARAMETERS = ("RUN_ID", "TRIAL", "REF", "FAILED_JOB")


@dataclass(frozen=True)
class Change:
    action: str  # create | update | unchanged | delete | spare
    kind: str  # job | view
    name: str
    xml: str = ""


# action -> (verb when done, verb in a dry run, why) for the printed line.
_WORDING: dict[str, tuple[str, str, str]] = {
    "create": ("created", "would create", ""),
    "update": ("updated", "would update", " (its config.xml differs from jobs/)"),
    "unchanged": ("unchanged", "unchanged", ""),
    "delete": ("deleted", "would delete", " (managed by JJB, no longer in jobs/)"),
    "spare": ("kept", "would keep", " (not in jobs/, but not managed by JJB: made by hand)"),
}


def describe(change: Change, dry_run: bool) -> str:
    done, planned, why = _WORDING[change.action]
    return f"{planned if dry_run else done:<12} {change.kind} {change.name}{why}"


# --- planning --------------------------------------------------------------------------

def _plan_item(item: Item, existing: set[str], current_xml: Callable[[str], str]) -> Change:
    if item.name not in existing:
        return Change("create", item.kind, item.name, item.xml)
    try:
        same = normalise_xml(current_xml(item.name)) == normalise_xml(item.xml)
    except ET.ParseError:
        same = False  # a config we cannot read is replaced by one we can
    return Change("unchanged" if same else "update", item.kind, item.name, item.xml)


def _plan_stale(kind: str, names: Iterable[str], config: Callable[[str], str]) -> list[Change]:
    return [Change("delete" if is_managed(config(name)) else "spare", kind, name) for name in sorted(names)]


def plan(controller: Controller, defs: Definitions, delete_old: bool) -> list[Change]:
    """What deploying jobs/ would change, jobs first (the view refers to job1)."""
    jobs, views = controller.job_names(), controller.view_names()
    changes = [_plan_item(i, jobs, controller.job_config) for i in defs.jobs]
    changes += [_plan_item(i, views, controller.view_config) for i in defs.views]
    if delete_old:
        changes += _plan_stale("job", jobs - {i.name for i in defs.jobs}, controller.job_config)
        # "All" and other views without the marker are spared by the same rule.
        changes += _plan_stale("view", views - {i.name for i in defs.views} - {"all", "All"},
                               controller.view_config)
    return changes


def _apply(controller: Controller, change: Change) -> None:
    # (action, kind) -> the request that makes it; "unchanged" and "spare" make none.
    actions: dict[tuple[str, str], Callable[[], None]] = {
        ("create", "job"): lambda: controller.create_job(change.name, change.xml),
        ("update", "job"): lambda: controller.update_job(change.name, change.xml),
        ("delete", "job"): lambda: controller.delete_job(change.name),
        ("create", "view"): lambda: controller.create_view(change.name, change.xml),
        ("update", "view"): lambda: controller.update_view(change.name, change.xml),
        ("delete", "view"): lambda: controller.delete_view(change.name),
    }
    action = actions.get((change.action, change.kind))
    if action is not None:
        action()


# --- plugins -----------------------------------------------------------------------------

def required_plugins(defs: Definitions) -> dict[str, set[str]]:
    """Plugin short name -> the classes of jobs/ that need it."""
    needed: dict[str, set[str]] = {}
    for item in defs.items:
        for element in ET.fromstring(item.xml.encode("utf-8")).iter():
            for name in (element.tag, element.get("class", "")):
                plugin = plugin_for_class(name)
                if plugin:
                    needed.setdefault(plugin, set()).add(name)
    return needed


def _check_plugins(controller: Controller, defs: Definitions) -> Iterator[str]:
    # Jenkins accepts a job whose XML names a class no plugin provides and
    # silently drops that part, so check before deploying, when allowed to.
    installed = controller.plugins()
    if installed is None:
        yield "note: this user may not list plugins; a missing plugin will show as an error"
        return
    missing = {p: classes for p, classes in required_plugins(defs).items() if not installed.get(p)}
    if missing:
        detail = "; ".join(f"{p} (for {', '.join(sorted(c)[:2])})" for p, c in sorted(missing.items()))
        raise JenkinsError(f"the controller lacks plugins the chain needs: {detail}",
                           hint="install them (jenkins/plugins.txt lists all of them) and restart Jenkins")


# --- commands ----------------------------------------------------------------------------

def _summary(changes: list[Change], dry_run: bool) -> str:
    counts = {a: sum(1 for c in changes if c.action == a) for a in _WORDING}
    if not any(counts[a] for a in ("create", "update", "delete")):
        return f"nothing to change: {counts['unchanged']} item(s) already match jobs/"
    done = ", ".join(f"{counts[a]} {_WORDING[a][1 if dry_run else 0]}" for a in _WORDING if counts[a])
    return f"dry run, nothing was changed: {done}" if dry_run else done


def deploy(settings: Settings, dry_run: bool = False, delete_old: bool = False,
           jobs_dir: Path | None = None) -> Iterator[str]:
    """Create or update the jobs and the view on the controller; only what changed."""
    defs = load(jobs_dir)
    controller = Controller(settings)
    user = controller.whoami()
    yield f"controller {controller.url} as {user}; jobs from {defs.jobs_dir}"
    yield from _check_plugins(controller, defs)
    changes = plan(controller, defs, delete_old)
    for change in changes:
        if not dry_run:
            _apply(controller, change)
        yield describe(change, dry_run)
    yield _summary(changes, dry_run)


def _chain(jobs_dir: Path | None = None) -> Chain:
    """The chain jobs/ defines: its job names, in order, and the one a push starts."""
    return load_chain(jobs_dir or default_jobs_dir())


def _parameters(build: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for action in build.get("actions") or []:
        for p in (action or {}).get("parameters") or []:
            values[str(p.get("name"))] = str(p.get("value"))
    return values


def _build_line(name: str, build: dict[str, Any]) -> str:
    result = build.get("result") or ("RUNNING" if build.get("building") else "QUEUED")
    when = datetime.fromtimestamp(build.get("timestamp", 0) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    params = _parameters(build)
    shown = " ".join(f"{k}={params[k]}" for k in STATUS_PARAMETERS if params.get(k))
    return f"{name:<14} #{build.get('number'):<5} {result:<9} {when}Z  {shown}".rstrip()


def status(settings: Settings) -> Iterator[str]:
    """The last builds of the chain's jobs: number, result, start time, RUN_ID/TRIAL when present."""
    controller = Controller(settings)
    yield f"controller {controller.url}"
    for name, _ in _chain().stages():
        info = controller.job_info(name)
        if info is None:
            yield f"{name:<14} not on the controller (run `mlchain jenkins deploy`)"
            continue
        numbers = [int(b["number"]) for b in (info.get("builds") or [])][:BUILDS_SHOWN]
        if not numbers:
            yield f"{name:<14} no builds yet"
        for number in numbers:
            yield _build_line(name, controller.build_info(name, number))


def redact_url(url: str) -> str:
    """A URL without its user/password part, for printing."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def trigger(settings: Settings, repo_url: str, ref: str, extra: Mapping[str, str] | None = None) -> str:
    """Start the chain's first job (the pull) for REPO_URL at REF; report the queue item.
    ``extra``: more of its parameters (a retraining's REASON and DATASET)."""
    controller = Controller(settings)
    first_job = _chain().first_job
    number = controller.build(first_job, {**dict(extra or {}), "REPO_URL": repo_url, "REF": ref},
                              not_found=f"{first_job} is not on the controller: run `mlchain jenkins deploy` first")
    item = controller.queue_item(number)
    executable = item.get("executable") or {}
    state = (f"running as build #{executable['number']}" if executable.get("number")
             else f"waiting: {item['why']}" if item.get("why") else "queued")
    return (f"queued {first_job} for {redact_url(repo_url)} at {ref}: queue item {number} "
            f"({controller.url}queue/item/{number}/), {state}")
