"""The corpus (tests/corpus/): repositories written the way people write training code, none of
them knowing mlchain (no mlchain.yaml, no sdk), each pushed through the whole chain unmodified.
The supported ones pass the gate with the metric's provenance in the summary, MLflow and the
email; the unsupported ones end in a failure email naming what was found.

scikit-learn repositories train with the process runner (as the other chain tests do); the
Keras ones in the real keras image (docker, read-only repository)."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from helpers import make_git_repo

from mlchain.config import Settings, load_settings
from mlchain.engine.chain import run_chain
from mlchain.summary import RunSummary

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def pushed(tmp_path: Path, name: str) -> Path:
    """The corpus repository as a git repository of its own (what a push brings)."""
    source = CORPUS / name
    files = {p.relative_to(source).as_posix(): p.read_text() for p in sorted(source.rglob("*")) if p.is_file()
             and "__pycache__" not in p.parts}
    assert "mlchain.yaml" not in files
    return make_git_repo(tmp_path / name, files=files)


def process_settings(home: Path) -> Settings:
    return load_settings({"home": home, "runner": "process"}, env={})


def run(settings: Settings, repo: Path) -> RunSummary:
    return run_chain(settings, str(repo), ref="main", pusher_email="p@example.com", live=False)


def email_text(summary: RunSummary) -> str:
    assert summary.email is not None
    msg = email.message_from_bytes(Path(summary.email["path"]).read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return f"Subject: {msg['Subject']}\n" + str(body.get_content()).replace("\r\n", "\n")


def artifacts(settings: Settings, mlflow_run_id: str, path: str = "") -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.resolved_tracking_uri)
    return {a.path for a in client.list_artifacts(mlflow_run_id, path)}


def run_tags(settings: Settings, mlflow_run_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(tracking_uri=settings.resolved_tracking_uri).get_run(mlflow_run_id).data.tags)


def assert_passed_with(summary: RunSummary, settings: Settings, *, entry: str, framework: str, call: str,
                       where: str) -> None:
    assert summary.status == "passed", summary.explain()
    assert (summary.entry, summary.framework) == (entry, framework)
    best = summary.best
    assert best is not None and best.metric is not None and best.mlflow_run_id
    source = f"accuracy {best.metric:.4g} from {call} at {where}"
    assert best.metric_source == source
    assert run_tags(settings, best.mlflow_run_id)["mlchain.metric_source"] == source
    assert f"  metric: {source}" in summary.explain()
    text = email_text(summary)
    assert f"Metric      {source}\n" in text
    assert f"Entry       {entry} (" in text
    assert summary.registered is not None and summary.registered["version"] == 1, summary.explain()
    assert "model/MLmodel" in artifacts(settings, best.mlflow_run_id, "model")


# --- scikit-learn, the process runner --------------------------------------------------------------

def test_a_script_that_prints_accuracy_score_passes_and_its_model_file_is_kept(tmp_path: Path) -> None:
    settings = process_settings(tmp_path / "home")
    summary = run(settings, pushed(tmp_path, "sklearn_print_accuracy"))

    assert_passed_with(summary, settings, entry="forest.py", framework="sklearn",
                       call="accuracy_score(y_test, clf.predict(X_test))", where="forest.py:17")
    assert summary.entry_why == ("the only file that trains with sklearn: calls main() at forest.py:22,"
                                 " which calls clf.fit() at forest.py:14")
    assert summary.best is not None and summary.best.mlflow_run_id
    assert "model-files/forest.joblib" in artifacts(settings, summary.best.mlflow_run_id, "model-files")
    assert "Model files forest.joblib (written by the code, kept in MLflow)" in email_text(summary)


def test_a_package_layout_trains_through_the_modules_main_imports(tmp_path: Path) -> None:
    settings = process_settings(tmp_path / "home")
    summary = run(settings, pushed(tmp_path, "package_layout"))

    assert_passed_with(summary, settings, entry="main.py", framework="sklearn", call="clf.score(X, y)",
                       where="src/pkg/model.py:17")


def test_a_notebook_only_repository_runs_its_notebook_and_keeps_it_executed(tmp_path: Path) -> None:
    settings = process_settings(tmp_path / "home")
    summary = run(settings, pushed(tmp_path, "notebook_only"))

    assert_passed_with(summary, settings, entry="digits_svm.ipynb", framework="sklearn",
                       call="accuracy_score(y_test, predicted)", where="digits_svm.ipynb[cell 6]:3")
    assert summary.best is not None and summary.best.mlflow_run_id
    assert "notebook/digits_svm.ipynb" in artifacts(settings, summary.best.mlflow_run_id, "notebook")


UNSUPPORTED = {
    # name: (exit code, the failed job, words the email must hold)
    "torch_only": (4, "job2-classify", ["unsupported framework: the code builds the model with torch",
                                        "torch in mnist_torch.py:1 (import torch)"]),
    "lightgbm_only": (4, "job2-classify", ["unsupported framework: the code builds the model with lightgbm",
                                           "lightgbm in boost.py:1 (import lightgbm as lgb)"]),
    "no_model": (5, "job2-classify", ["no file trains a model: read 1 Python file(s) and notebook(s)",
                                      "from sklearn.datasets import load_digits at explore.py:3 (sklearn)",
                                      "entry: path/to/script.py"]),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_an_unsupported_repository_ends_in_a_failure_email_naming_what_was_found(tmp_path: Path,
                                                                                  name: str) -> None:
    code, job, words = UNSUPPORTED[name]
    settings = process_settings(tmp_path / "home")
    summary = run(settings, pushed(tmp_path, name))

    assert summary.status == "failed" and summary.failed_job == job, summary.explain()
    assert summary.exit_code == code
    assert summary.trials == []
    text = " ".join(email_text(summary).split())  # the email wraps long lines
    assert "FAILED" in text.splitlines()[0]
    for word in words:
        assert word in text, text


def test_two_scripts_that_train_end_in_a_failure_email_with_the_entry_line_to_add(tmp_path: Path) -> None:
    forest = (CORPUS / "sklearn_print_accuracy" / "forest.py").read_text()
    repo = make_git_repo(tmp_path / "two", files={"forest.py": forest, "forest_v2.py": forest})
    settings = process_settings(tmp_path / "home")
    summary = run(settings, repo)

    assert (summary.status, summary.failed_job, summary.exit_code) == ("failed", "job2-classify", 5)
    assert summary.trials == []
    text = email_text(summary)
    assert "2 files train a model; which one is the entry?" in text
    assert "forest_v2.py (calls main() at forest_v2.py:22, which calls clf.fit() at forest_v2.py:14)" in text
    assert "How to fix  name it in mlchain.yaml: `entry: forest.py` (or another of those above)" in text


# --- Keras, in the keras image ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_settings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from docker_support import built_image, docker_settings, require_docker

    require_docker()
    built_image("keras")

    def make(home: Path) -> Settings:
        return docker_settings(home, monitor_interval_s=0.5, max_trials=1)

    return make


KERAS = {
    # name: (entry, the call its metric comes from, where)
    "keras_evaluate_script": ("mnist.py", "model.evaluate(x_test, y_test, verbose=0)", "mnist.py:24"),
    "keras_beside_torch_notebooks": (
        "train_keras.py", ("the last epoch's val_sparse_categorical_accuracy of model.fit(x_train, y_train,"
                           " epochs=15, batch_size=64, validation_data=(x_val, y_val), verbose=2)"),
        "train_keras.py:21"),
    "keras_sklearn_wrapper": ("search.py", "grid.score(X_test, y_test)", "search.py:44"),
}


@pytest.mark.docker
@pytest.mark.parametrize("name", list(KERAS))
def test_a_keras_repository_trains_unmodified_in_the_keras_image(tmp_path: Path, keras_settings: Any,
                                                                  name: str) -> None:
    entry, call, where = KERAS[name]
    settings = keras_settings(tmp_path / "home")
    summary = run(settings, pushed(tmp_path, name))

    assert_passed_with(summary, settings, entry=entry, framework="keras", call=call, where=where)
    assert summary.best is not None and summary.best.runner == "docker"
    if name == "keras_evaluate_script":  # written beside the code, in a read-only mount: kept all the same
        assert summary.best.mlflow_run_id
        assert "model-files/digits.keras" in artifacts(settings, summary.best.mlflow_run_id, "model-files")
