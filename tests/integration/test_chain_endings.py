"""Every ending of `mlchain run` on real input: training code written the way people write it,
real git, a real MLflow SQLite store, real Optuna storage, the email in the outbox (or a real SMTP
server), and the command's exit code as a script sees it."""

from __future__ import annotations

import email
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, git

from mlchain.config import Settings, load_settings
from mlchain.engine.chain import run_chain

pytestmark = pytest.mark.slow

NO_DOCKER = "unix:///nonexistent/mlchain-test/docker.sock"

# README's minimal contract, no mlchain.yaml: what a person writes first.
PLAIN_SKLEARN = """\
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mlchain import sdk

X, y = load_digits(return_X_y=True)
sdk.record_data(X, y, source="sklearn digits")
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
model = LogisticRegression(max_iter=3000).fit(X_train, y_train)
sdk.report({"accuracy": model.score(X_test, y_test)})
sdk.save_model(model)
"""
NEVER_SAVES = PLAIN_SKLEARN.replace("sdk.save_model(model)\n", "")
NEVER_REPORTS = PLAIN_SKLEARN.replace('sdk.report({"accuracy": model.score(X_test, y_test)})\n', "")
RAISES = PLAIN_SKLEARN.replace("model = LogisticRegression", "model = LogisticRegresion")
USES_TORCH = "import torch\n\nmodel = torch.nn.Linear(64, 10)\n"
WORSE = PLAIN_SKLEARN.replace("from sklearn.linear_model import LogisticRegression",
                              "from sklearn.dummy import DummyClassifier").replace(
    "LogisticRegression(max_iter=3000)", "DummyClassifier(strategy='most_frequent')")
# Params read through sdk.params(); a search space with one point: every trial scores the same.
TUNED = PLAIN_SKLEARN.replace("LogisticRegression(max_iter=3000)",
                              "LogisticRegression(C=sdk.params()['C'], max_iter=3000)")
ONE_POINT = "params: {C: 0.0001}\nsearch:\n  C: {type: categorical, choices: [0.0001]}\n"


def cli(args: list[str], home: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`mlchain ARGS` as a person (or a CI step) runs it: its own process, its own exit code."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    clean.update({"MLCHAIN_HOME": str(home), **env})
    return subprocess.run([sys.executable, "-m", "mlchain.cli", *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=900, check=False)


def settings_of(home: Path) -> Settings:
    return load_settings({"home": home}, env={})


def outbox(home: Path) -> list[EmailMessage]:
    files = sorted((home / "outbox").glob("*.eml"))
    return [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]  # type: ignore[misc]


def text_of(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def repo_with(root: Path, name: str, files: dict[str, str]) -> Path:
    from helpers import make_git_repo

    return make_git_repo(root / name, files=files)


def mlflow(settings: Settings) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.resolved_tracking_uri)


# --- what people write, through the whole chain ---------------------------------------------------

def test_a_plain_sklearn_script_without_mlchain_yaml_ends_in_a_success_email(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, "plain", {"train.py": PLAIN_SKLEARN})
    home = tmp_path / "home"
    done = cli(["run", str(repo), "--ref", "main", "--json"], home, DOCKER_HOST=NO_DOCKER)

    assert done.returncode == 0, done.stdout + done.stderr
    # no Docker engine: the person at the terminal is told that training runs unsandboxed
    assert "training runs as a local process, without the sandbox" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "passed" and summary["exit_code"] == 0
    assert summary["stop_reason"].startswith("gate passed: accuracy 0.9")
    # the code's own hyperparameter literal is trial 1's param (it trains as pushed)
    assert len(summary["trials"]) == 1 and summary["trials"][0]["params"] == {"max_iter": 3000}
    assert summary["registered"]["version"] == 1 and summary["registered"]["champion"] is True
    (msg,) = outbox(home)
    assert msg["Subject"].startswith("[mlchain] PASSED plain@main: accuracy ")
    assert "now the champion (first champion)" in text_of(msg)

    # the values recorded are the values the training produced
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    settings = settings_of(home)
    trial = summary["trials"][0]
    output = settings.runs_dir / summary["run_id"] / "trials" / "1" / "output"
    reported = json.loads((output / "metrics.json").read_text())["accuracy"]
    run = mlflow(settings).get_run(trial["mlflow_run_id"])
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    expected = LogisticRegression(max_iter=3000).fit(X_train, y_train).score(X_test, y_test)
    assert run.data.metrics["accuracy"] == reported == trial["metric"] == pytest.approx(expected, abs=1e-9)
    digest = hashlib.sha256()
    for array in (X, y):
        digest.update(memoryview(array).tobytes())
    recorded = json.loads((output / "data.json").read_text())["hash"]
    assert run.data.tags["mlchain.data_hash"] == recorded == digest.hexdigest()[:16]
    champion = mlflow(settings).get_model_version_by_alias("plain", "champion")
    assert champion.run_id == trial["mlflow_run_id"]
    artifacts = {a.path for a in mlflow(settings).list_artifacts(trial["mlflow_run_id"], "model")}
    assert "model/MLmodel" in artifacts


def test_a_failed_gate_with_nothing_to_tune_stops_and_says_how_to_add_params(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, "plain", {"train.py": WORSE})  # no params, no literal hyperparameter
    home = tmp_path / "home"
    done = cli(["run", str(repo), "--ref", "main", "--threshold", "0.999", "--runner", "process"], home)

    assert done.returncode == 15, done.stdout + done.stderr  # the gate was not reached
    assert "nothing to tune: no params and no search space" in done.stdout
    assert done.stdout.rstrip().splitlines()[-2].startswith("  fix: add the hyperparameters to mlchain.yaml")
    assert "search:' section to mlchain.yaml" not in done.stdout + done.stderr
    (msg,) = outbox(home)
    assert "FAILED" in msg["Subject"] and "nothing to tune" in msg["Subject"]
    text = text_of(msg)
    assert "Stopped     nothing to tune: no params and no search space" in text
    assert "How to fix  add the hyperparameters to mlchain.yaml (params: {n_estimators: 100" in text
    assert "after 1 trial" in msg["Subject"]


def test_a_model_never_saved_is_not_registered_and_the_email_says_so(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, "unsaved", {"train.py": NEVER_SAVES})
    home = tmp_path / "home"
    done = cli(["run", str(repo), "--ref", "main", "--runner", "process"], home)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no model was saved" in done.stdout
    assert "\n  registered: " not in done.stdout
    (msg,) = outbox(home)
    text = text_of(msg)
    assert "PASSED" in msg["Subject"]
    assert "Note        no model was saved: the best trial reported accuracy but never called" \
           " sdk.save_model(model)" in text
    assert "Registered model" not in text
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        mlflow(settings_of(home)).get_registered_model("unsaved")


# --- each job that can fail: one failure email, the right exit code ---------------------------

FAILURES = {
    # name: (files, extra args, failed job (None: the trial failed), exit code, words in the email and the output)
    "job1 git error": ({"train.py": PLAIN_SKLEARN}, ["--ref", "no-such-branch"], "job1-pull", 13,
                       ["no-such-branch"]),
    "job1 invalid mlchain.yaml": ({"train.py": PLAIN_SKLEARN, "mlchain.yaml": "threshold: high\n"}, [],
                                  "job1-pull", 3, ["threshold"]),
    "job2 unsupported framework": ({"train.py": USES_TORCH}, [], "job2-classify", 4,
                                   ["unsupported framework", "torch"]),
    "job3 code error": ({"train.py": RAISES}, [], None, 6, ["LogisticRegresion", "fix the training code"]),
    "job3 contract error": ({"train.py": NEVER_REPORTS}, [], None, 5, ["sdk.report"]),
    "job4 config error": ({"train.py": TUNED, "mlchain.yaml": "params: {C: 1.0}\nsearch:\n"
                           "  C: {type: categorical, choices: [[1, 2]]}\n"}, ["--threshold", "0.999"],
                          "job4-gate", 3, ["categorical choice must be a number"]),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failing_job_is_announced_once_with_its_reason_and_exit_code(tmp_path: Path, case: str) -> None:
    files, args, job, code, words = FAILURES[case]
    repo = repo_with(tmp_path, "broken", files)
    home = tmp_path / "home"
    done = cli(["run", str(repo), "--ref", "main", "--runner", "process", *args], home)

    assert done.returncode == code, done.stdout + done.stderr
    messages = outbox(home)
    assert len(messages) == 1, [m["Subject"] for m in messages]
    (msg,) = messages
    assert msg["Subject"].startswith("[mlchain] FAILED broken@")
    text = text_of(msg)
    if job is not None:
        assert f"Failed job  {job}" in text
        assert f"failed job: {job}" in done.stdout
    for word in words:
        assert word in text, text
        assert word in done.stdout, done.stdout
    # the hint shown last is the one of the error that stopped the run
    assert "add a 'search:' section" not in done.stdout + done.stderr + text
    assert done.stdout.rstrip().splitlines()[-1] == f"  exit code {code}"


# --- an engine killed: `mlchain resume`, and the next `mlchain run` resuming by itself ----------

def _builds(home: Path, run_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "state.db") as conn:
        return conn.execute("SELECT job, result FROM builds WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()


def _kill_while_emailing(repo: Path, home: Path, run_id: str, smtp: tuple[str, int, Any]) -> None:
    """Start `mlchain run` and SIGKILL it while job5 waits on the SMTP server (job1-job4 done)."""
    host, port, mailbox = smtp
    mailbox.hold_next()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    env.update({"MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process", "MLCHAIN_SMTP_HOST": host,
                "MLCHAIN_SMTP_PORT": str(port)})
    engine = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main",
                               "--threshold", "0.05", "--run-id", run_id, "--pusher-email", "pusher@example.com", "--json"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert mailbox.held.wait(300), "job5 never sent its email"
        assert engine.poll() is None
    finally:
        os.killpg(engine.pid, signal.SIGKILL)
        engine.wait()
        mailbox.release()
    assert [job for job, result in _builds(home, run_id)][-1] == "job5-notify"


def test_mlchain_resume_finishes_a_run_whose_engine_was_killed(tmp_path: Path, smtp_server: Any) -> None:
    host, port, mailbox = smtp_server
    repo = repo_with(tmp_path, "plain", {"train.py": PLAIN_SKLEARN})
    home = tmp_path / "home"
    _kill_while_emailing(repo, home, "killed-once", smtp_server)

    done = cli(["resume", "killed-once", "--json"], home, MLCHAIN_SMTP_HOST=host, MLCHAIN_SMTP_PORT=str(port))

    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "passed" and [t["number"] for t in summary["trials"]] == [1]
    assert [job for job, result in _builds(home, "killed-once") if job == "job3-train"] == ["job3-train"]
    _assert_held_not_resent(home, mailbox, summary, "killed-once")


def _assert_held_not_resent(home: Path, mailbox: Any, summary: dict[str, Any], run_id: str) -> None:
    """The kill landed while the server held the whole message unanswered: it may have arrived,
    so the resumed job5 never sends it a second time; it keeps a copy in held/ and says so."""
    assert run_id not in [msg["X-Mlchain-Run"] for _, msg in mailbox.messages]
    (held,) = (home / "outbox" / "held").glob(f"*{run_id}*.eml")
    assert "PASSED plain@main" in held.read_text(errors="replace")
    assert "not sent again" in summary["email"]["summary"]


def test_the_next_mlchain_run_resumes_a_killed_run_by_itself(tmp_path: Path, smtp_server: Any) -> None:
    host, port, mailbox = smtp_server
    repo = repo_with(tmp_path, "plain", {"train.py": PLAIN_SKLEARN})
    other = repo_with(tmp_path, "other", {"train.py": PLAIN_SKLEARN})
    home = tmp_path / "home"
    _kill_while_emailing(repo, home, "killed-then-run", smtp_server)

    done = cli(["run", str(other), "--ref", "main", "--threshold", "0.05", "--runner", "process",
                "--pusher-email", "pusher@example.com", "--json"], home,
               MLCHAIN_SMTP_HOST=host, MLCHAIN_SMTP_PORT=str(port))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming run killed-then-run, interrupted earlier" in done.stderr
    subjects = sorted(msg["Subject"].split(":")[0] for _, msg in mailbox.messages)
    assert subjects == ["[mlchain] PASSED other@main"]  # the killed run's email was in flight: held
    assert list((home / "outbox" / "held").glob("*killed-then-run*.eml"))
    assert json.loads(done.stdout)["repo_name"] == "other"
    store_status = sqlite3.connect(home / "state.db").execute(
        "SELECT status FROM runs WHERE run_id = 'killed-then-run'").fetchone()
    assert store_status == ("passed",)


# --- the registry: the champion moves only for a better model ---------------------------------

def test_the_champion_does_not_move_to_a_worse_model(tmp_path: Path, make_settings: Any) -> None:
    repo = repo_with(tmp_path, "digits", {"train.py": PLAIN_SKLEARN})
    settings = make_settings(threshold=0.05)
    first = run_chain(settings, str(repo), ref="main", live=False)
    assert first.status == "passed" and first.registered is not None
    assert (first.registered["version"], first.registered["champion"]) == (1, True)

    (repo / "train.py").write_text(WORSE)
    git(repo, "commit", "-qam", "a worse model that still passes a low gate")
    second = run_chain(settings, str(repo), ref="main", live=False)

    assert second.status == "passed" and second.best is not None and first.best is not None
    assert second.best.metric is not None and first.best.metric is not None
    assert second.best.metric < first.best.metric
    assert second.registered is not None
    assert (second.registered["version"], second.registered["champion"]) == (2, False)
    assert second.registered["previous_champion_metric"] == pytest.approx(first.best.metric)
    champion = mlflow(settings).get_model_version_by_alias("digits", "champion")
    assert (int(champion.version), champion.run_id) == (1, first.best.mlflow_run_id)
    (msg,) = [m for m in outbox(settings.home_abs) if m["X-Mlchain-Run"] == second.run_id]
    assert f"champion unchanged (the champion has {first.best.metric:.4f})" in text_of(msg)


# --- the search inside a real chain -----------------------------------------------------------

def test_patience_ends_the_loop_in_a_real_chain(tmp_path: Path, make_settings: Any) -> None:
    repo = repo_with(tmp_path, "tuned", {"train.py": TUNED, "mlchain.yaml": ONE_POINT})
    settings = make_settings(threshold=0.999, max_trials=6, patience=2)
    summary = run_chain(settings, str(repo), ref="main", live=False)

    assert summary.status == "budget_spent" and summary.exit_code == 15
    assert summary.stop_reason == "patience spent (2 trials without improvement)"
    assert [t.number for t in summary.trials] == [1, 2, 3]
    assert len({t.metric for t in summary.trials}) == 1  # the same point each time: no improvement


def test_max_minutes_ends_the_loop_in_a_real_chain(tmp_path: Path, make_settings: Any) -> None:
    repo = repo_with(tmp_path, "tuned", {"train.py": TUNED, "mlchain.yaml": ONE_POINT})
    settings = make_settings(threshold=0.999, max_trials=6, max_minutes=0.001)
    summary = run_chain(settings, str(repo), ref="main", live=False)

    assert summary.status == "budget_spent"
    assert summary.stop_reason is not None and summary.stop_reason.startswith("max_minutes reached (")
    assert summary.stop_reason.endswith(" of 0.001 min)")
    assert [t.number for t in summary.trials] == [1]


def _cnn_without_search(root: Path, branch: str = "main") -> Path:
    import yaml
    from helpers import MODELS, make_git_repo

    cfg = yaml.safe_load((MODELS / "digits_cnn" / "mlchain.yaml").read_text())
    del cfg["search"]
    return make_git_repo(root / "digits_cnn", files={"mlchain.yaml": yaml.safe_dump(cfg)},
                         example="digits_cnn", branch=branch)


def test_the_search_uses_the_default_space_with_one_study_per_repository_and_branch(
        tmp_path: Path, make_settings: Any) -> None:
    import optuna

    from mlchain.tweak import DEFAULT_SPACES

    repo = _cnn_without_search(tmp_path)
    git(repo, "branch", "other")
    settings = make_settings(threshold=0.999, max_trials=2)
    on_main = run_chain(settings, str(repo), ref="main", live=False)

    assert on_main.status == "budget_spent" and on_main.stop_reason == "max_trials reached (2)", on_main.explain()
    baseline, searched = on_main.trials
    space = DEFAULT_SPACES["keras"]
    changed = {k for k in searched.params if searched.params[k] != baseline.params[k]}
    assert changed and changed <= set(space), changed  # only keys of the default space move
    assert searched.params["seed"] == baseline.params["seed"]  # not in the space: kept
    for key, spec in space.items():
        value = searched.params[key]
        if spec.type == "categorical":
            assert value in (spec.choices or []), (key, value)
        else:
            assert spec.low is not None and spec.high is not None and spec.low <= value <= spec.high, (key, value)

    storage = settings.resolved_optuna_storage
    study = optuna.load_study(study_name="mlchain:digits_cnn@main", storage=storage)
    assert [(t.params, t.value) for t in study.trials] == [
        ({k: searched.params[k] for k in space}, searched.metric)]

    on_other = run_chain(settings, str(repo), ref="other", live=False)
    assert on_other.status == "budget_spent"
    names = sorted(s.study_name for s in optuna.study.get_all_study_summaries(storage))
    assert names == ["mlchain:digits_cnn@main", "mlchain:digits_cnn@other"]
    assert len(optuna.load_study(study_name="mlchain:digits_cnn@main", storage=storage).trials) == 1
    assert len(optuna.load_study(study_name="mlchain:digits_cnn@other", storage=storage).trials) == 1


# --- README's headline command, as written ----------------------------------------------------

def test_the_headline_command_on_the_bundled_cnn_example(tmp_path: Path) -> None:
    """`./mlchain run models/digits_cnn` from the checkout: a folder that is not a git repository
    (the snapshot path), a fresh MLCHAIN_HOME, the default runner and settings. On this machine
    Docker builds from the offline base image (the one setting a machine without a registry needs)."""
    env: dict[str, str] = {}
    from docker_support import _engine, base_image, ca_bundle

    if _engine() is not None:
        env["MLCHAIN_BASE_IMAGE"] = base_image()
        bundle = ca_bundle()
        if bundle is not None:
            env["MLCHAIN_BUILD_CA_BUNDLE"] = str(bundle)
    home = tmp_path / "fresh-home"
    done = cli(["run", "models/digits_cnn"], home, cwd=ROOT, **env)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "is not a git repository: running a snapshot of it" in done.stdout
    assert "PASSED: accuracy reached the gate (0.80)" in done.stdout
    settings = settings_of(home)
    (msg,) = outbox(home)
    assert msg["Subject"].startswith("[mlchain] PASSED digits_cnn@HEAD: accuracy ")
    assert "  email: " in done.stdout  # where the email went
    champion = mlflow(settings).get_model_version_by_alias("digits_cnn", "champion")
    run = mlflow(settings).get_run(champion.run_id)
    assert run.data.metrics["accuracy"] >= 0.80
    assert f"{run.data.metrics['accuracy']:.4f}" in msg["Subject"]
    assert run.data.tags["mlchain.runner"] == ("docker" if _engine() is not None else "process")
    assert "see them with: mlflow ui --backend-store-uri sqlite:///" in done.stdout


def test_job5_announces_a_job1_that_failed_before_it_opened_the_run(tmp_path: Path, make_settings: Any) -> None:
    """On Jenkins, job1's SCM step can fail before `mlchain job pull` names the run: job5 gets
    job1's parameters and build tag (jobs/chain.yaml) and announces the failure anyway."""
    from mlchain.engine.jobs import JOBS, BuildEnv
    from mlchain.state import StateStore

    settings = make_settings()
    lines: list[str] = []
    env = BuildEnv({"WORKSPACE": str(tmp_path / "ws"), "JOB_NAME": "job5-notify", "RUN_ID": "",
                    "FAILED_JOB": "job1-pull", "FAILED_BUILD_TAG": "jenkins-job1-pull-7",
                    "REPO_URL": "https://github.com/acme/digits.git", "REF": "main",
                    "PUSHER_EMAIL": "ana@example.com"})
    assert JOBS["notify"](settings, env, lines.append) == 0

    run = StateStore(settings.state_db).get_run("jenkins-job1-pull-7")
    assert (run.status, run.failed_job, run.repo_name) == ("failed", "job1-pull", "digits")
    (msg,) = outbox(settings.home_abs)
    assert msg["To"] == "ana@example.com"
    assert msg["Subject"].startswith("[mlchain] FAILED digits@main")
    assert "Failed job  job1-pull" in text_of(msg)
