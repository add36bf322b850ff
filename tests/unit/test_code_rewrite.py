"""The edges of the literals found in the code: reading what the entry imports, the trial's
rewritten copy (the pushed repository untouched), job2's choice of the code's literals over
nothing, and the email's winning diff."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from mlchain import code_rewrite, literals
from mlchain.engine.jobs import _tune_literals_found
from mlchain.notify import build_message
from mlchain.repo_config import RepoConfig
from mlchain.state import StateStore
from mlchain.summary import RunSummary, TrialRecord

MAIN = "from pkg.model import build\nfrom .helpers import load\nimport numpy\n\nbuild().fit(x, y, epochs=2)\n"
MODEL = "# the model\ndef build():\n    return Sequential([Dense(8), Dense(10)])  # tiny\n"


def repository(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "main.py").write_text(MAIN)
    (root / "helpers.py").write_text("def load():\n    return RandomForestClassifier(max_depth=3)\n")
    (root / "src" / "pkg" / "__init__.py").write_text("")
    (root / "src" / "pkg" / "model.py").write_text(MODEL)
    (root / "data.csv").write_text("1,2\n")
    return root


def test_the_entry_and_the_repository_modules_it_imports_are_read(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo")
    outside = tmp_path / "outside.py"
    outside.write_text("f(epochs=99)\n")
    (repo / "numpy.py").symlink_to(outside)  # a link out of the repository is never read
    (repo / "linked").mkdir()
    (repo / "linked" / "real.py").write_text("f(max_iter=7)\n")
    (repo / "lib").symlink_to(repo / "linked")  # nor a module through a linked folder
    (repo / "main.py").write_text(MAIN + "import lib.real\nimport linked.real\n")
    sources = code_rewrite.read_sources(repo, "main.py")
    assert list(sources) == ["main.py", "src/pkg/model.py", "helpers.py", "linked/real.py"]
    assert literals.find(sources).params() == {"epochs": 2, "dense_1.units": 8, "dense_blocks": 1, "max_depth": 3}


def test_a_trial_trains_on_a_rewritten_copy_and_the_pushed_code_is_untouched(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo")
    (repo / "link").symlink_to("/etc/passwd")
    found = code_rewrite.find(repo, "main.py")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and not p.is_symlink()}

    same = tmp_path / "trials" / "1"
    assert code_rewrite.trial_copy(repo, "main.py", found, found.params(), same) == repo
    assert code_rewrite.kept_changes(same) == ([], "") and code_rewrite.diff_file(same) is None

    trial = tmp_path / "trials" / "2"
    copy = code_rewrite.trial_copy(repo, "main.py", found, {**found.params(), "dense_1.units": 64}, trial)
    assert copy == trial / "code"
    assert (copy / "src" / "pkg" / "model.py").read_text() == MODEL.replace("Dense(8)", "Dense(64)")
    assert (copy / "main.py").read_text() == MAIN and (copy / "data.csv").read_text() == "1,2\n"
    assert (copy / "link").is_symlink()  # copied as a link, never followed
    changes, diff = code_rewrite.kept_changes(trial)
    assert changes == ["Dense(8) -> Dense(64) at src/pkg/model.py:3"]
    assert diff.splitlines()[:2] == ["--- a/src/pkg/model.py", "+++ b/src/pkg/model.py"]
    assert "-    return Sequential([Dense(8), Dense(10)])  # tiny" in diff.splitlines()
    assert code_rewrite.diff_file(trial) == trial / "code.diff"
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and not p.is_symlink()} == before


def _run(tmp_path: Path, files: dict[str, str], cfg: RepoConfig) -> tuple[RepoConfig, StateStore, Any]:
    from mlchain.config import Settings

    settings = Settings(home=tmp_path / "home")
    src = tmp_path / "src"
    src.mkdir(parents=True)
    for name, text in files.items():
        (src / name).write_text(text)
    store = StateStore(settings.state_db)
    store.create_run("r1", "file:///x", "x", None, None, status="running")
    store.update_run("r1", config=cfg.model_dump(mode="json"))
    lines: list[str] = []
    tuned = _tune_literals_found(settings, store, "r1", cfg, "sklearn", src, cfg.entry or "train.py", lines.append)
    return tuned, store, settings


FOREST = "clf = RandomForestClassifier(n_estimators=2, max_depth=1)\n"


def test_job2_tunes_the_code_s_literals_when_the_repository_gives_no_params(tmp_path: Path) -> None:
    tuned, store, settings = _run(tmp_path, {"train.py": FOREST}, RepoConfig())
    assert tuned.params == {"n_estimators": 2, "max_depth": 1}
    assert set(tuned.search) == {"n_estimators", "max_depth"}
    assert store.get_run("r1").config["params"] == tuned.params  # job4 searches the run's config
    assert code_rewrite.load_found(settings.runs_dir / "r1") is not None


def test_the_sdk_way_wins_over_the_code_s_literals(tmp_path: Path) -> None:
    reads = "from mlchain import sdk\np = sdk.params()\n" + FOREST
    tuned, _, settings = _run(tmp_path, {"train.py": reads}, RepoConfig())
    assert tuned.params == {} and tuned.search == {}
    assert code_rewrite.load_found(settings.runs_dir / "r1") is None
    own = RepoConfig(params={"n_estimators": 5})
    tuned, _, settings = _run(tmp_path / "own", {"train.py": FOREST}, own)
    assert tuned == own and code_rewrite.load_found(settings.runs_dir / "r1") is None


def test_the_email_shows_the_winning_changes_and_diff_escaped_in_html() -> None:
    from mlchain.config import Settings

    diff = '--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-Dense(8)  # "<b>"\n+Dense(64)  # "<b>"\n'
    best = TrialRecord(2, {"dense_1.units": 64}, "succeeded", 0.93, mlflow_run_id="r2",
                       code_changes=["Dense(8) -> Dense(64) at train.py:1"], code_diff=diff)
    summary = RunSummary(run_id="r", repo_name="x", repo_url="https://example.com/x", ref="main", commit="abc",
                         status="passed", stop_reason="gate passed", metric_name="accuracy", threshold=0.8,
                         direction="maximize", framework="keras",
                         trials=[TrialRecord(1, {"dense_1.units": 8}, "succeeded", 0.4), best], best=best,
                         recipients=["a@example.com"])
    msg = BytesParser(policy=policy.default).parsebytes(bytes(build_message(summary, Settings())))
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Code changes of the best trial (2)" in text
    assert "  Dense(8) -> Dense(64) at train.py:1\n" in text and diff.rstrip("\n") in text
    html = msg.get_body(("html",)).get_content()
    assert "Dense(8) -&gt; Dense(64) at train.py:1" in html
    assert "+Dense(64)  # &#34;&lt;b&gt;&#34;" in html and "<b>\"" not in html
    assert json.loads(json.dumps(summary.to_dict()))["best"]["code_changes"] == best.code_changes


def test_a_rewritten_copy_that_raises_is_a_failed_trial_of_the_search_not_the_end_of_the_run() -> None:
    from mlchain import gate

    budget = gate.Budget(max_trials=6, max_minutes=60, patience=3)
    pushed_ok = gate.TrialResult(1, 0.3, None)
    broke = gate.TrialResult(2, None, code_rewrite.failure_for_gate("code_error", rewritten=True))
    assert gate.decide([pushed_ok, broke], 0.8, budget, 1.0).action == "retry"
    own_error = gate.TrialResult(1, None, code_rewrite.failure_for_gate("code_error", rewritten=False))
    assert gate.decide([own_error], 0.8, budget, 1.0).status == "failed"  # the pushed code is broken
    assert code_rewrite.failure_for_gate("contract_error", rewritten=True) == "contract_error"
