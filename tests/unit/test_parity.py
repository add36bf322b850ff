"""Parity of the two engines: the environment the local engine gives a build is the one Jenkins
gives (names and meaning of the variables the jobs use), and every key used in jobs/ is supported
by both (the local engine loads it; JJB renders it for Jenkins with plugins the controller has)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from helpers import ROOT, git

from mlchain.engine.jjb import load_chain
from mlchain.engine.local import LocalEngine
from mlchain.jenkins.deploy import required_plugins
from mlchain.jenkins.render import load
from mlchain.jobdefs import default_jobs_dir
from mlchain.state import StateStore

# The variables Jenkins sets in every build (and the git plugin for SCM jobs), with their meaning,
# as Jenkins documents them at JENKINS_URL/env-vars.html. The local engine must give the same.
JENKINS_BUILD_VARIABLES = {
    "WORKSPACE": "absolute path of the build's workspace, the shell step's working directory",
    "BUILD_NUMBER": "the build's number, counted per job from 1",
    "BUILD_ID": "the build's id, equal to BUILD_NUMBER since Jenkins 1.597",
    "JOB_NAME": "the job's name",
    "JOB_BASE_NAME": "the job's name without folders",
    "BUILD_TAG": "jenkins-${JOB_NAME}-${BUILD_NUMBER}",
    "BUILD_URL": "URL of the build",
    "JOB_URL": "URL of the job",
    "NODE_NAME": "the agent running the build",
    "NODE_LABELS": "the agent's labels",
    "EXECUTOR_NUMBER": "the executor's number on the agent",
    "JENKINS_URL": "the controller's URL",
}
GIT_PLUGIN_VARIABLES = {
    "GIT_COMMIT": "the commit checked out",
    "GIT_URL": "the remote URL",
    "GIT_BRANCH": "the remote branch, origin/<name>",
}

PROBE = """
- job:
    name: probe
    parameters:
      - string: {name: REPO_URL, default: ''}
      - string: {name: REF, default: main}
    scm:
      - git: {url: $REPO_URL, branches: [$REF]}
    builders:
      - shell: env | sort > env.txt; pwd > pwd.txt; git rev-parse HEAD > head.txt
- view: {name: v, view-type: pipeline, first-job: probe}
"""


def test_the_local_build_environment_means_what_jenkins_means(tmp_path: Path, make_settings: Any,
                                                               git_repo: Any) -> None:
    repo = git_repo("trained", files={"train.py": "print('hi')\n"})
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "probe.yaml").write_text(PROBE)
    settings = make_settings()
    settings.ensure_dirs()
    store = StateStore(settings.state_db)
    engine = LocalEngine(settings, load_chain(jobs), store)
    for _ in range(2):
        engine.enqueue("r", "probe", {"REPO_URL": repo.as_uri()})
    engine.drain("r")
    assert [b.result for b in store.builds("r")] == ["SUCCESS", "SUCCESS"]
    workspace = settings.runs_dir / "r" / "workspace" / "probe"
    env = dict(line.split("=", 1) for line in (workspace / "env.txt").read_text().splitlines() if "=" in line)

    missing = sorted((set(JENKINS_BUILD_VARIABLES) | set(GIT_PLUGIN_VARIABLES)) - set(env))
    assert not missing, f"the local engine does not set {missing}"
    assert env["WORKSPACE"] == str(workspace) == (workspace / "pwd.txt").read_text().strip()
    assert env["BUILD_NUMBER"] == env["BUILD_ID"] == "2"  # the second build of the job
    assert env["JOB_NAME"] == env["JOB_BASE_NAME"] == "probe"
    assert env["BUILD_TAG"] == f"jenkins-{env['JOB_NAME']}-{env['BUILD_NUMBER']}"
    assert env["GIT_COMMIT"] == git(repo, "rev-parse", "HEAD") == (workspace / "head.txt").read_text().strip()
    assert env["GIT_URL"] == repo.as_uri()
    assert env["GIT_BRANCH"] == "origin/main"
    assert env["REF"] == "main" and env["REPO_URL"] == repo.as_uri()  # parameters are variables too


def variables_the_jobs_use() -> set[str]:
    """$VARS in jobs/ and the build variables the job code reads (BuildEnv.get / .env[...])."""
    used = set()
    for path in default_jobs_dir().glob("*.yaml"):
        used |= set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", path.read_text()))
    code = (ROOT / "src" / "mlchain" / "engine" / "jobs.py").read_text()
    used |= set(re.findall(r"\.get\(\"([A-Z_][A-Z0-9_]*)\"", code))
    return used


def test_every_variable_the_jobs_use_is_given_by_jenkins_or_a_parameter() -> None:
    chain = load_chain(default_jobs_dir())
    parameters = {p.name for job in chain.jobs.values() for p in job.parameters}
    used = variables_the_jobs_use()
    assert {"WORKSPACE", "JOB_NAME", "BUILD_TAG", "GIT_COMMIT", "GIT_URL", "RUN_ID", "TRIAL"} <= used
    unexplained = used - set(JENKINS_BUILD_VARIABLES) - set(GIT_PLUGIN_VARIABLES) - parameters
    assert not unexplained, f"jobs/ use variables neither Jenkins nor a parameter sets: {unexplained}"


def test_every_key_in_jobs_is_supported_by_both_engines() -> None:
    # The local engine: loading checks every key against its table (an unknown key raises).
    chain = load_chain(default_jobs_dir())
    assert len(chain.jobs) == 6
    # Jenkins: JJB renders every key (refusing keys it would drop) into classes whose plugins
    # the controller image installs.
    definitions = load(default_jobs_dir())
    assert {j.name for j in definitions.jobs} == set(chain.jobs)
    plugins_txt = (ROOT / "jenkins" / "plugins.txt").read_text()
    installed = {line.split(":")[0].strip() for line in plugins_txt.splitlines()
                 if line.strip() and not line.startswith("#")}
    needed = required_plugins(definitions)
    assert {"git", "generic-webhook-trigger", "parameterized-trigger", "build-pipeline-plugin"} <= set(needed)
    assert set(needed) <= installed, f"plugins the jobs need but the controller lacks: {set(needed) - installed}"
