"""mlchain-train on code that never calls the sdk: the held-out metric, where it came from, the
model and the files the code wrote, taken inside a real training process (scikit-learn)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"

SPLIT = """\
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
clf = LogisticRegression(max_iter=2000)
clf.fit(X_train, y_train)
"""


def expected_accuracy() -> float:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    return float(LogisticRegression(max_iter=2000).fit(X_train, y_train).score(X_test, y_test))


class Trained:
    def __init__(self, done: subprocess.CompletedProcess[str], output: Path) -> None:
        self.done = done
        self.output = output

    @property
    def log(self) -> str:
        return self.done.stdout + self.done.stderr

    def json(self, name: str) -> Any:
        return json.loads((self.output / name).read_text())


def train(tmp_path: Path, repo: Path, entry: str, metric: str = "accuracy") -> Trained:
    """mlchain-train as a runner starts it: its own process, the contract's environment."""
    output = tmp_path / "output"
    params = tmp_path / "params.json"
    params.write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    env.update(MLCHAIN_REPO_DIR=str(repo), MLCHAIN_ENTRY=entry, MLCHAIN_OUTPUT_DIR=str(output),
               MLCHAIN_PARAMS_FILE=str(params), MLCHAIN_METRIC=metric, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-m", "mlchain.train_entry"], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    return Trained(done, output)


def repo_of(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = tmp_path / "repo"
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    return repo


def test_held_out_accuracy_is_taken_and_training_accuracy_never_counts(tmp_path: Path) -> None:
    code = SPLIT + ("print('test', accuracy_score(y_test, clf.predict(X_test)))\n"
                    "print('train', accuracy_score(y_train, clf.predict(X_train)))\n"
                    "print('train score', clf.score(X_train, y_train))\n")
    run = train(tmp_path, repo_of(tmp_path, {"fit.py": code}), "fit.py")

    assert run.done.returncode == 0, run.log
    assert run.json("metrics.json") == {"accuracy": pytest.approx(expected_accuracy(), abs=1e-12)}
    provenance = run.json("provenance.json")
    assert provenance["source"] == "held-out"
    assert provenance["call"] == "accuracy_score(y_test, clf.predict(X_test))"
    assert provenance["where"] == "fit.py:9"
    assert provenance["text"] == f"accuracy {expected_accuracy():.4g} from accuracy_score(y_test," \
                                 " clf.predict(X_test)) at fit.py:9"


def test_only_training_accuracy_fails_saying_what_was_looked_for_and_the_line_to_add(tmp_path: Path) -> None:
    run = train(tmp_path, repo_of(tmp_path, {"fit.py": SPLIT + "print(clf.score(X_train, y_train))\n"}), "fit.py")

    assert run.done.returncode == 3, run.log
    said = run.done.stderr.strip().splitlines()[-1]
    assert said.startswith("mlchain-train: error: no held-out accuracy found: looked for sdk.report({...});"
                           " sklearn.metrics calls")
    assert "found only training-set accuracy (accuracy 1 from clf.score(X_train, y_train) at fit.py:9)," \
           " which never counts" in said
    assert said.endswith("sdk.report({'accuracy': <accuracy on held-out data>})")
    assert not (run.output / "metrics.json").exists()
    assert not (run.output / "model").exists()


def test_sdk_report_wins_over_what_the_hooks_saw(tmp_path: Path) -> None:
    code = SPLIT + ("print(accuracy_score(y_test, clf.predict(X_test)))\n"
                    "from mlchain import sdk\nsdk.report({'accuracy': 0.5, 'f1': 0.25})\n")
    run = train(tmp_path, repo_of(tmp_path, {"fit.py": code}), "fit.py")

    assert run.done.returncode == 0, run.log
    assert run.json("metrics.json") == {"accuracy": 0.5, "f1": 0.25}
    provenance = run.json("provenance.json")
    assert (provenance["source"], provenance["where"]) == ("sdk.report", "fit.py:11")
    assert not (run.output / "model").exists()  # the code chose not to save one


def test_the_model_the_metric_is_of_is_saved_and_files_the_code_wrote_are_kept(tmp_path: Path) -> None:
    code = SPLIT + ("import joblib, pickle\n"
                    "joblib.dump(clf, 'clf.joblib')\n"
                    "with open('old.pkl', 'wb') as fh: pickle.dump(1, fh)\n"
                    "print(accuracy_score(y_test, clf.predict(X_test)))\n")
    repo = repo_of(tmp_path, {"fit.py": code, "data/ref.pkl": "not written by this run"})
    os.utime(repo / "data" / "ref.pkl", (0, 0))
    run = train(tmp_path, repo, "fit.py")

    assert run.done.returncode == 0, run.log
    assert run.json("provenance.json")["model_files"] == ["clf.joblib", "old.pkl"]
    import joblib
    import mlflow.sklearn
    from sklearn.datasets import load_digits

    X, _ = load_digits(return_X_y=True)
    saved = mlflow.sklearn.load_model(str(run.output / "model"))
    written = joblib.load(run.output / "artifacts" / "model-files" / "clf.joblib")
    assert type(saved).__name__ == "LogisticRegression"
    assert np.array_equal(saved.predict(X), written.predict(X))
    assert not (run.output / "artifacts" / "model-files" / "data").exists()


def test_a_module_of_a_src_layout_scores_and_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "package_layout"
    shutil.copytree(CORPUS / "package_layout", repo)
    run = train(tmp_path, repo, "main.py")

    assert run.done.returncode == 0, run.log
    provenance = run.json("provenance.json")
    assert (provenance["call"], provenance["where"]) == ("clf.score(X, y)", "src/pkg/model.py:17")
    assert run.json("metrics.json")["accuracy"] > 0.9
    assert provenance["model"] == "Pipeline"


def test_a_notebook_runs_cell_by_cell_and_is_kept_with_its_outputs(tmp_path: Path) -> None:
    repo = tmp_path / "notebook_only"
    shutil.copytree(CORPUS / "notebook_only", repo)
    run = train(tmp_path, repo, "digits_svm.ipynb")

    assert run.done.returncode == 0, run.log
    provenance = run.json("provenance.json")
    assert provenance["where"] == "digits_svm.ipynb[cell 6]:3"
    assert provenance["call"] == "accuracy_score(y_test, predicted)"
    executed = json.loads((run.output / "artifacts" / "notebook" / "digits_svm.ipynb").read_text())
    cell = executed["cells"][5]
    printed = "".join(o["text"] for o in cell["outputs"] if o["output_type"] == "stream")
    assert f"accuracy: {provenance['value']}" in printed
    assert [c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code"] == [1, 2, 3, 4]


def test_a_notebook_cell_that_raises_is_kept_with_its_error(tmp_path: Path) -> None:
    cells = ["x = 1\ndisplay(x)", "print('before')\nraise ValueError('bad cell')"]
    nb = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []} for c in cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    run = train(tmp_path, repo_of(tmp_path, {"nb.ipynb": json.dumps(nb)}), "nb.ipynb")

    assert run.done.returncode == 1
    assert 'File "nb.ipynb[cell 2]", line 2' in run.done.stderr
    executed = json.loads((run.output / "artifacts" / "notebook" / "nb.ipynb").read_text())
    assert executed["cells"][0]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    outputs = executed["cells"][1]["outputs"]
    assert outputs[0] == {"output_type": "stream", "name": "stdout", "text": "before\n"}
    assert (outputs[1]["ename"], outputs[1]["evalue"]) == ("ValueError", "bad cell")


KERAS_TRAIN_EVALUATE = """\
import numpy as np
import keras
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype("float32")
x_train, y_train, x_val, y_val = X[:1400], y[:1400], X[1400:], y[1400:]
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(x_train, y_train, epochs=3, validation_data=(x_val, y_val), verbose=0)
print("train", model.evaluate(x_train, y_train, verbose=0))
print("last val", history.history["val_accuracy"][-1])
"""


@pytest.mark.slow
def test_keras_validation_beats_an_evaluation_on_the_training_data(tmp_path: Path) -> None:
    run = train(tmp_path, repo_of(tmp_path, {"net.py": KERAS_TRAIN_EVALUATE}), "net.py")

    assert run.done.returncode == 0, run.log
    provenance = run.json("provenance.json")
    assert provenance["source"] == "validation"
    assert provenance["where"] == "net.py:10"
    assert provenance["call"].startswith("the last epoch's val_accuracy of model.fit(x_train, y_train, epochs=3")
    printed = next(line for line in run.done.stdout.splitlines() if line.startswith("last val "))
    assert run.json("metrics.json")["accuracy"] == pytest.approx(float(printed.split()[-1]), abs=1e-9)
    assert provenance["model"] == "Sequential"
