"""Finding the entry (the file that trains) and deciding the framework from it: pure, on
in-memory sources, plus the corpus repositories read from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlchain.detect import (
    EntryChoice,
    ParsedSource,
    choose_entry,
    classify_entry,
    classify_repo,
    evidence_in,
    module_names,
    parse_file,
)
from mlchain.detect.entry import is_test_or_tooling
from mlchain.errors import ClassifyError, ContractError

CORPUS = Path(__file__).resolve().parents[1] / "corpus"

SKLEARN_FIT = """\
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
X, y = load_digits(return_X_y=True)
clf = LogisticRegression(max_iter=500)
clf.fit(X, y)
"""
KERAS_FIT = """\
import keras
model = keras.Sequential([keras.layers.Dense(10)])
model.compile(loss="mse")
model.fit(x, y)
"""
TORCH_LIGHTNING = """\
import lightning as L
import torch
class Net(torch.nn.Module):
    pass
trainer = L.Trainer()
trainer.fit(Net())
"""


def notebook(*cells: str) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []} for c in cells],
                       "metadata": {"kernelspec": {"language": "python"}}, "nbformat": 4, "nbformat_minor": 5})


def parsed(files: dict[str, str]) -> tuple[list[ParsedSource], dict[str, list]]:
    sources = []
    for path, text in files.items():
        source, skipped = parse_file(path, text.encode())
        assert source is not None and not skipped, skipped
        sources.append(source)
    return sources, {s.path: evidence_in(s) for s in sources}


def choose(files: dict[str, str]) -> EntryChoice | None:
    sources, reasons = parsed(files)
    return choose_entry(sources, reasons)


def test_the_only_file_that_fits_is_the_entry_and_says_where_it_fits() -> None:
    choice = choose({"prepare.py": "import pandas as pd\ndf = pd.read_csv('x.csv')\n", "forest.py": SKLEARN_FIT})
    assert choice is not None
    assert choice.entry == "forest.py"
    assert choice.why == "the only file that trains with sklearn: calls clf.fit() at forest.py:5"


def test_a_function_that_is_only_defined_trains_nothing_until_main_calls_it() -> None:
    library = "from sklearn.svm import SVC\n\ndef train(X, y):\n    clf = SVC()\n    clf.fit(X, y)\n    return clf\n"
    script = "from lib import train\n\nif __name__ == '__main__':\n    train(X, y)\n"
    choice = choose({"lib.py": library, "run.py": script})
    assert choice is not None and choice.entry == "run.py"
    assert choice.why.endswith("calls train() of lib.py at run.py:4, which calls clf.fit() at lib.py:5")
    assert choice.files == ("run.py", "lib.py")
    # a script that defines main() but never calls it trains nothing
    assert choose({"lib.py": library, "run.py": "from lib import train\n\ndef main():\n    train(1, 2)\n"}) is None


def test_modules_of_a_src_layout_are_followed_to_any_depth() -> None:
    files = {
        "main.py": "import pkg.steps as steps\nsteps.run()\n",
        "src/pkg/__init__.py": "",
        "src/pkg/steps.py": "from .model import fit_model\n\ndef run():\n    return fit_model()\n",
        "src/pkg/model.py": "from sklearn.tree import DecisionTreeClassifier\n\ndef fit_model():\n"
                            "    return DecisionTreeClassifier().fit([[0]], [0])\n",
    }
    choice = choose(files)
    assert choice is not None and choice.entry == "main.py"
    assert "which calls fit_model() of src/pkg/model.py at src/pkg/steps.py:4" in choice.why
    assert choice.files == ("main.py", "src/pkg/steps.py", "src/pkg/model.py")
    assert module_names("src/pkg/model.py") == ["src.pkg.model", "pkg.model", "model"]
    assert module_names("src/pkg/__init__.py") == ["src.pkg", "pkg"]


def test_train_py_is_preferred_when_it_trains_and_tests_never_are_entries() -> None:
    choice = choose({"train.py": SKLEARN_FIT, "other.py": SKLEARN_FIT, "tests/test_fit.py": SKLEARN_FIT,
                     "test_smoke.py": SKLEARN_FIT, "setup.py": SKLEARN_FIT})
    assert choice is not None and choice.entry == "train.py"
    assert choice.why.startswith("train.py, the default name")
    assert [c.path for c in choice.candidates] == ["other.py", "train.py"]
    assert is_test_or_tooling("pkg/tests/helpers.py") and not is_test_or_tooling("latest/train.py")


def test_a_script_beside_notebooks_that_also_fit_is_the_entry() -> None:
    choice = choose({"explore.ipynb": notebook(SKLEARN_FIT), "fit_model.py": SKLEARN_FIT})
    assert choice is not None and choice.entry == "fit_model.py"
    assert choice.why.startswith("the only script that trains, beside 1 notebook(s)")


def test_notebook_calls_are_located_by_cell() -> None:
    choice = choose({"digits.ipynb": notebook("import numpy as np", SKLEARN_FIT)})
    assert choice is not None and choice.entry == "digits.ipynb"
    assert choice.why.endswith("calls clf.fit() at digits.ipynb[cell 2]:5")


def test_supported_frameworks_win_over_unsupported_ones() -> None:
    files = {"keras_week3.py": KERAS_FIT, "week1.ipynb": notebook(TORCH_LIGHTNING),
             "week2.ipynb": notebook(TORCH_LIGHTNING)}
    choice = choose(files)
    assert choice is not None and choice.entry == "keras_week3.py"
    assert choice.why.endswith("2 other file(s) train with torch, not supported")


def test_two_scripts_that_train_are_ambiguous_and_the_error_says_what_to_add() -> None:
    with pytest.raises(ContractError) as caught:
        choose({"a.py": SKLEARN_FIT, "b.py": KERAS_FIT})
    assert caught.value.exit_code == 5
    assert caught.value.reason.splitlines() == [
        "2 files train a model; which one is the entry?",
        "  a.py (calls clf.fit() at a.py:5)",
        "  b.py (calls model.fit() at b.py:4)",
    ]
    assert caught.value.hint == "name it in mlchain.yaml: `entry: a.py` (or another of those above)"


def test_without_a_file_that_trains_train_py_is_still_the_default() -> None:
    choice = choose({"train.py": "from mlchain import sdk\nimport sklearn\nsdk.report({'accuracy': 1})\n"})
    assert choice is not None and (choice.entry, choice.found) == ("train.py", False)


# --- from disk: the corpus -------------------------------------------------------------------

def test_the_framework_comes_from_the_entry_not_the_whole_repository() -> None:
    repo = CORPUS / "keras_beside_torch_notebooks"
    with pytest.raises(ClassifyError, match="unsupported framework: the code builds the model with torch"):
        classify_repo(repo)  # the notebooks outweigh the script
    choice, classification = classify_entry(repo, None)
    assert choice.entry == "train_keras.py"
    assert classification.framework == "keras"
    assert {r.file for r in classification.reasons} == {"train_keras.py"}


def test_a_package_layout_is_decided_by_the_modules_main_imports() -> None:
    choice, classification = classify_entry(CORPUS / "package_layout", None)
    assert choice.entry == "main.py"
    assert choice.files == ("main.py", "src/pkg/data.py", "src/pkg/model.py")
    assert classification.framework == "sklearn"
    assert "tests/test_model.py" not in {c.path for c in choice.candidates}


def test_an_entry_named_in_mlchain_yaml_is_taken_as_named(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(SKLEARN_FIT)
    (tmp_path / "b.py").write_text(KERAS_FIT)
    choice, classification = classify_entry(tmp_path, "b.py")
    assert (choice.entry, choice.why, classification.framework) == ("b.py", "entry: in mlchain.yaml", "keras")


def test_a_repository_where_nothing_trains_says_what_was_found() -> None:
    with pytest.raises(ContractError) as caught:
        classify_entry(CORPUS / "no_model", None)
    message = caught.value.reason
    assert message.startswith("no file trains a model: read 1 Python file(s) and notebook(s), and none calls"
                              " evaluate, fit, fit_generator, partial_fit, train_on_batch")
    assert "found from sklearn.datasets import load_digits at explore.py:3 (sklearn)" in message
    assert "entry: path/to/script.py" in (caught.value.hint or "")


@pytest.mark.parametrize(("name", "found"), [("torch_only", "torch in mnist_torch.py:1"),
                                             ("lightgbm_only", "lightgbm in boost.py:1")])
def test_unsupported_repositories_name_the_framework_found(name: str, found: str) -> None:
    with pytest.raises(ClassifyError) as caught:
        classify_entry(CORPUS / name, None)
    assert caught.value.reason.startswith("unsupported framework")
    assert found in caught.value.reason
