"""The run email as built: subject, text and HTML parts, the plot, and what must never be in it."""

from __future__ import annotations

import io
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from pydantic import SecretStr

from mlchain.config import Settings
from mlchain.gate import format_threshold
from mlchain.notify import build as build_mod
from mlchain.notify import build_message, subject_line
from mlchain.notify.plot import render_plot
from mlchain.state import EventRow
from mlchain.summary import RunSummary, TrialRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECRETS = ("pw-Zq81-never-in-mail", "hook-secret-77", "jenkins-token-99")
HOSTILE = "<script>alert('x')</script>"


def history(epochs: int, top: float) -> list[dict[str, Any]]:
    return [{"epoch": e, "epochs": epochs, "loss": 1.2 / e, "accuracy": top - 0.2 / e,
             "val_loss": 1.3 / e, "val_accuracy": top - 0.25 / e} for e in range(1, epochs + 1)]


def summary(**overrides: Any) -> RunSummary:
    values: dict[str, Any] = {
        "run_id": "r-20261124-0001", "repo_name": "digits_cnn", "repo_url": "https://github.com/acme/digits_cnn",
        "ref": "refs/heads/main", "commit": "0a1b2c3d4e5f60718293", "status": "passed", "stop_reason": "gate passed",
        "metric_name": "accuracy", "threshold": 0.8, "direction": "maximize", "framework": "keras",
        "trials": [], "best": None, "recipients": ["ana@example.com"], "tracking_uri": "sqlite:////srv/.mlchain/mlflow.db",
    }
    values.update(overrides)
    return RunSummary(**values)


def passing() -> RunSummary:
    trials = [
        TrialRecord(1, {"filters": 16, "dropout": 0.25}, "succeeded", 0.7412, mlflow_run_id="run0001aaaa",
                    duration_s=11.0, history=history(5, 0.76)),
        TrialRecord(2, {"filters": 32, "dropout": 0.3, "note": HOSTILE}, "succeeded", 0.7901,
                    mlflow_run_id="run0002bbbb", restarts=2, duration_s=95.0, history=history(5, 0.8)),
        TrialRecord(3, {"filters": 64, "dropout": 0.2, "learning_rate": 0.00125}, "succeeded", 0.97123,
                    mlflow_run_id="run0003cccc", restarts=1, duration_s=140.0, history=history(10, 0.98)),
    ]
    return summary(
        trials=trials, best=trials[2], recipients=["ana@example.com", "bo@example.com"],
        registered={"name": "digits_cnn", "version": 4, "champion": True, "previous_champion_metric": 0.9512},
        events=[EventRow(1, "r1", 2, 0.0, "restart", "killed (exit 137); restarted from epoch 3"),
                EventRow(2, "r1", 3, 0.0, "progress", "epoch 4/10")],
        mlflow_ui_url="http://mlflow.acme.internal:5000/",
    )


def budget_spent() -> RunSummary:
    trials = [TrialRecord(n, {"filters": 8 * n}, "succeeded", m, mlflow_run_id=f"run{n:04d}")
              for n, m in enumerate([0.41, 0.55, 0.61, 0.58, 0.6, 0.52], start=1)]
    return summary(status="budget_spent", stop_reason="max_trials reached (6)", trials=trials, best=trials[2],
                   registered={"name": "digits_cnn", "version": 7, "champion": False,
                               "previous_champion_metric": 0.9712})


FAILING_LOG = "\n".join(f"noise line {i}" for i in range(1, 100)) + (
    "\nTraceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n"
    "    model.fit(x, y)\nNameError: name 'modle' is not defined <&>\n")


def crashed() -> RunSummary:
    trials = [
        TrialRecord(1, {"filters": 16}, "succeeded", 0.61, mlflow_run_id="run0001aaaa", history=history(3, 0.62)),
        TrialRecord(2, {"filters": 32}, "failed", None, failure_kind="code_error", failure_log=FAILING_LOG,
                    duration_s=4.0),
    ]
    return summary(status="failed", stop_reason="training failed: code_error", failed_job="job3-train",
                   trials=trials, best=trials[0])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, mail_from="mlchain <ci@acme.example>", smtp_host="smtp.acme.example",
                    smtp_user="ci-bot", smtp_password=SecretStr(SECRETS[0]),
                    webhook_secret=SecretStr(SECRETS[1]), jenkins_token=SecretStr(SECRETS[2]))


def parts(msg: EmailMessage) -> tuple[str, str, bytes | None]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    pngs = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    png = pngs[0].get_content() if pngs else None
    return text.get_content(), html.get_content(), png


# Subjects ----------------------------------------------------------------------

def test_subject_of_a_pass_names_metric_threshold_and_trial() -> None:
    assert subject_line(passing()) == "[mlchain] PASSED digits_cnn@main: accuracy 0.9712 >= 0.80 (trial 3 of 3)"


def test_subject_of_a_spent_budget_names_best_and_why() -> None:
    assert subject_line(budget_spent()) == (
        "[mlchain] FAILED digits_cnn@main: best 0.6100 < 0.80 after 6 trials (max_trials reached)")


def test_subject_of_a_crash() -> None:
    assert subject_line(crashed()) == (
        "[mlchain] FAILED digits_cnn@main: best 0.6100 < 0.80 after 2 trials (training failed: code_error)")
    nothing = summary(status="failed", stop_reason=None, failed_job="job2-classify", ref=None)
    assert subject_line(nothing) == (
        "[mlchain] FAILED digits_cnn@HEAD: no accuracy reached after 0 trials (job2-classify failed)")


def test_a_pushed_commit_is_named_by_the_branch_it_came_from(settings: Settings) -> None:
    """The webhook builds the pushed commit (ref = its sha) of a branch: subject, text and
    summary name the branch, and the commit beside it."""
    sha = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
    s = passing()
    s.ref, s.commit, s.branch = sha, sha, "main"
    assert subject_line(s).startswith("[mlchain] PASSED digits_cnn@main: ")
    assert "repository https://github.com/acme/digits_cnn @ main (9f8e7d6c5b4a), framework keras" in s.explain()
    text, html, _ = parts(build_message(s, settings))
    assert "@ main (9f8e7d6c5b4a)" in text and "@ <b>main</b>" in html
    assert s.to_dict()["branch"] == "main"


def test_subject_for_a_metric_to_minimize() -> None:
    s = passing()
    s.direction, s.metric_name, s.threshold = "minimize", "rmse", 0.805
    s.best = s.trials[0]
    assert subject_line(s) == "[mlchain] PASSED digits_cnn@main: rmse 0.7412 <= 0.805 (trial 1 of 3)"
    s.status = "budget_spent"
    assert "best 0.7412 > 0.805" in subject_line(s)


def test_subject_cannot_carry_a_line_break() -> None:
    s = passing()
    s.repo_name = "evil\r\nBcc: someone@else.example"
    assert "\n" not in subject_line(s) and "\r" not in subject_line(s)


def test_threshold_formatting() -> None:
    assert [format_threshold(t) for t in (0.8, 0.85, 0.805, 1.0, 12.5)] == ["0.80", "0.85", "0.805", "1.00", "12.50"]


# Structure and headers ---------------------------------------------------------

def test_message_is_text_and_html_with_the_plot_inline(settings: Settings) -> None:
    msg = build_message(passing(), settings)
    assert msg.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in msg.walk()]
    assert types == ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    cid = str(image["Content-ID"]).strip("<>")
    _, html, _ = parts(msg)
    assert f'src="cid:{cid}"' in html
    assert image.get_filename() == "digits_cnn-r-20261124-0.png"


def test_headers(settings: Settings) -> None:
    msg = build_message(passing(), settings)
    assert msg["From"] == "mlchain <ci@acme.example>"
    assert msg["To"] == "ana@example.com, bo@example.com"
    assert msg["X-Mlchain-Run"] == "r-20261124-0001"
    assert re.fullmatch(r"<[^@>]+@acme\.example>", str(msg["Message-ID"]))
    assert msg["Date"]
    assert msg["Subject"] == subject_line(passing())


def test_no_recipients_means_no_to_header(settings: Settings) -> None:
    msg = build_message(summary(recipients=[]), settings)
    assert msg["To"] is None


def test_message_survives_a_round_trip_through_bytes(settings: Settings) -> None:
    msg = build_message(crashed(), settings)
    back = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(msg.as_bytes())
    assert isinstance(back, EmailMessage)
    assert back["Subject"] == msg["Subject"]
    # The wire form has CRLF line ends, and the decoded text keeps them; the words are the same.
    (text, html, png), (text0, html0, png0) = parts(back), parts(msg)
    assert text.replace("\r\n", "\n") == text0 and html.replace("\r\n", "\n") == html0
    assert png == png0


# Content -----------------------------------------------------------------------

def test_success_email_content(settings: Settings) -> None:
    text, html, _ = parts(build_message(passing(), settings))
    for body in (text, html):
        assert "0.9712" in body and "0.80" in body
        assert "gate passed" in body
        # the best trial's params
        assert "learning_rate" in body and "0.00125" in body and "filters" in body
        # every trial, its metric and its MLflow run id
        for metric, run_id in (("0.7412", "run0001aaaa"), ("0.7901", "run0002bbbb"), ("0.9712", "run0003cccc")):
            assert metric in body and run_id in body
        # registration and the champion
        assert "digits_cnn" in body and "version 4" in body and "0.9512" in body
        # the monitor's restarts, not its progress lines
        assert "restarted from epoch 3" in body and "epoch 4/10" not in body
        assert "mlflow ui --backend-store-uri sqlite:////srv/.mlchain/mlflow.db" in body
        # links straight to the runs and the model version in the MLflow UI
        assert "http://mlflow.acme.internal:5000/#/runs/run0003cccc" in body
        assert "http://mlflow.acme.internal:5000/#/models/digits_cnn/versions/4" in body
    assert "now the champion (previous champion: 0.9512)" in text
    assert "moved to this version" in html
    assert "Last lines of the failing training log" not in text
    # the trials table: one row per trial, the best one marked
    rows = re.findall(r"<tr style=\"background:[^\"]+;\">(.*?)</tr>", html, re.DOTALL)
    assert len(rows) == 3
    assert "best" in rows[2] and "best" not in rows[0]
    assert re.search(r"^\*\s+3\s+succeeded\s+0\.9712\s+1\s+2 min 20 s\s+dropout=0.2", text, re.MULTILINE)
    assert re.search(r"^\s+2\s+succeeded\s+0\.7901\s+2\s+1 min 35 s", text, re.MULTILINE)


def test_budget_spent_email_content(settings: Settings) -> None:
    text, html, _ = parts(build_message(budget_spent(), settings))
    for body in (text, html):
        assert "max_trials reached (6)" in body
        assert "0.6100" in body and "0.80" in body
        for n in range(1, 7):
            assert f"run{n:04d}" in body
        assert "version 7" in body
    assert "champion unchanged (the champion has 0.9712)" in text
    assert "unchanged" in html
    assert "the gate was not reached and the budget is spent" in text


def test_failure_email_has_the_tail_of_the_failing_log(settings: Settings) -> None:
    text, html, _ = parts(build_message(crashed(), settings))
    for body in (text, html):
        assert "training failed: code_error" in body and "job3-train" in body
        assert "failed: code_error" in body
        assert "noise line 99" in body            # the tail is there...
        assert "noise line 10\n" not in body      # ...not the whole log
    assert "NameError: name 'modle' is not defined <&>" in text
    pre = re.search(r"<pre[^>]*>(.*?)</pre>", html, re.DOTALL)
    assert pre is not None
    assert "NameError: name &#39;modle&#39; is not defined &lt;&amp;&gt;" in pre.group(1)


def test_html_escapes_hostile_strings(settings: Settings) -> None:
    s = passing()
    s.stop_reason = "<img src=x onerror=alert(1)>"
    s.repo_url = "javascript:alert(1)"
    _, html, _ = parts(build_message(s, settings))
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html  # only web addresses become links


def test_no_secret_reaches_the_message(settings: Settings) -> None:
    s = passing()
    s.tracking_uri = "postgresql://mlflow:db-pass-42@db.acme.internal/mlflow"
    s.repo_url = "https://ghp_tokenABC123@github.com/acme/digits_cnn"
    raw = build_message(s, settings).as_bytes()
    for secret in (*SECRETS, "db-pass-42", "ghp_tokenABC123", "ci-bot", "smtp.acme.example"):
        assert secret.encode() not in raw
    text, _, _ = parts(build_message(s, settings))
    assert "postgresql://mlflow:***@db.acme.internal/mlflow" in text
    assert "https://github.com/acme/digits_cnn" in text


# The plot ----------------------------------------------------------------------

def test_plot_is_a_valid_png(settings: Settings) -> None:
    _, _, png = parts(build_message(passing(), settings))
    assert png is not None and png.startswith(PNG_MAGIC)
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600


@pytest.mark.parametrize("make", [passing, budget_spent, crashed,
                                  lambda: summary(status="failed", failed_job="job1-pull"),
                                  lambda: summary(trials=[TrialRecord(1, {}, "succeeded", float("nan"))])])
def test_plot_draws_every_kind_of_run(make: Any) -> None:
    png = render_plot(make())
    assert png.startswith(PNG_MAGIC)


def test_email_goes_without_the_plot_when_it_cannot_be_drawn(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: RunSummary) -> bytes:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr("mlchain.notify.plot.render_plot", broken)
    msg = build_message(passing(), settings)
    text, html, png = parts(msg)
    assert png is None and "cid:" not in html and "0.9712" in text
    assert build_mod.subject_line(passing()) == msg["Subject"]


def test_a_failure_email_says_what_stopped_the_run_and_how_to_fix_it() -> None:
    failed = summary(status="failed", stop_reason="job2-classify failed: no supported framework",
                     failed_job="job2-classify", trials=[],
                     error={"job": "job2-classify", "message": "no supported framework in the repository",
                            "hint": "import keras or scikit-learn in the entry", "exit_code": 4})
    msg = build_message(failed, Settings(home=Path("/tmp/unused")))
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Error       no supported framework in the repository" in text
    assert "How to fix  import keras or scikit-learn in the entry" in text
    assert "import keras or scikit-learn in the entry" in html


def test_a_passing_run_without_a_saved_model_says_so() -> None:
    note = "no model was saved: the best trial reported accuracy but never called sdk.save_model(model)"
    run = summary(trials=[TrialRecord(1, {}, "succeeded", 0.96, mlflow_run_id="r1")], notes=[note])
    text = build_message(run, Settings(home=Path("/tmp/unused"))).get_body(("plain",)).get_content()
    assert f"Note        {note}" in text
    assert "Registered model" not in text


def test_trial_rows_mark_the_trials_that_meet_the_gate_in_its_direction() -> None:
    s = passing()
    s.direction, s.metric_name, s.threshold = "minimize", "rmse", 0.79
    rows = [build_mod._row(t, s, None) for t in s.trials]
    assert [r.meets_gate for r in rows] == [True, False, False]  # 0.7412 <= 0.79; 0.7901 and 0.97123 are not
    s.direction = "maximize"
    assert [build_mod._row(t, s, None).meets_gate for t in s.trials] == [False, True, True]


def test_the_email_says_which_file_trained_and_where_the_metric_came_from() -> None:
    best = TrialRecord(1, {}, "succeeded", 0.9312, mlflow_run_id="run0001aaaa",
                       metric_source=f"accuracy 0.9312 from model.evaluate(x_test, y_test) at mnist.py:41 {HOSTILE}",
                       model_files=["digits.keras"])
    run = summary(trials=[best], best=best, entry="mnist.py",
                  entry_why="the only file that trains with keras: calls model.fit() at mnist.py:30")
    text, html, _ = parts(build_message(run, Settings(home=Path("/tmp/unused"))))

    assert "Entry       mnist.py (the only file that trains with keras: calls model.fit() at mnist.py:30)" in text
    assert "Metric      accuracy 0.9312 from model.evaluate(x_test, y_test) at mnist.py:41" in text
    assert "Model files digits.keras (written by the code, kept in MLflow)" in text
    assert "model.evaluate(x_test, y_test) at mnist.py:41 &lt;script&gt;" in html and HOSTILE not in html
    assert "<code>mnist.py</code>" in html
    assert "  metric: accuracy 0.9312 from model.evaluate(x_test, y_test) at mnist.py:41" in run.explain()
    assert "  entry mnist.py (the only file that trains with keras" in run.explain()
