"""A Job DSL seed script generated from the same expanded jobs JJB renders.

For controllers managed with configuration-as-code and the Job DSL plugin:
the seed declares the six jobs and the view from JJB's expanded dicts, so
jobs/ stays the one source of truth. Python maps each JJB component to Job
DSL calls (tables below); the jinja2 template lays the script out.

A key or component without a translation is an error that lists what is
supported: a seed that silently drops part of a job would run a different chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from mlchain.errors import ConfigError
from mlchain.jenkins.render import Definitions

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Call:
    """One Job DSL method call, with an optional closure of nested calls."""

    method: str
    args: tuple[Any, ...] = ()
    body: tuple[Call, ...] = field(default_factory=tuple)


Translator = Callable[[Any], list[Call]]


# --- Groovy literals -----------------------------------------------------------------

_GROOVY_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def groovy_literal(value: Any) -> str:
    """A Groovy literal; strings are single-quoted so `$REF` stays literal for Jenkins."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(groovy_literal(v) for v in value) + "]"
    return "'" + "".join(_GROOVY_ESCAPES.get(ch, ch) for ch in str(value)) + "'"


# --- helpers -------------------------------------------------------------------------

def _component(item: Any) -> tuple[str, Any]:
    """JJB components are either a bare name or a one-key dict of name to settings."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and len(item) == 1:
        name, value = next(iter(item.items()))
        return str(name), value
    raise ConfigError(f"cannot read JJB component {item!r}", hint="write it as `- name` or `- name: {...}`")


def _dispatch(section: str, items: Iterable[Any], table: Mapping[str, Translator]) -> list[Call]:
    calls: list[Call] = []
    for item in items:
        name, value = _component(item)
        if name not in table:
            raise ConfigError(f"the Job DSL seed cannot translate {section} {name!r}",
                              hint=f"supported {section}: {', '.join(sorted(table))}; "
                                   "add a translation in mlchain/jenkins/dsl.py")
        calls.extend(table[name](value))
    return calls


def _mapped(settings: Mapping[str, Any], mapping: Mapping[str, str], where: str) -> list[Call]:
    """Settings whose Job DSL method has the same single argument."""
    unknown = sorted(set(settings) - set(mapping))
    if unknown:
        raise ConfigError(f"the Job DSL seed cannot translate {where} settings {', '.join(unknown)}",
                          hint=f"supported: {', '.join(sorted(mapping))}")
    return [Call(method, (settings[key],)) for key, method in mapping.items() if key in settings]


# --- properties, parameters, scm, triggers, builders, publishers ---------------------------

_LOG_ROTATOR = {"days-to-keep": "daysToKeep", "num-to-keep": "numToKeep",
                "artifact-days-to-keep": "artifactDaysToKeep", "artifact-num-to-keep": "artifactNumToKeep"}


def _build_discarder(settings: Mapping[str, Any]) -> list[Call]:
    return [Call("logRotator", body=tuple(_mapped(settings, _LOG_ROTATOR, "build-discarder")))]


def _string_param(p: Mapping[str, Any]) -> list[Call]:
    return [Call("stringParam", (p["name"], p.get("default", ""), p.get("description", "")))]


def _bool_param(p: Mapping[str, Any]) -> list[Call]:
    return [Call("booleanParam", (p["name"], bool(p.get("default", False)), p.get("description", "")))]


_GIT_KEYS = {"url", "branches", "wipe-workspace", "name", "refspec", "credentials-id"}


def _git(g: Mapping[str, Any]) -> list[Call]:
    unknown = sorted(set(g) - _GIT_KEYS)
    if unknown:
        raise ConfigError(f"the Job DSL seed cannot translate git settings {', '.join(unknown)}",
                          hint=f"supported: {', '.join(sorted(_GIT_KEYS))}")
    remote = [Call("name", (g.get("name", "origin"),)), Call("url", (g["url"],))]
    remote += [Call("refspec", (g["refspec"],))] if "refspec" in g else []
    remote += [Call("credentials", (g["credentials-id"],))] if "credentials-id" in g else []
    body = [Call("remote", body=tuple(remote))]
    body += [Call("branch", (b,)) for b in g.get("branches", ["**"])]
    # JJB wipes the workspace unless told not to; say the same to Job DSL.
    if g.get("wipe-workspace", True):
        body.append(Call("extensions", body=(Call("wipeOutWorkspace"),)))
    return [Call("git", body=tuple(body))]


def _shell(step: Any) -> list[Call]:
    if isinstance(step, str):
        return [Call("shell", (step,))]
    unknown = sorted(set(step) - {"command", "unstable-return"})
    if unknown:
        raise ConfigError(f"the Job DSL seed cannot translate shell settings {', '.join(unknown)}",
                          hint="supported: command, unstable-return")
    body = [Call("command", (step["command"],))]
    if "unstable-return" in step:
        body.append(Call("unstableReturn", (int(step["unstable-return"]),)))
    return [Call("shell", body=tuple(body))]


_TRIGGER_KEYS = {"project", "condition", "property-file", "fail-on-missing", "current-parameters",
                 "predefined-parameters", "trigger-with-no-params"}


def _predefined(text: str) -> list[Call]:
    pairs = (line.split("=", 1) for line in str(text).splitlines() if line.strip())
    return [Call("predefinedProp", (key.strip(), value)) for key, value in pairs]


def _downstream(t: Mapping[str, Any]) -> Call:
    unknown = sorted(set(t) - _TRIGGER_KEYS)
    if unknown:
        raise ConfigError(f"the Job DSL seed cannot translate trigger-parameterized-builds settings "
                          f"{', '.join(unknown)}", hint=f"supported: {', '.join(sorted(_TRIGGER_KEYS))}")
    params: list[Call] = []
    if t.get("current-parameters"):
        params.append(Call("currentBuild"))
    if "property-file" in t:
        params.append(Call("propertiesFile", (t["property-file"], bool(t.get("fail-on-missing", False)))))
    if "predefined-parameters" in t:
        params.extend(_predefined(t["predefined-parameters"]))
    # JJB's default condition is ALWAYS; Job DSL's is SUCCESS: always say it.
    body = [Call("condition", (t.get("condition", "ALWAYS"),))]
    if t.get("trigger-with-no-params"):
        body.append(Call("triggerWithNoParameters", (True,)))
    if params:
        body.append(Call("parameters", body=tuple(params)))
    projects = t["project"] if isinstance(t["project"], str) else ", ".join(t["project"])
    return Call("trigger", (projects,), tuple(body))


def _parameterized_builds(triggers: list[Mapping[str, Any]]) -> list[Call]:
    return [Call("downstreamParameterized", body=tuple(_downstream(t) for t in triggers))]


# generic-webhook-trigger: JJB key -> the Generic Webhook Trigger plugin's Job DSL method.
_GWT_SETTINGS = {"token": "token", "token-credential-id": "tokenCredentialId", "cause": "causeString",
                 "regex-filter-text": "regexpFilterText", "regex-filter-expression": "regexpFilterExpression",
                 "print-post-content": "printPostContent", "print-contrib-var": "printContributedVariables",
                 "silent-response": "silentResponse"}
_GWT_POST_KEYS = {"type": "expressionType", "key": "key", "value": "value", "regex-filter": "regexpFilter",
                  "default-value": "defaultValue"}
_GWT_HEADER_KEYS = {"key": "key", "regex-filter": "regexpFilter"}


def _generic_webhook(spec: Mapping[str, Any]) -> list[Call]:
    lists = {"post-content-params", "header-params"}
    body = [*(_mapped({k: v for k, v in spec.items() if k not in lists}, _GWT_SETTINGS,
                      "generic-webhook-trigger"))]
    if spec.get("post-content-params"):
        body.append(Call("genericVariables", body=tuple(
            Call("genericVariable", body=tuple(_mapped(v, _GWT_POST_KEYS, "post-content-params")))
            for v in spec["post-content-params"])))
    if spec.get("header-params"):
        body.append(Call("genericHeaderVariables", body=tuple(
            Call("genericHeaderVariable", body=tuple(_mapped(h, _GWT_HEADER_KEYS, "header-params")))
            for h in spec["header-params"])))
    return [Call("genericTrigger", body=tuple(body))]


PROPERTIES: dict[str, Translator] = {"build-discarder": _build_discarder}
PARAMETERS: dict[str, Translator] = {"string": _string_param, "bool": _bool_param}
SCM: dict[str, Translator] = {"git": _git}
TRIGGERS: dict[str, Translator] = {
    "github": lambda _: [Call("githubPush")],
    "generic-webhook-trigger": _generic_webhook,
    "timed": lambda spec: [Call("cron", (spec,))],
    "pollscm": lambda s: [Call("scm", (s["cron"] if isinstance(s, Mapping) else s,))],
}
BUILDERS: dict[str, Translator] = {"shell": _shell}
PUBLISHERS: dict[str, Translator] = {"trigger-parameterized-builds": _parameterized_builds}


def _section(method: str, name: str, table: Mapping[str, Translator]) -> Translator:
    return lambda items: [Call(method, body=tuple(_dispatch(name, items, table)))]


# Job keys in the order the seed writes them. Properties become top-level
# calls (logRotator) in Job DSL, so their section has no wrapper.
JOB_KEYS: dict[str, Translator] = {
    "description": lambda text: [Call("description", (text,))],
    "node": lambda label: [Call("label", (label,))],
    "concurrent": lambda flag: [Call("concurrentBuild", (bool(flag),))],
    "disabled": lambda flag: [Call("disabled", (bool(flag),))],
    "properties": lambda items: _dispatch("properties", items, PROPERTIES),
    "parameters": _section("parameters", "parameters", PARAMETERS),
    "scm": lambda items: [Call("scm", body=tuple(_dispatch("scm", items, SCM)))],
    "triggers": _section("triggers", "triggers", TRIGGERS),
    "builders": _section("steps", "builders", BUILDERS),
    "publishers": _section("publishers", "publishers", PUBLISHERS),
}
_JOB_IGNORED = {"name"}


def job_calls(data: Mapping[str, Any]) -> list[Call]:
    """The body of `job(name) { ... }` for one expanded JJB job."""
    project_type = data.get("project-type", "freestyle")
    if project_type != "freestyle":
        raise ConfigError(f"job {data['name']!r}: the Job DSL seed supports freestyle jobs, not {project_type!r}")
    unknown = sorted(set(data) - set(JOB_KEYS) - _JOB_IGNORED - {"project-type"})
    if unknown:
        raise ConfigError(f"job {data['name']!r}: the Job DSL seed cannot translate {', '.join(unknown)}",
                          hint=f"supported job keys: {', '.join(JOB_KEYS)}")
    return [call for key, translate in JOB_KEYS.items() if key in data for call in translate(data[key])]


# --- views ------------------------------------------------------------------------------

# JJB's pipeline view key -> buildPipelineView method.
_PIPELINE_VIEW = {
    "description": "description",
    "filter-executors": "filterExecutors",
    "filter-queue": "filterBuildQueue",
    "first-job": "selectedJob",
    "title": "title",
    "no-of-displayed-builds": "displayedBuilds",
    "latest-job-only": "triggerOnlyLatestJob",
    "manual-trigger": "alwaysAllowManualTrigger",
    "show-parameters": "showPipelineParameters",
    "parameters-in-headers": "showPipelineParametersInHeaders",
    "start-with-parameters": "startsWithParameters",
    "refresh-frequency": "refreshFrequency",
    "definition-header": "showPipelineDefinitionHeader",
    "css-Url": "customCssUrl",
}
_INT_VIEW_SETTINGS = {"no-of-displayed-builds", "refresh-frequency"}

# view-type -> (Job DSL factory method, key -> method)
VIEW_TYPES: dict[str, tuple[str, dict[str, str]]] = {"pipeline": ("buildPipelineView", _PIPELINE_VIEW)}


def _view_keys_to_ignore() -> set[str]:
    # JJB merges the global defaults (node, properties, ...) into views too;
    # its view modules ignore job-only keys, and so does the seed.
    from jenkins_jobs.defaults import job_contents_keys, view_contents_keys

    return (set(job_contents_keys) - set(view_contents_keys)) | {"name", "view-type"}


def view_model(data: Mapping[str, Any]) -> dict[str, Any]:
    view_type = data.get("view-type", "list")
    if view_type not in VIEW_TYPES:
        raise ConfigError(f"view {data['name']!r}: the Job DSL seed cannot translate view-type {view_type!r}",
                          hint=f"supported view types: {', '.join(VIEW_TYPES)}")
    factory, mapping = VIEW_TYPES[view_type]
    settings = {k: v for k, v in data.items() if k not in _view_keys_to_ignore()}
    settings = {k: int(v) if k in _INT_VIEW_SETTINGS else v for k, v in settings.items()}
    return {"factory": factory, "name": data["name"], "body": _mapped(settings, mapping, f"view {data['name']!r}")}


# --- the script --------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["groovy"] = groovy_literal
    return env


def seed_script(defs: Definitions) -> str:
    """The Job DSL seed declaring every job and view of jobs/."""
    jobs = [{"name": item.name, "body": job_calls(item.data)} for item in defs.jobs]
    views = [view_model(item.data) for item in defs.views]
    return _environment().get_template("seed.groovy.j2").render(jobs=jobs, views=views)
