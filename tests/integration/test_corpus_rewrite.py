"""The weak repositories of the corpus (tests/corpus/), pushed as people write them: no mlchain.yaml,
no sdk.params(). Their baseline fails the gate; the chain finds the hyperparameter literals in
their code, trains each later trial on a rewritten copy, and passes within the budget. The
user's repository is never modified; each trial's diff is an MLflow artifact and the email
shows the winning one. The metric is captured from the code's own evaluation (mlchain.capture).
"""

from __future__ import annotations

import email
import re
import shutil
from email import policy
from pathlib import Path

import pytest
from docker_support import built_image, docker_settings, require_docker
from helpers import git

from mlchain.engine.chain import run_chain

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MAX_TRIALS = 8


def pushed_copy(name: str, dest: Path) -> tuple[Path, str]:
    """The corpus repository as a fresh git repository (its entry's text, as committed)."""
    shutil.copytree(CORPUS / name, dest)
    entry = dest / "train.py"
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "training code")
    return dest, entry.read_text()


def shape(line: str) -> str:
    """A line with its numbers blanked (and a functional chain's input read as its variable: a
    repeated first block reads the chain's variable), to compare code up to its literals."""
    return re.sub(r"\d+(?:\.\d*)?(?:e-?\d+)?", "N", line).replace("(inputs)", "(x)")


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return removed, added


@pytest.mark.parametrize("name,framework,must_change", [
    # the constants: one epoch at a learning rate too small to learn anything
    ("keras_functional_constants", "keras", [r"^EPOCHS = 1$", r"^LEARNING_RATE = 1e-5$"]),
    # a forest of two stumps
    ("sklearn_forest_shallow", "sklearn",
     [r"^clf = RandomForestClassifier\(n_estimators=2, max_depth=1, random_state=0\)$"]),
    # two filters and three units: another block or wider layers
    ("keras_sequential_needs_block", "keras", [r'^    layers.Dense\(3, activation="relu"\),  # small and fast$']),
])
def test_a_weak_repository_passes_on_rewritten_copies_of_its_own_code(
        tmp_path: Path, name: str, framework: str, must_change: list[str]) -> None:
    from mlflow.tracking import MlflowClient

    client = require_docker()
    built_image(framework)
    repo, pushed = pushed_copy(name, tmp_path / name)
    settings = docker_settings(tmp_path / "home", max_trials=MAX_TRIALS, monitor_interval_s=0.5)
    summary = run_chain(settings, str(repo), ref="main", pusher_email="p@example.com", live=False)
    for container in client.containers.list(all=True, filters={"label": f"io.mlchain.run={summary.run_id}"}):
        container.remove(force=True)

    assert summary.status == "passed", summary.explain()
    assert summary.framework == framework
    assert 2 <= len(summary.trials) <= MAX_TRIALS
    first, best = summary.trials[0], summary.best
    assert best is not None and best.number > 1
    assert first.metric is not None and first.metric < 0.80    # the pushed code fails the gate
    assert first.code_diff == "" and first.code_changes == []   # trial 1 trains the pushed code itself

    # the winning diff rewrote the weak literals, and only literal lines and whole blocks
    removed, added = changed_lines(best.code_diff)
    for pattern in must_change:
        assert any(re.match(pattern, line) for line in removed), (pattern, best.code_diff)
    assert best.code_diff.startswith("--- a/train.py\n+++ b/train.py\n")
    assert {shape(line) for line in added} <= {shape(line) for line in pushed.splitlines()}
    assert best.code_changes and all(" -> " in c and " at train.py:" in c for c in best.code_changes)

    # the user's repository is untouched
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "train.py").read_text() == pushed

    # the diff is the MLflow artifact of the winning trial (and of no trial that ran the pushed code)
    mlflow = MlflowClient(tracking_uri=settings.resolved_tracking_uri)
    assert "code.diff" in [a.path for a in mlflow.list_artifacts(best.mlflow_run_id)]
    local = mlflow.download_artifacts(best.mlflow_run_id, "code.diff", str(tmp_path / "artifact"))
    assert Path(local).read_text() == best.code_diff
    assert "code.diff" not in [a.path for a in mlflow.list_artifacts(first.mlflow_run_id)]
    assert mlflow.get_run(best.mlflow_run_id).data.tags["mlchain.code_changes"] == "\n".join(best.code_changes)

    # the email shows the winning changes in short form and the full diff
    assert summary.email is not None
    msg = email.message_from_bytes(Path(summary.email["path"]).read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    for change in best.code_changes:
        assert f"  {change}\n" in text
    assert best.code_diff.rstrip("\n") in text
