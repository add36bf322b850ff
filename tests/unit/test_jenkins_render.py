"""Golden tests of `mlchain jenkins render`: jobs/ (YAML) in, config.xml out, through JJB.

The full files are compared after normalisation; targeted XPath checks pin
the elements the chain depends on, so a failure says which one changed.
Regenerate the goldens after an intended change with:

    MLCHAIN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_jenkins_render.py
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlchain.cli import cli
from mlchain.errors import ConfigError
from mlchain.jenkins import dsl
from mlchain.jenkins.render import (
    MANAGED_MARKER,
    Definitions,
    is_managed,
    load,
    normalise_xml,
)
from mlchain.jobdefs import default_jobs_dir

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
GOLDEN = REPO / "tests" / "golden" / "jenkins"
UPDATE = os.environ.get("MLCHAIN_UPDATE_GOLDEN") == "1"

CHAIN = ["job1-pull", "job2-classify", "job3-train", "job4-gate", "job5-notify", "job6-monitor"]
PT = "hudson.plugins.parameterizedtrigger."

# job -> its downstream triggers: (project, condition, properties file, current parameters, predefined)
DOWNSTREAM = {
    "job1-pull": [("job2-classify", "SUCCESS", "mlchain.properties", False, None),
                  ("job5-notify", "FAILED", None, True, "FAILED_JOB=$JOB_NAME\nFAILED_BUILD_TAG=$BUILD_TAG")],
    "job2-classify": [("job3-train", "SUCCESS", "mlchain.properties", False, None),
                      ("job5-notify", "FAILED", None, True, "FAILED_JOB=$JOB_NAME")],
    "job3-train": [("job4-gate", "SUCCESS", "mlchain.properties", False, None),
                   ("job5-notify", "FAILED", None, True, "FAILED_JOB=$JOB_NAME")],
    "job4-gate": [("job2-classify", "UNSTABLE", "mlchain.properties", False, None),
                  ("job5-notify", "SUCCESS", "mlchain.properties", False, None),
                  ("job5-notify", "FAILED", None, True, "FAILED_JOB=$JOB_NAME")],
    "job5-notify": [],
    "job6-monitor": [],
}


@pytest.fixture(scope="module")
def defs() -> Definitions:
    return load(JOBS)


def _xml(defs: Definitions, name: str) -> ET.Element:
    item = next(i for i in defs.items if i.name == name)
    return ET.fromstring(item.xml.encode("utf-8"))


def _downstream(root: ET.Element) -> list[tuple[str | None, str | None, str | None, bool, str | None]]:
    found = []
    for config in root.iterfind(f"publishers/{PT}BuildTrigger/configs/{PT}BuildTriggerConfig"):
        params = config.find("configs")
        assert params is not None
        found.append((
            config.findtext("projects"),
            config.findtext("condition"),
            params.findtext(f"{PT}FileBuildParameters/propertiesFile"),
            params.find(f"{PT}CurrentBuildParameters") is not None,
            params.findtext(f"{PT}PredefinedBuildParameters/properties"),
        ))
        file_params = params.find(f"{PT}FileBuildParameters")
        if file_params is not None:
            # A missing properties file must stop the chain, not start the next job without its values.
            assert file_params.findtext("failTriggerOnMissing") == "true"
    return found


# --- full files ------------------------------------------------------------------------

def test_jobs_dir_defines_the_chain_and_its_view(defs: Definitions) -> None:
    assert [i.name for i in defs.jobs] == CHAIN
    assert [i.name for i in defs.views] == ["mlchain"]


@pytest.mark.parametrize("name", [*CHAIN, "mlchain"])
def test_rendered_xml_matches_golden(defs: Definitions, name: str) -> None:
    item = next(i for i in defs.items if i.name == name)
    golden = GOLDEN / f"{name}.xml"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(item.xml, encoding="utf-8")
    assert golden.is_file(), f"no golden for {name}; run with MLCHAIN_UPDATE_GOLDEN=1 to create it"
    assert normalise_xml(item.xml) == normalise_xml(golden.read_text(encoding="utf-8")), (
        f"{name} renders differently from {golden}; if jobs/ changed on purpose, "
        "regenerate with MLCHAIN_UPDATE_GOLDEN=1")


def test_no_stale_goldens(defs: Definitions) -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.xml")) == sorted(i.name for i in defs.items)


# --- the elements the chain depends on -------------------------------------------------------

def test_job1_is_started_by_a_push_of_any_repository_and_checks_out_the_pushed_ref(defs: Definitions) -> None:
    root = _xml(defs, "job1-pull")
    # Not the GitHub plugin's trigger: it starts only jobs whose SCM URL matches the push,
    # and job1's is $REPO_URL. The payload mapping itself: tests/unit/test_push_trigger.py.
    assert root.find("triggers/com.cloudbees.jenkins.GitHubPushTrigger") is None
    assert [t.tag for t in root.iterfind("triggers/*")] == ["org.jenkinsci.plugins.gwt.GenericTrigger"]
    scm = root.find("scm")
    assert scm is not None and scm.get("class") == "hudson.plugins.git.GitSCM"
    assert scm.findtext("userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url") == "$REPO_URL"
    assert [b.text for b in scm.iterfind("branches/hudson.plugins.git.BranchSpec/name")] == ["$REF"]
    params = [p.findtext("name") for p in root.iterfind(".//hudson.model.StringParameterDefinition")]
    assert params == ["REPO_URL", "REF", "PUSHER_EMAIL", "RUN_ID", "REASON", "DATASET"]


@pytest.mark.parametrize("name", CHAIN)
def test_downstream_triggers_carry_conditions_and_property_files(defs: Definitions, name: str) -> None:
    assert _downstream(_xml(defs, name)) == DOWNSTREAM[name]


def test_job4_ends_unstable_on_exit_75_which_loops_back_to_job2(defs: Definitions) -> None:
    from mlchain.engine.jobs import EXIT_UNSTABLE

    root = _xml(defs, "job4-gate")
    shell = root.find("builders/hudson.tasks.Shell")
    assert shell is not None
    assert shell.findtext("command") == "mlchain job gate"
    assert shell.findtext("unstableReturn") == "75" == str(EXIT_UNSTABLE)


def test_job6_runs_on_a_timer_one_at_a_time(defs: Definitions) -> None:
    root = _xml(defs, "job6-monitor")
    assert root.findtext("triggers/hudson.triggers.TimerTrigger/spec") == "H/3 * * * *"
    assert root.findtext("concurrentBuild") == "false"


@pytest.mark.parametrize("name", CHAIN)
def test_every_job_runs_a_thin_cli_step_on_a_docker_agent(defs: Definitions, name: str) -> None:
    root = _xml(defs, name)
    assert root.findtext("assignedNode") == "docker"
    commands = [c.text for c in root.iterfind("builders/hudson.tasks.Shell/command")]
    assert commands == [f"mlchain job {name.split('-', 1)[1]}"]


def test_view_is_a_build_pipeline_starting_at_job1(defs: Definitions) -> None:
    root = _xml(defs, "mlchain")
    assert root.tag == "au.com.centrumsystems.hudson.plugin.buildpipeline.BuildPipelineView"
    assert root.findtext("gridBuilder/firstJob") == "job1-pull"
    assert root.findtext("showPipelineParameters") == "true"
    assert root.findtext("showPipelineParametersInHeaders") == "true"


@pytest.mark.parametrize("name", [*CHAIN, "mlchain"])
def test_every_item_carries_the_managed_marker(defs: Definitions, name: str) -> None:
    assert (_xml(defs, name).findtext("description") or "").endswith(MANAGED_MARKER)
    assert is_managed(next(i.xml for i in defs.items if i.name == name))


# --- YAML in, XML out ---------------------------------------------------------------------

TINY_YAML = """\
- job:
    name: tiny
    description: A job written in the test.
    node: docker
    parameters:
      - string:
          name: RUN_ID
          default: ''
    builders:
      - shell:
          command: exit 3
          unstable-return: 3
    publishers:
      - trigger-parameterized-builds:
          - project: next
            condition: UNSTABLE
            property-file: out.properties
            fail-on-missing: true
"""

TINY_XML = """\
<project>
  <actions/>
  <description>A job written in the test.&lt;!-- Managed by Jenkins Job Builder --&gt;</description>
  <keepDependencies>false</keepDependencies>
  <blockBuildWhenDownstreamBuilding>false</blockBuildWhenDownstreamBuilding>
  <blockBuildWhenUpstreamBuilding>false</blockBuildWhenUpstreamBuilding>
  <concurrentBuild>false</concurrentBuild>
  <assignedNode>docker</assignedNode>
  <canRoam>false</canRoam>
  <properties>
    <hudson.model.ParametersDefinitionProperty>
      <parameterDefinitions>
        <hudson.model.StringParameterDefinition>
          <name>RUN_ID</name>
          <description/>
          <defaultValue/>
          <trim>false</trim>
        </hudson.model.StringParameterDefinition>
      </parameterDefinitions>
    </hudson.model.ParametersDefinitionProperty>
  </properties>
  <scm class="hudson.scm.NullSCM"/>
  <builders>
    <hudson.tasks.Shell>
      <command>exit 3</command>
      <unstableReturn>3</unstableReturn>
    </hudson.tasks.Shell>
  </builders>
  <publishers>
    <hudson.plugins.parameterizedtrigger.BuildTrigger>
      <configs>
        <hudson.plugins.parameterizedtrigger.BuildTriggerConfig>
          <configs>
            <hudson.plugins.parameterizedtrigger.FileBuildParameters>
              <propertiesFile>out.properties</propertiesFile>
              <failTriggerOnMissing>true</failTriggerOnMissing>
              <textParamValueOnNewLine>false</textParamValueOnNewLine>
            </hudson.plugins.parameterizedtrigger.FileBuildParameters>
          </configs>
          <projects>next</projects>
          <condition>UNSTABLE</condition>
          <triggerFromChildProjects>false</triggerFromChildProjects>
          <triggerWithNoParameters>false</triggerWithNoParameters>
        </hudson.plugins.parameterizedtrigger.BuildTriggerConfig>
      </configs>
    </hudson.plugins.parameterizedtrigger.BuildTrigger>
  </publishers>
  <buildWrappers/>
</project>
"""


def test_yaml_written_here_renders_to_the_expected_xml(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    rendered = load(tmp_path)
    assert [i.name for i in rendered.jobs] == ["tiny"]
    assert normalise_xml(rendered.jobs[0].xml) == normalise_xml(TINY_XML)


def test_a_key_jjb_does_not_know_is_an_error_not_silently_dropped(tmp_path: Path) -> None:
    (tmp_path / "view.yaml").write_text(
        "- view:\n    name: v\n    view-type: pipeline\n    first-job: a\n    show-pipeline-parameters: true\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert "show-pipeline-parameters" in str(err.value)
    assert "show-parameters" in str(err.value)


def test_a_key_used_as_a_template_variable_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        "- job:\n    name: j\n    greeting: hello\n    builders:\n      - shell: echo {greeting}\n")
    root = ET.fromstring(load(tmp_path).jobs[0].xml.encode("utf-8"))
    assert root.findtext("builders/hudson.tasks.Shell/command") == "echo hello"


def test_broken_yaml_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("- job:\n    name: x\n    builders:\n      - nosuchbuilder: {}\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert "nosuchbuilder" in str(err.value)


# --- normalisation -----------------------------------------------------------------------------

def test_normalisation_ignores_what_jenkins_adds_when_it_saves() -> None:
    ours = '<?xml version="1.0" encoding="utf-8"?>\n<project>\n  <a class="x.Y">1</a>\n  <b/>\n</project>\n'
    saved = "<?xml version='1.1' encoding='UTF-8'?><project><a plugin=\"p@1.2\" class=\"x.Y\">1</a><b></b></project>"
    assert normalise_xml(ours) == normalise_xml(saved)
    assert normalise_xml(ours) != normalise_xml(ours.replace(">1<", ">2<"))


def test_is_managed_reads_the_description() -> None:
    escaped = MANAGED_MARKER.replace("<", "&lt;").replace(">", "&gt;")
    assert is_managed(f"<project><description>x\n{escaped}</description></project>")
    assert not is_managed("<project><description>made by hand</description></project>")
    assert not is_managed("<project/>")


# --- the command -----------------------------------------------------------------------------------

def test_default_jobs_dir_is_the_checkouts_jobs() -> None:
    assert default_jobs_dir() == JOBS


def test_render_writes_the_layout_of_jenkins_jobs_test(tmp_path: Path, defs: Definitions) -> None:
    result = CliRunner().invoke(cli, ["jenkins", "render", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for item in defs.items:
        assert (tmp_path / "out" / item.name / "config.xml").read_text(encoding="utf-8") == item.xml


def test_render_without_output_lists_the_items() -> None:
    result = CliRunner().invoke(cli, ["jenkins", "render"])
    assert result.exit_code == 0, result.output
    assert "job1-pull" in result.output and "view  mlchain" in result.output


def test_render_job_dsl_prints_or_writes_the_seed(tmp_path: Path) -> None:
    printed = CliRunner().invoke(cli, ["jenkins", "render", "--format", "job-dsl"])
    assert printed.exit_code == 0, printed.output
    assert "job('job1-pull') {" in printed.output
    written = CliRunner().invoke(cli, ["jenkins", "render", "--format", "job-dsl", "-o", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert (tmp_path / "seed.groovy").read_text(encoding="utf-8").rstrip("\n") == printed.output.rstrip("\n")


# --- the Job DSL translation (its behaviour is checked with Groovy in tests/integration) ---------------

def test_groovy_literals_keep_dollar_signs_and_escape_quotes() -> None:
    assert dsl.groovy_literal("$REPO_URL") == "'$REPO_URL'"
    assert dsl.groovy_literal("it's\na\\b") == "'it\\'s\\na\\\\b'"
    assert dsl.groovy_literal(True) == "true"
    assert dsl.groovy_literal(3) == "3"


def test_a_component_the_seed_cannot_translate_is_an_error_listing_what_it_can(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("- job:\n    name: j\n    builders:\n      - batch: dir\n")
    with pytest.raises(ConfigError) as err:
        dsl.seed_script(load(tmp_path))
    assert "batch" in str(err.value) and "shell" in str(err.value)


@pytest.mark.parametrize(("text", "said"), [("'^[0-9a-f]{40}$'", "cannot expand a {...}"),
                                           ("'a lone { brace'", "expected '}'")])
def test_a_brace_jjb_cannot_expand_is_a_clear_error_in_both_engines(tmp_path: Path, text: str, said: str) -> None:
    from mlchain.engine.jjb import load_chain

    (tmp_path / "jobs.yaml").write_text(f"- job:\n    name: braces\n    description: {text}\n"
                                        "    builders:\n      - shell: mlchain job pull\n")
    for load_jobs in (load, load_chain):
        with pytest.raises(ConfigError) as caught:  # not a traceback: JJB raised IndexError for {40}
            load_jobs(tmp_path)
        assert said in caught.value.reason
