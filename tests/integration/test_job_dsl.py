"""The Job DSL seed declares what JJB renders: run it with Groovy against a recording FAKE of the DSL API.

The seed (``mlchain jenkins render --format job-dsl``) is executed by real
Groovy against ``tests/fakes/JobDslRecorder.groovy``, a stand-in that records
what the script declares (and rejects methods the Job DSL API does not have).
The record is compared with the config.xml JJB renders from the same jobs/:
jobs, parameters, triggers, SCM, shell steps with unstable return,
downstream triggers with conditions and property files, and the view.

Skipped when Groovy cannot run here; fails instead when CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from strictness import require

from mlchain.jenkins.dsl import seed_script
from mlchain.jenkins.render import Definitions, load

REPO = Path(__file__).resolve().parents[2]
RECORDER = REPO / "tests" / "fakes" / "JobDslRecorder.groovy"
PT = "hudson.plugins.parameterizedtrigger."
GWT = "org.jenkinsci.plugins.gwt."


def _java_home() -> str | None:
    """JAVA_HOME for groovy: the environment's if valid, else the JDK the `java` on PATH belongs to."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return home
    java = shutil.which("java")
    return str(Path(java).resolve().parents[1]) if java else None


def _groovy_env() -> dict[str, str] | None:
    if not shutil.which("groovy") or not _java_home():
        return None
    return {**os.environ, "JAVA_HOME": str(_java_home())}


@pytest.fixture(scope="module")
def groovy_env() -> dict[str, str]:
    env = _groovy_env()
    require(None if env is not None else "groovy (and a JDK) are needed: apt-get install groovy")
    assert env is not None
    return env


def _record(script: str, tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    seed = tmp / "seed.groovy"
    seed.write_text(script, encoding="utf-8")
    return subprocess.run(["groovy", str(RECORDER), str(seed)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return load(REPO / "jobs")


@pytest.fixture(scope="module")
def recorded(defs: Definitions, groovy_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = _record(seed_script(defs), tmp_path_factory.mktemp("seed"), groovy_env)
    assert run.returncode == 0, run.stderr
    return {item["name"]: item for item in json.loads(run.stdout)["items"]}


# --- reading the record -------------------------------------------------------------------

def _calls(body: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [c for c in body if c["method"] == method]


def _one(body: list[dict[str, Any]], *path: str) -> dict[str, Any] | None:
    for method in path:
        found = _calls(body, method)
        if not found:
            return None
        call = found[0]
        body = call["body"]
    return call


def _arg(body: list[dict[str, Any]], method: str, default: Any = None) -> Any:
    found = _calls(body, method)
    return found[0]["args"][0] if found and found[0]["args"] else default


def _dsl_job(item: dict[str, Any]) -> dict[str, Any]:
    body = item["body"]
    scm = _one(body, "scm", "git")
    remote = _one(scm["body"], "remote") if scm else None
    triggers = _one(body, "triggers")
    steps = _one(body, "steps")
    downstream = _one(body, "publishers", "downstreamParameterized")
    rotator = _one(body, "logRotator")
    return {
        "description": _arg(body, "description"),
        "label": _arg(body, "label"),
        "concurrent": _arg(body, "concurrentBuild"),
        "log_rotator": (_arg(rotator["body"], "daysToKeep"), _arg(rotator["body"], "numToKeep")) if rotator else None,
        "parameters": [tuple(c["args"]) for c in _calls((_one(body, "parameters") or {"body": []})["body"],
                                                        "stringParam")],
        "scm": None if scm is None or remote is None else {
            "url": _arg(remote["body"], "url"), "remote": _arg(remote["body"], "name"),
            "branches": [c["args"][0] for c in _calls(scm["body"], "branch")],
            "wipe": bool(_one(scm["body"], "extensions", "wipeOutWorkspace"))},
        "triggers": sorted(["github"] * len(_calls(triggers["body"], "githubPush"))
                           + [f"cron:{c['args'][0]}" for c in _calls(triggers["body"], "cron")]
                           + [_dsl_generic(c["body"]) for c in _calls(triggers["body"], "genericTrigger")],
                           key=str) if triggers else [],
        "steps": [(c["args"][0], None) if c["args"] else (_arg(c["body"], "command"), _arg(c["body"], "unstableReturn"))
                  for c in _calls(steps["body"], "shell")] if steps else [],
        "downstream": [_dsl_trigger(t) for t in _calls(downstream["body"], "trigger")] if downstream else [],
    }


def _dsl_generic(body: list[dict[str, Any]]) -> str:
    """The Generic Webhook Trigger's settings, as one comparable line."""
    variables = [(_arg(v["body"], "key"), _arg(v["body"], "value"), _arg(v["body"], "expressionType"))
                 for v in _calls((_one(body, "genericVariables") or {"body": []})["body"], "genericVariable")]
    headers = [_arg(h["body"], "key") for h in
               _calls((_one(body, "genericHeaderVariables") or {"body": []})["body"], "genericHeaderVariable")]
    return repr(("gwt", _arg(body, "token"), variables, headers, _arg(body, "regexpFilterText"),
                 _arg(body, "regexpFilterExpression"), _arg(body, "causeString")))


def _dsl_trigger(trigger: dict[str, Any]) -> tuple[Any, ...]:
    params = (_one(trigger["body"], "parameters") or {"body": []})["body"]
    prop = _calls(params, "propertiesFile")
    predefined = "\n".join(f"{c['args'][0]}={c['args'][1]}" for c in _calls(params, "predefinedProp"))
    return (trigger["args"][0], _arg(trigger["body"], "condition"),
            prop[0]["args"][0] if prop else None, prop[0]["args"][1] if prop else None,
            bool(_calls(params, "currentBuild")), predefined or None)


# --- reading JJB's XML ------------------------------------------------------------------------

def _xml_job(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml.encode("utf-8"))
    scm = root.find("scm")
    remote = scm.find("userRemoteConfigs/hudson.plugins.git.UserRemoteConfig") if scm is not None else None
    rotator = root.find("properties/jenkins.model.BuildDiscarderProperty/strategy")
    return {
        "description": root.findtext("description"),
        "label": root.findtext("assignedNode"),
        "concurrent": root.findtext("concurrentBuild") == "true",
        "log_rotator": (int(rotator.findtext("daysToKeep") or -1), int(rotator.findtext("numToKeep") or -1))
        if rotator is not None else None,
        "parameters": [(p.findtext("name"), p.findtext("defaultValue") or "", p.findtext("description") or "")
                       for p in root.iterfind(".//hudson.model.StringParameterDefinition")],
        "scm": None if remote is None or scm is None else {
            "url": remote.findtext("url"), "remote": remote.findtext("name"),
            "branches": [b.text for b in scm.iterfind("branches/hudson.plugins.git.BranchSpec/name")],
            "wipe": scm.find("extensions/hudson.plugins.git.extensions.impl.WipeWorkspace") is not None},
        "triggers": sorted(["github"] * len(root.findall("triggers/com.cloudbees.jenkins.GitHubPushTrigger"))
                           + [f"cron:{t.findtext('spec')}"
                              for t in root.iterfind("triggers/hudson.triggers.TimerTrigger")]
                           + [_xml_generic(t) for t in root.iterfind(f"triggers/{GWT}GenericTrigger")], key=str),
        "steps": [(s.findtext("command"), _int_or_none(s.findtext("unstableReturn")))
                  for s in root.iterfind("builders/hudson.tasks.Shell")],
        "downstream": [_xml_trigger(c) for c in
                       root.iterfind(f"publishers/{PT}BuildTrigger/configs/{PT}BuildTriggerConfig")],
    }


def _xml_generic(trigger: ET.Element) -> str:
    variables = [(v.findtext("key"), v.findtext("value"), v.findtext("expressionType"))
                 for v in trigger.iterfind(f"genericVariables/{GWT}GenericVariable")]
    headers = [h.findtext("key") for h in trigger.iterfind(f"genericHeaderVariables/{GWT}GenericHeaderVariable")]
    return repr(("gwt", trigger.findtext("token"), variables, headers, trigger.findtext("regexpFilterText"),
                 trigger.findtext("regexpFilterExpression"), trigger.findtext("causeString")))


def _int_or_none(text: str | None) -> int | None:
    return None if text is None else int(text)


def _xml_trigger(config: ET.Element) -> tuple[Any, ...]:
    file_params = config.find(f"configs/{PT}FileBuildParameters")
    return (config.findtext("projects"), config.findtext("condition"),
            file_params.findtext("propertiesFile") if file_params is not None else None,
            file_params.findtext("failTriggerOnMissing") == "true" if file_params is not None else None,
            config.find(f"configs/{PT}CurrentBuildParameters") is not None,
            config.findtext(f"configs/{PT}PredefinedBuildParameters/properties"))


# view: JJB element -> buildPipelineView method
VIEW_FIELDS = {
    "gridBuilder/firstJob": "selectedJob", "buildViewTitle": "title", "noOfDisplayedBuilds": "displayedBuilds",
    "showPipelineParameters": "showPipelineParameters",
    "showPipelineParametersInHeaders": "showPipelineParametersInHeaders",
    "refreshFrequency": "refreshFrequency", "showPipelineDefinitionHeader": "showPipelineDefinitionHeader",
    "description": "description",
}


# --- tests ------------------------------------------------------------------------------------------

def test_seed_declares_the_same_jobs_and_view_as_jjb(defs: Definitions, recorded: dict[str, Any]) -> None:
    assert sorted(recorded) == sorted(i.name for i in defs.items)
    assert [recorded[i.name]["type"] for i in defs.jobs] == ["job"] * 6
    assert recorded["mlchain"]["type"] == "buildPipelineView"


@pytest.mark.parametrize("name", ["job1-pull", "job2-classify", "job3-train", "job4-gate", "job5-notify",
                                  "job6-monitor"])
def test_each_job_declares_what_jjb_renders(defs: Definitions, recorded: dict[str, Any], name: str) -> None:
    xml = next(i.xml for i in defs.jobs if i.name == name)
    assert _dsl_job(recorded[name]) == _xml_job(xml)


def test_the_chain_specifics_survive_the_translation(recorded: dict[str, Any]) -> None:
    job1, job4, job6 = (_dsl_job(recorded[n]) for n in ("job1-pull", "job4-gate", "job6-monitor"))
    [push] = job1["triggers"]
    assert push.startswith("('gwt', 'mlchain-push', [('REPO_URL', '$.repository.clone_url', 'JSONPath'), ")
    assert job1["scm"] == {"url": "$REPO_URL", "remote": "origin", "branches": ["$REF"], "wipe": False}
    assert job4["steps"] == [("mlchain job gate", 75)]
    assert ("job2-classify", "UNSTABLE", "mlchain.properties", True, False, None) in job4["downstream"]
    assert job6["triggers"] == ["cron:H/3 * * * *"]


def test_view_declares_what_jjb_renders(defs: Definitions, recorded: dict[str, Any]) -> None:
    root = ET.fromstring(defs.views[0].xml.encode("utf-8"))
    body = recorded["mlchain"]["body"]
    for element, method in VIEW_FIELDS.items():
        value = _arg(body, method)
        assert str(value).lower() == (root.findtext(element) or "").lower(), f"{element} vs {method}()"
    assert _arg(body, "selectedJob") == "job1-pull"


def test_the_recorder_rejects_what_the_job_dsl_api_lacks(groovy_env: dict[str, str], tmp_path: Path) -> None:
    run = _record("job('x') {\n    steps {\n        shel('echo typo')\n    }\n}\n", tmp_path, groovy_env)
    assert run.returncode != 0
    assert "Job DSL has no shel()" in run.stderr
    run = _record("job('x') {\n    publishers {\n        downstreamParameterized {\n"
                  "            trigger('y') { condition('SOMETIMES') }\n        }\n    }\n}\n", tmp_path, groovy_env)
    assert run.returncode != 0 and "condition must be one of" in run.stderr
