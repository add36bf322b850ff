"""The local engine's Jenkins semantics, on small job files written here (real shell steps)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from mlchain.engine.jjb import load_chain
from mlchain.engine.local import LocalEngine, expand_vars, parse_properties
from mlchain.errors import EngineError
from mlchain.state import StateStore

CHAIN = """
- defaults:
    name: global
    node: docker
- job:
    name: start
    parameters:
      - string: {name: COLOR, default: red}
      - string: {name: SHAPE, default: square}
    builders:
      - shell: |
          echo "env JOB_NAME=$JOB_NAME BUILD_NUMBER=$BUILD_NUMBER BUILD_ID=$BUILD_ID BUILD_TAG=$BUILD_TAG"
          echo "param COLOR=$COLOR SHAPE=$SHAPE"
          test "$WORKSPACE" = "$(pwd)"
          printf 'COLOR=blue\\nEXTRA=dropped\\n' > out.properties
    publishers:
      - trigger-parameterized-builds:
          - project: middle
            condition: SUCCESS
            property-file: out.properties
            current-parameters: true
          - project: on-failure
            condition: FAILED
- job:
    name: middle
    parameters:
      - string: {name: COLOR, default: none}
      - string: {name: SHAPE, default: none}
    builders:
      - shell:
          command: |
            echo "middle got COLOR=$COLOR SHAPE=$SHAPE EXTRA=${{EXTRA:-unset}}"
            exit 7
          unstable-return: 7
      - shell: echo "second step still runs after unstable"
    publishers:
      - trigger-parameterized-builds:
          - project: last
            condition: UNSTABLE
            predefined-parameters: |
              FROM=$JOB_NAME
              NUMBER=$BUILD_NUMBER
          - project: on-failure
            condition: SUCCESS
- job:
    name: last
    parameters:
      - string: {name: FROM, default: nobody}
      - string: {name: NUMBER, default: '0'}
    builders:
      - shell: |
          echo "last FROM=$FROM NUMBER=$NUMBER"
          exit 1
      - shell: echo "never printed"
    publishers:
      - trigger-parameterized-builds:
          - project: on-failure
            condition: FAILED
            current-parameters: true
          - project: always
            condition: ALWAYS
            property-file: missing.properties
            fail-on-missing: true
- job:
    name: on-failure
    parameters:
      - string: {name: FROM, default: ''}
    builders:
      - shell: echo "failure handler FROM=$FROM"
- job:
    name: always
    builders:
      - shell: echo always
- view:
    name: test
    view-type: pipeline
    first-job: start
"""


def write_jobs(tmp_path: Path, text: str) -> Path:
    jobs = tmp_path / "jobs"
    jobs.mkdir(exist_ok=True)
    (jobs / "chain.yaml").write_text(textwrap.dedent(text))
    return jobs


def run(tmp_path: Path, make_settings: Any, text: str = CHAIN, **params: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    settings = make_settings()
    settings.ensure_dirs()
    chain = load_chain(write_jobs(tmp_path, text))
    store = StateStore(settings.state_db)
    engine = LocalEngine(settings, chain, store)
    engine.enqueue("r1", chain.first_job, params)
    engine.drain("r1")
    builds = store.builds("r1")
    logs = {b.job: Path(b.log_path).read_text() for b in builds}
    return builds, logs


def test_conditions_property_files_and_unstable_return(tmp_path: Path, make_settings: Any) -> None:
    builds, logs = run(tmp_path, make_settings, COLOR="green")
    assert [(b.job, b.result) for b in builds] == [
        ("start", "SUCCESS"), ("middle", "UNSTABLE"), ("last", "FAILURE"), ("on-failure", "SUCCESS")]
    # Jenkins' build environment
    assert "env JOB_NAME=start BUILD_NUMBER=1 BUILD_ID=1 BUILD_TAG=jenkins-start-1" in logs["start"]
    assert "param COLOR=green SHAPE=square" in logs["start"]
    # property file overrides current parameters; parameters the target does not define are dropped
    assert "middle got COLOR=blue SHAPE=square EXTRA=unset" in logs["middle"]
    # unstable-return marks UNSTABLE and later steps still run
    assert "second step still runs after unstable" in logs["middle"]
    # predefined parameters expand the upstream build's variables
    assert "last FROM=middle NUMBER=1" in logs["last"]
    # a failing step stops the build
    assert "never printed" not in logs["last"]
    assert "failure handler FROM=middle" in logs["on-failure"]
    # fail-on-missing: a missing property file blocks the trigger, and the log says so
    assert "always" not in [b.job for b in builds]
    assert "missing.properties not found" in logs["last"]


def test_build_numbers_count_per_job(tmp_path: Path, make_settings: Any) -> None:
    text = """
    - job:
        name: loop
        parameters:
          - string: {name: N, default: '1'}
        builders:
          - shell:
              command: |
                echo "N=$((N + 1))" > next.properties
                test "$N" -ge 3 || exit 2
              unstable-return: 2
        publishers:
          - trigger-parameterized-builds:
              - project: loop
                condition: UNSTABLE
                property-file: next.properties
    - view: {name: v, view-type: pipeline, first-job: loop}
    """
    builds, _ = run(tmp_path, make_settings, text)
    assert [(b.number, b.params["N"], b.result) for b in builds] == [
        (1, "1", "UNSTABLE"), (2, "2", "UNSTABLE"), (3, "3", "SUCCESS")]


@pytest.mark.parametrize("snippet,key", [
    ("builders: [{maven-target: {goals: test}}]", "maven-target"),
    ("publishers: [{email: {recipients: a@b.c}}]", "email"),
    ("wrappers: [timestamps]", "wrappers"),
    ("triggers: [{pollscm: {cron: '* * * * *'}}]", "pollscm"),
    ("builders: [{shell: {command: echo, bogus: 1}}]", "bogus"),
])
def test_an_unsupported_key_is_an_error_listing_what_is_supported(tmp_path: Path, snippet: str, key: str) -> None:
    text = f"- job:\n    name: j\n    {snippet}\n- view: {{name: v, view-type: pipeline, first-job: j}}\n"
    with pytest.raises(EngineError) as err:
        load_chain(write_jobs(tmp_path, text))
    message = err.value.format_message()
    assert f"'{key}' is not supported" in message
    assert "supported:" in message


def test_the_real_jobs_load_with_templates_expanded() -> None:
    from mlchain.jobdefs import default_jobs_dir

    chain = load_chain(default_jobs_dir())
    assert chain.first_job == "job1-pull"
    assert set(chain.jobs) == {"job1-pull", "job2-classify", "job3-train", "job4-gate", "job5-notify",
                               "job6-monitor"}
    gate = chain.job("job4-gate")
    assert gate.builders[0].unstable_return == 75
    assert {(t.project, t.condition) for t in gate.downstream} == {
        ("job2-classify", "UNSTABLE"), ("job5-notify", "SUCCESS"), ("job5-notify", "FAILED")}
    assert chain.job("job6-monitor").timed


def test_properties_and_variables() -> None:
    assert parse_properties("# c\nA=1\nB : two words\n\nC=x=y\n") == {"A": "1", "B": "two words", "C": "x=y"}
    assert expand_vars("$A-${B}-$MISSING", {"A": "1", "B": "2"}) == "1-2-$MISSING"


RENAMED = """
- job:
    name: fetch-code
    builders:
      - shell: mlchain job pull
    publishers:
      - trigger-parameterized-builds:
          - project: pick-framework
- job:
    name: pick-framework
    builders:
      - shell: mlchain job classify
- job:
    name: watch-training
    builders:
      - shell: '  mlchain job monitor  '
- job:
    name: helper
    builders:
      - shell: echo not a role
- view:
    name: renamed
    view-type: pipeline
    first-job: fetch-code
"""


def test_roles_come_from_the_jobs_shell_steps(tmp_path: Path) -> None:
    chain = load_chain(write_jobs(tmp_path, RENAMED))
    assert chain.job_for("monitor") == "watch-training"
    assert chain.job_for("classify") == "pick-framework"
    assert chain.roles == {"fetch-code": "pull", "pick-framework": "classify", "watch-training": "monitor"}
    # chain order: first job, what it triggers, then the untriggered ones by name (a job
    # without a role is titled with its own name)
    assert chain.stages() == (("fetch-code", "pull"), ("pick-framework", "classify"), ("helper", "helper"),
                              ("watch-training", "monitor"))
    with pytest.raises(EngineError) as err:
        chain.job_for("gate")
    assert "no job whose shell step is `mlchain job gate`" in err.value.message


def test_the_real_jobs_stages_in_chain_order() -> None:
    from mlchain.jobdefs import default_jobs_dir

    chain = load_chain(default_jobs_dir())
    assert chain.stages() == (("job1-pull", "pull"), ("job2-classify", "classify"), ("job3-train", "train"),
                              ("job4-gate", "gate"), ("job5-notify", "notify"), ("job6-monitor", "monitor"))
