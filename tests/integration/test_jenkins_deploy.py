"""Contract tests of `mlchain jenkins deploy | status | trigger` against a FAKE Jenkins over real HTTP.

python-jenkins makes real requests to ``tests/fakes/fake_jenkins.py`` (an
http.server on 127.0.0.1); the CLI is driven through click's CliRunner with
the controller's URL, user and token in the environment, as a user sets them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # so that `tests.fakes` imports however pytest was started
    sys.path.insert(0, str(REPO))

from mlchain.cli import cli
from tests.fakes.fake_jenkins import ALL_PLUGINS, Build, FakeJenkins, User

TOKEN = "admin-api-token-0123456789"
CHAIN = ["job1-pull", "job2-classify", "job3-train", "job4-gate", "job5-notify", "job6-monitor"]
HANDMADE = "<?xml version='1.1' encoding='UTF-8'?><project><description>made by hand</description></project>"
STALE = ("<?xml version='1.1' encoding='UTF-8'?><project><description>old job\n"
         "&lt;!-- Managed by Jenkins Job Builder --&gt;</description></project>")


@pytest.fixture()
def fake() -> Iterator[FakeJenkins]:
    with FakeJenkins(users={"admin": User(TOKEN), "reader": User("reader-token-42", admin=False,
                                                                   can_write=False)}) as server:
        yield server


@pytest.fixture()
def jobs_dir(tmp_path: Path) -> Path:
    """A copy of jobs/ a test may edit."""
    copy = tmp_path / "jobs"
    shutil.copytree(REPO / "jobs", copy)
    return copy


def run(fake: FakeJenkins, *args: str, user: str = "admin", token: str = TOKEN) -> Result:
    env = {"MLCHAIN_JENKINS_URL": fake.url, "MLCHAIN_JENKINS_USER": user, "MLCHAIN_JENKINS_TOKEN": token}
    return CliRunner().invoke(cli, ["jenkins", *args], env=env)


def deploy(fake: FakeJenkins, jobs_dir: Path, *flags: str, **kw: str) -> Result:
    return run(fake, "deploy", "--jobs-dir", str(jobs_dir), *flags, **kw)


# --- deploy --------------------------------------------------------------------------------

def test_first_deploy_creates_the_six_jobs_and_the_view(fake: FakeJenkins, jobs_dir: Path) -> None:
    result = deploy(fake, jobs_dir)
    assert result.exit_code == 0, result.output
    assert sorted(fake.jobs) == CHAIN
    assert list(fake.views) == ["mlchain"]
    for name in CHAIN:
        assert f"created      job {name}" in result.output
    assert "created      view mlchain" in result.output
    assert "BuildPipelineView" in fake.views["mlchain"]


def test_second_deploy_changes_nothing_and_says_so(fake: FakeJenkins, jobs_dir: Path) -> None:
    assert deploy(fake, jobs_dir).exit_code == 0
    posts_before = len(fake.posts())
    result = deploy(fake, jobs_dir)
    assert result.exit_code == 0, result.output
    assert "nothing to change: 7 item(s) already match jobs/" in result.output
    assert len(fake.posts()) == posts_before, "a deploy without changes must not write to the controller"


def test_a_changed_job_is_reconfigured_and_only_that_one(fake: FakeJenkins, jobs_dir: Path) -> None:
    assert deploy(fake, jobs_dir).exit_code == 0
    chain = jobs_dir / "chain.yaml"
    chain.write_text(chain.read_text().replace("unstable-return: 75", "unstable-return: 4"))
    posts_before = len(fake.posts())

    result = deploy(fake, jobs_dir)

    assert result.exit_code == 0, result.output
    assert "updated      job job4-gate" in result.output
    assert fake.posts()[posts_before:] == ["/job/job4-gate/config.xml"]
    assert "<unstableReturn>4</unstableReturn>" in fake.jobs["job4-gate"].config
    assert "1 updated, 6 unchanged" in result.output


def test_delete_old_deletes_stale_managed_jobs_and_spares_handmade_ones(fake: FakeJenkins, jobs_dir: Path) -> None:
    fake.add_job("old-managed", STALE)
    fake.add_job("handmade", HANDMADE)

    result = deploy(fake, jobs_dir, "--delete-old")

    assert result.exit_code == 0, result.output
    assert "old-managed" not in fake.jobs
    assert "handmade" in fake.jobs
    assert "deleted      job old-managed" in result.output
    assert "kept         job handmade (not in jobs/, but not managed by JJB" in result.output


def test_without_delete_old_stale_jobs_stay(fake: FakeJenkins, jobs_dir: Path) -> None:
    fake.add_job("old-managed", STALE)
    assert deploy(fake, jobs_dir).exit_code == 0
    assert "old-managed" in fake.jobs


def test_dry_run_changes_nothing(fake: FakeJenkins, jobs_dir: Path) -> None:
    fake.add_job("old-managed", STALE)

    result = deploy(fake, jobs_dir, "--dry-run", "--delete-old")

    assert result.exit_code == 0, result.output
    assert fake.posts() == []
    assert sorted(fake.jobs) == ["old-managed"] and fake.views == {}
    assert "would create job job1-pull" in result.output
    assert "would delete job old-managed" in result.output
    assert "dry run, nothing was changed: 7 would create, 1 would delete" in result.output


def test_a_bad_token_gives_a_clear_401_message_and_exit_11(fake: FakeJenkins, jobs_dir: Path) -> None:
    bad = "wrong-token-SECRET-987"
    result = deploy(fake, jobs_dir, token=bad)
    assert result.exit_code == 11, result.output
    assert "rejected the credentials of user 'admin' (401)" in result.output
    assert "MLCHAIN_JENKINS_TOKEN" in result.output
    assert bad not in result.output and TOKEN not in result.output
    assert fake.posts() == []


def test_the_token_never_appears_in_the_output(fake: FakeJenkins, jobs_dir: Path) -> None:
    outputs = [deploy(fake, jobs_dir).output, deploy(fake, jobs_dir, "--dry-run").output,
               run(fake, "status").output, run(fake, "trigger", "https://example.com/r.git", "main").output]
    assert all(TOKEN not in out for out in outputs)


def test_a_user_without_permission_gets_a_403_message(fake: FakeJenkins, jobs_dir: Path) -> None:
    result = deploy(fake, jobs_dir, user="reader", token="reader-token-42")
    assert result.exit_code == 11, result.output
    assert "user 'reader' is not allowed to do this (403)" in result.output
    assert "may not list plugins" in result.output  # a non-admin cannot check plugins first
    assert fake.jobs == {}


def test_a_missing_plugin_is_named_before_anything_changes(jobs_dir: Path) -> None:
    plugins = tuple(p for p in ALL_PLUGINS if p != "generic-webhook-trigger")
    with FakeJenkins(users={"admin": User(TOKEN)}, plugins=plugins) as fake:
        result = deploy(fake, jobs_dir)
        assert result.exit_code == 11, result.output
        assert "lacks plugins the chain needs: generic-webhook-trigger (for org.jenkinsci.plugins.gwt." in result.output
        assert "gwt.GenericTrigger)" in result.output
        assert fake.posts() == []


def test_a_missing_plugin_reported_by_the_controller_is_explained(jobs_dir: Path) -> None:
    # The user may not list plugins, so the controller's 500 is what tells.
    plugins = tuple(p for p in ALL_PLUGINS if p != "build-pipeline-plugin")
    with FakeJenkins(users={"deployer": User(TOKEN, admin=False)}, plugins=plugins) as fake:
        result = deploy(fake, jobs_dir, user="deployer")
        assert result.exit_code == 11, result.output
        assert "cannot create view mlchain" in result.output
        assert "cannot load class au.com.centrumsystems.hudson.plugin.buildpipeline.BuildPipelineView" in result.output
        assert "build-pipeline-plugin" in result.output


def test_an_unreachable_controller_says_so(jobs_dir: Path) -> None:
    with FakeJenkins() as fake:
        url = fake.url
    result = CliRunner().invoke(cli, ["jenkins", "deploy", "--jobs-dir", str(jobs_dir)], env={
        "MLCHAIN_JENKINS_URL": url, "MLCHAIN_JENKINS_USER": "admin", "MLCHAIN_JENKINS_TOKEN": TOKEN})
    assert result.exit_code == 11, result.output
    assert "does not answer" in result.output


def test_credentials_in_the_url_are_refused_without_echoing_them(jobs_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["jenkins", "deploy", "--jobs-dir", str(jobs_dir)], env={
        "MLCHAIN_JENKINS_URL": f"http://admin:{TOKEN}@127.0.0.1:9/", "MLCHAIN_JENKINS_USER": "",
        "MLCHAIN_JENKINS_TOKEN": ""})
    assert result.exit_code == 3, result.output
    assert "must not contain a user or token" in result.output
    assert TOKEN not in result.output


def test_no_controller_configured_says_what_to_set(jobs_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["jenkins", "status"], env={
        "MLCHAIN_JENKINS_URL": "", "MLCHAIN_JENKINS_USER": "", "MLCHAIN_JENKINS_TOKEN": ""})
    assert result.exit_code == 3, result.output
    assert "MLCHAIN_JENKINS_URL" in result.output


# --- status ---------------------------------------------------------------------------------

def test_status_shows_the_last_builds_with_run_id_and_trial(fake: FakeJenkins, jobs_dir: Path) -> None:
    assert deploy(fake, jobs_dir).exit_code == 0
    fake.jobs["job2-classify"].builds = [
        Build(1, "SUCCESS", {"RUN_ID": "run-7", "TRIAL": "1"}),
        Build(2, "FAILURE", {"RUN_ID": "run-7", "TRIAL": "2"}),
        Build(3, None, {"RUN_ID": "run-8", "TRIAL": "1"}),
    ]
    del fake.jobs["job6-monitor"]

    result = run(fake, "status")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    job2 = [line for line in lines if line.startswith("job2-classify")]
    assert len(job2) == 3
    assert "#3" in job2[0] and "RUNNING" in job2[0] and "RUN_ID=run-8 TRIAL=1" in job2[0]
    assert "#2" in job2[1] and "FAILURE" in job2[1] and "RUN_ID=run-7 TRIAL=2" in job2[1]
    assert any(line.startswith("job1-pull") and "no builds yet" in line for line in lines)
    assert any(line.startswith("job6-monitor") and "not on the controller" in line for line in lines)


# --- trigger -----------------------------------------------------------------------------------

def test_trigger_starts_job1_with_repo_and_ref_and_reports_the_queue_item(fake: FakeJenkins, jobs_dir: Path) -> None:
    assert deploy(fake, jobs_dir).exit_code == 0

    result = run(fake, "trigger", "https://github.com/acme/digits.git", "feature/x")

    assert result.exit_code == 0, result.output
    (number, item), = fake.queue.items()
    assert item["task"]["name"] == "job1-pull"
    assert "REPO_URL=https://github.com/acme/digits.git" in item["params"]
    assert "REF=feature/x" in item["params"]
    assert f"queue item {number}" in result.output
    assert f"{fake.url}queue/item/{number}/" in result.output
    assert "waiting: Waiting for next available executor" in result.output


def test_trigger_before_deploy_says_to_deploy(fake: FakeJenkins) -> None:
    result = run(fake, "trigger", "https://github.com/acme/digits.git", "main")
    assert result.exit_code == 11, result.output
    assert "job1-pull is not on the controller: run `mlchain jenkins deploy` first" in result.output


def test_trigger_does_not_print_credentials_in_the_repo_url(fake: FakeJenkins, jobs_dir: Path) -> None:
    assert deploy(fake, jobs_dir).exit_code == 0
    result = run(fake, "trigger", "https://bot:ghp_secret123@github.com/acme/digits.git", "main")
    assert result.exit_code == 0, result.output
    assert "ghp_secret123" not in result.output
    assert "https://***@github.com/acme/digits.git" in result.output


# --- the compose stack's one-shot deployer (Jenkins Job Builder itself) ---------------------------

def test_the_compose_deployer_deploys_with_jjb_and_agrees_with_mlchain(fake: FakeJenkins, jobs_dir: Path,
                                                                      tmp_path: Path) -> None:
    fake.add_job("old-managed", STALE)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "JENKINS_URL": fake.url, "JENKINS_USER": "admin", "JENKINS_PASSWORD": TOKEN, "JOBS_DIR": str(jobs_dir),
           "JJB_INI_TEMPLATE": str(REPO / "jenkins" / "jenkins_jobs.ini.template"), "WAIT_FOR_JENKINS_S": "10"}
    done = subprocess.run([sys.executable, str(REPO / "jenkins" / "deployer" / "deploy_jobs.py")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(fake.jobs) == CHAIN and list(fake.views) == ["mlchain"]
    assert TOKEN not in done.stdout + done.stderr
    # JJB and `mlchain jenkins deploy` render the same: nothing left to change.
    result = deploy(fake, jobs_dir)
    assert "nothing to change" in result.output, result.output


def test_a_retraining_on_drift_starts_job1_with_its_reason_and_dataset(fake: FakeJenkins, jobs_dir: Path,
                                                                      tmp_path: Path) -> None:
    from mlchain.config import load_settings
    from mlchain.serving.retrain import DatasetVersion, Source, request_run

    assert deploy(fake, REPO / "jobs").exit_code == 0  # the shipped job1, with REASON and DATASET
    settings = load_settings({"home": tmp_path / "home", "retrain_via": "jenkins"},
                             env={"MLCHAIN_JENKINS_URL": fake.url, "MLCHAIN_JENKINS_USER": "admin",
                                  "MLCHAIN_JENKINS_TOKEN": TOKEN})
    dataset = DatasetVersion(tmp_path / "home" / "datasets" / "digits" / "0123456789ab", "0123456789ab", 10, 1)
    commit = "a" * 40
    answer = request_run(settings, Source("https://github.com/acme/digits.git", "digits", commit, "3"),
                         "drift in pixel mean at sample 4,120: 0.31 -> 0.52", dataset)
    (number, item), = fake.queue.items()
    assert item["task"]["name"] == "job1-pull" and f"queue item {number}" in answer
    for param in (f"REF={commit}", "REASON=drift in pixel mean at sample 4,120: 0.31 -> 0.52",
                  f"DATASET={dataset.path}"):
        assert param in item["params"]
