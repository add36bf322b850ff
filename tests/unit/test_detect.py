"""The classifier: small repositories written here, the decision tested without I/O, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlchain.detect import (
    CLOSE_RATIO,
    IMPORT,
    MODEL_BUILDING,
    OVERRIDE,
    REQUIREMENT,
    USAGE,
    WEAKER_EVIDENCE,
    Classification,
    ParsedSource,
    Reason,
    Requirement,
    classify_repo,
    decide,
    neutralise_magics,
    parse_python,
    scan_repo,
    scanning,
    weigh,
)
from mlchain.errors import ClassifyError, ConfigError
from mlchain.repo_config import load_repo_config


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def notebook(*cells: tuple[str, str]) -> str:
    return json.dumps({
        "cells": [{"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True),
                   **({"outputs": [], "execution_count": None} if kind == "code" else {})}
                  for kind, text in cells],
        "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    })


def symbols(result: Classification, kind: str | None = None) -> set[str]:
    return {r.symbol for r in result.reasons if kind is None or r.kind == kind}


def find(result: Classification, symbol: str) -> Reason:
    return next(r for r in result.reasons if r.symbol == symbol)


KERAS_CNN = """
    import tensorflow as tf

    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(16, 3, activation="relu"),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2)
"""

SKLEARN_TRAIN = """
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y)
    clf = RandomForestClassifier(n_estimators=50)
    clf.fit(X_tr, y_tr)
"""


# --- names resolved through imports and aliases ------------------------------------------------

def test_alias_tf_keras_sequential_is_keras_with_file_and_line(tmp_path: Path) -> None:
    result = classify_repo(write(tmp_path, {"train.py": KERAS_CNN}))
    assert result.framework == "keras"
    assert result.decided_by == MODEL_BUILDING
    seq = find(result, "keras.Sequential")
    assert (seq.file, seq.line, seq.kind, seq.weight) == ("train.py", 3, MODEL_BUILDING, 10.0)
    assert "tf.keras.Sequential" in seq.evidence
    assert {"keras.layers.Conv2D", "keras.layers.Dense", "keras.Sequential.compile",
            "keras.Sequential.fit"} <= symbols(result, MODEL_BUILDING)
    assert find(result, "tensorflow").kind == IMPORT
    assert result.scores == {"keras": result.scores["keras"], "sklearn": 0.0}


def test_submodule_imports_resolve_to_keras(tmp_path: Path) -> None:
    write(tmp_path, {"model.py": """
        from tensorflow.keras.layers import Conv2D, Dense as D
        from tensorflow.keras.models import Sequential

        def build():
            return Sequential([Conv2D(8, 3), D(10)])
    """})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert {"keras.models.Sequential", "keras.layers.Conv2D", "keras.layers.Dense"} <= symbols(result)
    assert find(result, "keras.layers.Conv2D").line == 5


def test_module_alias_of_tensorflow_keras(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": """
        import tensorflow.keras as K
        net = K.Sequential([K.layers.Conv2D(8, 3), K.layers.Dense(10)])
    """})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert {"keras.Sequential", "keras.layers.Conv2D"} <= symbols(result, MODEL_BUILDING)


def test_keras3_import_keras(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": """
        import keras
        from keras import layers

        inputs = keras.Input(shape=(8, 8, 1))
        x = layers.Conv2D(8, 3)(inputs)
        model = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(x)))
        model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
        model.fit(a, b)
    """})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert {"keras.Input", "keras.Model", "keras.layers.Conv2D", "keras.optimizers.Adam",
            "keras.Model.fit"} <= symbols(result, MODEL_BUILDING)


def test_star_import_then_bare_names(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": """
        from tensorflow.keras.layers import *
        from tensorflow.keras.models import Sequential

        def Flatten():  # a local name shadows the star import
            return None

        model = Sequential([Conv2D(8, 3), Dense(10)])
        Flatten()
        print(len([1]))
    """})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    found = symbols(result)
    assert {"keras.layers.Conv2D", "keras.layers.Dense"} <= found
    assert "keras.layers.Flatten" not in found
    assert not any(s.endswith((".print", ".len")) for s in found)


def test_dynamic_import_counts_as_import(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": """
        import importlib
        tf = importlib.import_module("tensorflow")
        model = tf.keras.Sequential()
    """})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert "keras.Sequential" in symbols(result, MODEL_BUILDING)


# --- the decision: model-building decides, not the mere presence of an import ---------------------

def test_keras_model_with_sklearn_helpers_is_keras(tmp_path: Path) -> None:
    write(tmp_path, {
        "train.py": KERAS_CNN + """
    from sklearn import metrics, preprocessing
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    a, b, c, d = train_test_split(X, y)
    s = preprocessing.StandardScaler().fit_transform(a)
    print(metrics.accuracy_score(d, c), metrics.f1_score(d, c, average="macro"))
    """})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert result.scores["sklearn"] > 0
    assert result.model_building["sklearn"] == 0
    assert "sklearn.model_selection.train_test_split" in symbols(result)


def test_pure_sklearn_project(tmp_path: Path) -> None:
    write(tmp_path, {
        "train.py": SKLEARN_TRAIN,
        "models.py": """
            from sklearn.linear_model import LogisticRegression, SGDClassifier
            from sklearn.neural_network import MLPClassifier
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler
            from sklearn import svm

            CANDIDATES = {
                "lr": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
                "sgd": SGDClassifier(), "mlp": MLPClassifier(hidden_layer_sizes=(32,)), "svc": svm.SVC(),
            }
        """,
    })
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn"
    assert result.decided_by == MODEL_BUILDING
    assert {"sklearn.ensemble.RandomForestClassifier", "sklearn.linear_model.LogisticRegression",
            "sklearn.neural_network.MLPClassifier", "sklearn.pipeline.Pipeline", "sklearn.svm.SVC",
            "sklearn.ensemble.RandomForestClassifier.fit"} <= symbols(result, MODEL_BUILDING)
    assert result.files_scanned == 2


def test_words_in_comments_strings_and_docstrings_count_for_nothing(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": '''
        """Train a CNN. We tried keras and tensorflow.keras.Sequential first:

        import tensorflow as tf
        model = tf.keras.Sequential([tf.keras.layers.Conv2D(8, 3)])
        """
        # import keras; keras.layers.Conv2D(...) was too slow
        from sklearn.ensemble import RandomForestClassifier

        NOTE = "tensorflow keras Conv2D CNN"

        def build():
            """Not keras.Sequential, and not torch.nn.Module."""
            return RandomForestClassifier()
    '''})
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn"
    assert result.scores == {"sklearn": result.scores["sklearn"], "keras": 0.0}
    assert all(r.framework == "sklearn" for r in result.reasons)


def test_notebook_code_cells_count_markdown_does_not(tmp_path: Path) -> None:
    write(tmp_path, {"explore.ipynb": notebook(
        ("markdown", "# Digits\nWe compare with sklearn's RandomForestClassifier and keras.\n"),
        ("code", "%pip install tensorflow\n!ls data\nimport tensorflow as tf\n"),
        ("raw", "from sklearn.svm import SVC\nSVC()\n"),
        ("code", ("%%time\nfor i in range(2):\n    !echo {i}\nmodel = tf.keras.Sequential([tf.keras.layers.Dense(3)])\n"
                 "model.fit(x, y)\nmodel?\n")),
    )})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert result.scores["sklearn"] == 0
    assert not result.skipped
    seq = find(result, "keras.Sequential")
    assert (seq.file, seq.cell, seq.line) == ("explore.ipynb", 4, 4)
    assert result.to_dict()["reasons"][0]["cell"] == 4


def test_neutralise_magics_keeps_python_and_indentation() -> None:
    code = "x = 1\n%matplotlib inline\nif x:\n    !pip install keras\nfiles = !ls\nx??\n"
    out = neutralise_magics(code)
    assert out == "x = 1\npass\nif x:\n    pass\npass\npass"
    assert neutralise_magics("%%bash\nimport keras\n") is None  # a shell cell is not Python


# --- files that do not parse --------------------------------------------------------------------

def test_syntax_error_is_reported_and_skipped_other_files_decide(tmp_path: Path) -> None:
    write(tmp_path, {
        "train.py": SKLEARN_TRAIN,
        "broken.py": "import torch\n\nmodel = torch.nn.Sequential(\n    torch.nn.Linear(3, 4),\n",
        "bad.ipynb": '{"cells": [\n  {"cell_type": "code", "source": ["import keras"]}\n',
        "cells.ipynb": notebook(("code", "import torch\ntorch.nn.Linear(3,\n"),
                                ("code", "from sklearn.svm import SVC\nSVC()\n")),
    })
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn"
    assert "torch" not in result.scores  # nothing from the files or cells that failed
    by_file = {s.file: s for s in result.skipped}
    assert set(by_file) == {"broken.py", "bad.ipynb", "cells.ipynb"}
    assert by_file["broken.py"].error.startswith("SyntaxError") and by_file["broken.py"].line == 3
    assert "notebook JSON" in by_file["bad.ipynb"].error and by_file["bad.ipynb"].line == 3
    assert by_file["cells.ipynb"].cell == 1
    assert "sklearn.svm.SVC" in symbols(result)  # the notebook's good cell still counts
    assert "broken.py" in result.explain()


def test_syntax_error_line_is_the_files_line() -> None:
    source = "import keras\n\n\ndef f():\n    pass\n\n\nmodel = keras.Sequential(\n\n\ndef g(:\n    pass\n"
    parsed, skipped = parse_python("t.py", source)
    assert parsed is None
    assert skipped[0].line == 11


# --- unsupported and empty repositories --------------------------------------------------------

def test_torch_only_is_unsupported_and_named(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": """
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(64, 10)
    """})
    with pytest.raises(ClassifyError) as info:
        classify_repo(tmp_path)
    message = str(info.value.message)
    assert info.value.exit_code == 4
    assert "found torch in train.py:1" in message
    assert "keras, keras2, sklearn" in message and "framework:" in message


def test_torch_model_with_sklearn_metrics_is_still_unsupported(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": """
        import torch
        from sklearn.metrics import accuracy_score
        net = torch.nn.Sequential(torch.nn.Linear(4, 2))
        print(accuracy_score([0], [0]))
    """})
    with pytest.raises(ClassifyError, match=r"builds the model with torch"):
        classify_repo(tmp_path)


def test_xgboost_alone_is_unsupported(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": "import xgboost as xgb\nxgb.XGBClassifier().fit(X, y)\n"})
    with pytest.raises(ClassifyError, match="found xgboost in train.py:1"):
        classify_repo(tmp_path)


def test_no_python_at_all(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "import keras", "requirements.txt": "tensorflow\n"})
    with pytest.raises(ClassifyError, match="no Python files or notebooks") as info:
        classify_repo(tmp_path)
    assert "framework:" in str(info.value.message)


def test_python_without_any_framework(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": "import numpy as np\nprint(np.zeros(3))\n"})
    with pytest.raises(ClassifyError, match="found no framework in 1 Python file"):
        classify_repo(tmp_path)


def test_ignored_folders_are_not_scanned(tmp_path: Path) -> None:
    torch_code = "import torch\nnet = torch.nn.Linear(3, 4)\n"
    write(tmp_path, {
        "train.py": SKLEARN_TRAIN,
        ".venv/lib/python3.11/site-packages/torch/x.py": torch_code,
        "venv/lib/y.py": torch_code, ".git/hooks/z.py": torch_code, "node_modules/a/b.py": torch_code,
        "build/lib/c.py": torch_code, "src/__pycache__/d.py": torch_code, "env/pyvenv.cfg": "home = /usr\n",
        "env/lib/e.py": torch_code,
    })
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn"
    assert result.files_scanned == 1
    assert "torch" not in result.scores


# --- requirement files: weaker evidence ------------------------------------------------------------

def test_requirements_naming_tensorflow_lose_to_sklearn_code(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": SKLEARN_TRAIN, "requirements.txt": "tensorflow==2.17\nkeras\n"})
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn"
    req = find(result, "tensorflow")
    assert (req.kind, req.file, req.line, req.framework) == (REQUIREMENT, "requirements.txt", 1, "keras")


@pytest.mark.parametrize("name,text,line", [
    ("requirements.txt", "# pinned\nnumpy>=1.26\nscikit-learn==1.5.0  # the model\n", 3),
    ("requirements/base.txt", "-r common.txt\nscikit_learn\n", 2),
    ("pyproject.toml", '[project]\nname = "x"\ndependencies = [\n  "numpy",\n  "scikit-learn>=1.4",\n]\n', 5),
    ("environment.yml", "name: x\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn\n", 5),
    ("Pipfile", '[packages]\nnumpy = "*"\nscikit-learn = "*"\n', 3),
    ("setup.py", 'from setuptools import setup\nsetup(name="x",\n      install_requires=["scikit-learn"])\n', 3),
])
def test_requirements_decide_when_the_code_only_has_generic_imports(
        tmp_path: Path, name: str, text: str, line: int) -> None:
    write(tmp_path, {"train.py": "import numpy as np\nfrom model import build\nbuild().fit(np.zeros(3))\n",
                     name: text})
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn"
    assert result.decided_by == "weaker evidence"
    req = find(result, "scikit-learn")
    assert (req.kind, req.file, req.line) == (REQUIREMENT, name, line)


# --- reading files ------------------------------------------------------------------------------------

def test_a_file_larger_than_one_read_is_read_to_its_end(tmp_path: Path) -> None:
    filler = "".join(f"VALUE_{i} = {i}\n" for i in range(12_000))  # about 170 KB before the model
    (tmp_path / "train.py").write_text(filler + "from sklearn.svm import SVC\nclf = SVC()\n")
    result = classify_repo(tmp_path)
    assert find(result, "sklearn.svm.SVC").line == 12_002


def test_a_file_over_the_size_limit_is_reported_and_skipped(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanning, "MAX_FILE_BYTES", 1024 * 1024)
    (tmp_path / "big.py").write_text("import tensorflow as tf\n" + "# padding\n" * 120_000)  # 1.2 MB
    write(tmp_path, {"train.py": SKLEARN_TRAIN})
    result = classify_repo(tmp_path)
    assert result.framework == "sklearn" and result.scores["keras"] == 0
    assert [(s.file, s.error) for s in result.skipped] == [("big.py", "larger than 1 MB")]


# --- mlchain.yaml --------------------------------------------------------------------------------------

def test_override_in_mlchain_yaml_wins_and_is_a_reason(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": SKLEARN_TRAIN, "mlchain.yaml": "metric: accuracy\nframework: keras\n"})
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert result.overridden and result.decided_by == OVERRIDE
    first = result.reasons[0]
    assert (first.kind, first.file, first.line, first.framework) == (OVERRIDE, "mlchain.yaml", 2, "keras")
    assert result.scores["sklearn"] > 0  # the evidence is still shown
    assert "mlchain.yaml" in result.explain()


def test_override_accepts_code_the_classifier_cannot(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": "import torch\n", "mlchain.yaml": "framework: sklearn\n"})
    assert classify_repo(tmp_path).framework == "sklearn"


@pytest.mark.parametrize(("text", "message"), [
    ("framework: [keras\n", "not valid YAML"),
    ("framework: pytorch\n", "framework: 'pytorch' in mlchain.yaml is not supported"),
    ("framework: 5\n", "framework: in .*mlchain.yaml must be one of keras, keras2, sklearn"),
    ("framework: {name: keras}\n", "must be one of keras, keras2, sklearn"),
    ("- framework: keras\n", "must be a mapping of keys, got seq"),
])
def test_invalid_framework_in_mlchain_yaml_raises_config_error(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, {"train.py": SKLEARN_TRAIN, "mlchain.yaml": text})
    with pytest.raises(ConfigError, match=message) as caught:
        classify_repo(tmp_path)
    assert caught.value.exit_code == ConfigError.exit_code


def test_classify_reads_only_framework_and_leaves_the_rest_to_the_validation(tmp_path: Path) -> None:
    # A problem elsewhere in mlchain.yaml is for job1 and `mlchain train`, which validate the whole
    # file before they classify; the classifier neither repeats that nor imports pydantic for it.
    write(tmp_path, {"train.py": SKLEARN_TRAIN, "mlchain.yaml": "threshold: high\nframework: ~\n"})
    with pytest.raises(ConfigError, match="threshold"):
        load_repo_config(tmp_path)
    script = ("import sys; from mlchain.detect import classify_repo; "
              f"print(classify_repo({str(tmp_path)!r}).framework, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["sklearn", "False"]


# --- packages ------------------------------------------------------------------------------------------

def test_package_with_relative_imports_and_submodules(tmp_path: Path) -> None:
    write(tmp_path, {
        "digits/__init__.py": "from .train import main\n",
        "digits/model.py": """
            from tensorflow import keras
            from tensorflow.keras import layers

            def build(classes):
                return keras.Sequential([layers.Conv2D(8, 3), layers.Dense(classes)])
        """,
        "digits/sklearn.py": "def split(x):\n    return x[:10], x[10:]\n",
        "digits/train.py": """
            from . import sklearn
            from .model import build
            from .sklearn import split
            from ..tools.keras import helper

            def main():
                model = build(10)
                model.fit(*split(data()))
                sklearn.split([])
                helper()
        """,
    })
    result = classify_repo(tmp_path)
    assert result.framework == "keras"
    assert result.scores["sklearn"] == 0  # a local module named sklearn is not scikit-learn
    assert {r.file for r in result.reasons} == {"digits/model.py"}


# --- the decision without I/O ------------------------------------------------------------------------

def parsed(path: str, source: str) -> ParsedSource:
    source_obj, skipped = parse_python(path, textwrap.dedent(source))
    assert source_obj is not None and not skipped
    return source_obj


def test_decide_is_a_function_of_parsed_sources() -> None:
    sources = [parsed("train.py", KERAS_CNN), parsed("eval.py", "from sklearn import metrics\nmetrics.f1_score(a, b)\n")]
    reqs = [Requirement("scikit-learn", "requirements.txt", 1), Requirement("scikit-learn", "req-dev.txt", 1)]
    result = decide(sources, reqs, None)
    assert result.framework == "keras"
    assert result.files_scanned == 2
    assert decide(sources, reqs, "sklearn").framework == "sklearn"
    # only requirements: the weaker evidence decides
    generic = [parsed("train.py", "import numpy\n")]
    assert decide(generic, [Requirement("tensorflow-cpu", "requirements.txt", 3)]).framework == "keras"
    with pytest.raises(ClassifyError, match="no Python"):
        decide([], reqs)


def test_weigh_model_building_beats_many_weaker_reasons() -> None:
    helpers = [Reason("sklearn", IMPORT, "import sklearn", "a.py", i, 2.0, "sklearn") for i in range(50)]
    layer = Reason("keras", MODEL_BUILDING, "layers.Dense()", "m.py", 3, 3.0, "keras.layers.Dense")
    result = weigh([*helpers, layer], files_scanned=2)
    assert result.framework == "keras"
    assert result.scores == {"keras": 3.0, "sklearn": 100.0}
    assert result.reasons[0] == layer
    # a tie between the supported frameworks is broken in FRAMEWORKS order, deterministically
    tie = [Reason(fw, MODEL_BUILDING, "x", "a.py", 1, 10.0, fw) for fw in ("sklearn", "keras")]
    assert weigh(tie, files_scanned=1).framework == "keras"


ACROSS_THE_FILE = '''
"""Usage, not code:

import torch
net = torch.nn.Linear(3, 4)
"""
import logging
import tensorflow as tf

log = logging.getLogger(__name__)
model = tf.keras.Sequential()


def helper(x):
    return [i * 2 for i in x]


@decorator(
    "arg")
def train(data):
    model.fit(data)
model.compile(loss="mse")
if True:
    pass
else:
    tf.keras.layers.Flatten()
'''


def test_classify_repo_is_the_pure_decision_over_what_the_scan_read(tmp_path: Path) -> None:
    for i in range(30):
        write(tmp_path, {f"pkg{i % 3}/m{i}.py": KERAS_CNN if i % 2 else SKLEARN_TRAIN,
                         f"pkg{i % 3}/u{i}.py": "import os\nprint(os.getcwd())\n"})
    write(tmp_path, {"pkg0/broken.py": "import keras\ndef f(:\n", "requirements.txt": "tensorflow\n"})
    one = classify_repo(tmp_path)
    scan = scan_repo(tmp_path)
    assert decide(scan.sources, scan.requirements, None, skipped=scan.skipped,
                  files_scanned=scan.files_scanned, files_parsed=scan.files_parsed) == one
    assert (one.files_scanned, one.files_parsed) == (61, 31)  # the 30 files naming no framework are not parsed
    assert [(s.file, s.line) for s in one.skipped] == [("pkg0/broken.py", 2)]


def test_decide_on_an_in_memory_source_follows_objects_across_the_file() -> None:
    result = decide([parsed("t.py", ACROSS_THE_FILE)])
    assert result.framework == "keras" and result.decided_by == MODEL_BUILDING
    found = {(r.symbol, r.line) for r in result.reasons}
    # the object built at top level is followed into a function and below it; the docstring is not code
    assert ("keras.Sequential.fit", 21) in found and ("keras.Sequential.compile", 22) in found
    assert ("keras.layers.Flatten", 26) in found
    assert result.scores == {"keras": 19.0, "sklearn": 0.0}


def test_a_syntax_error_far_from_any_framework_name_is_reported_where_it_is() -> None:
    # The statement with the error names no framework: the file is parsed whole all the same.
    source = "import keras\n\nmodel = keras.Sequential()\n\n\ndef unrelated(x):\n    return [x for x in]\n"
    parsed_source, skipped = parse_python("t.py", source)
    assert parsed_source is None
    assert [(s.file, s.line) for s in skipped] == [("t.py", 7)] and skipped[0].error.startswith("SyntaxError")


def _building(**weights: float) -> list[Reason]:
    return [Reason(fw, MODEL_BUILDING, "x", f"{fw}.py", 1, w, fw) for fw, w in weights.items()]


def test_scores_are_sorted_by_score_and_the_decision_rule_is_shown() -> None:
    reasons = [*_building(keras=3.0), *[Reason("sklearn", USAGE, "u", "a.py", i, 10.0, "sklearn") for i in range(3)],
               Reason("torch", IMPORT, "import torch", "b.py", 1, 2.0, "torch")]
    result = weigh(reasons, files_scanned=3)
    assert result.framework == "keras"  # model-building evidence decides, whatever the totals
    assert list(result.scores.items()) == [("sklearn", 30.0), ("keras", 3.0), ("torch", 2.0)]
    assert list(result.model_building.items()) == [("keras", 3.0), ("sklearn", 0.0), ("torch", 0.0)]
    text = result.explain()
    assert "model-building scores: keras 3, sklearn 0, torch 0\nscores: sklearn 30, keras 3, torch 2" in text
    assert not result.close and result.runner_up is None  # nobody else has model-building evidence
    assert "if this is wrong, put `framework: sklearn` in mlchain.yaml" in text


@pytest.mark.parametrize("keras,other,close", [
    (10.0, 10.0 * CLOSE_RATIO, True),  # the boundary counts as close
    (10.0, 9.9, True),
    (10.0, 10.0 * CLOSE_RATIO - 0.1, False),
])
def test_a_close_decision_is_flagged_with_the_override_to_use(keras: float, other: float, close: bool) -> None:
    result = weigh(_building(keras=keras, sklearn=other), files_scanned=2)
    assert (result.framework, result.runner_up, result.close) == ("keras", "sklearn", close)
    text = result.explain()
    assert (f"close decision: keras 10 vs sklearn {other:g}" in text) is close
    assert "put `framework: sklearn` in mlchain.yaml" in text
    assert result.to_dict()["close"] is close and result.to_dict()["runner_up"] == "sklearn"


def test_a_close_unsupported_runner_up_is_flagged_and_the_override_names_a_supported_framework() -> None:
    result = weigh(_building(keras=411.0, torch=401.0), files_scanned=2)
    assert (result.framework, result.runner_up, result.close) == ("keras", "torch", True)
    text = result.explain()
    assert "close decision: keras 411 vs torch 401" in text
    assert "if this is wrong, put `framework: sklearn` in mlchain.yaml" in text  # torch cannot be chosen


def test_a_close_decision_on_weaker_evidence_compares_the_totals() -> None:
    reasons = [Reason("sklearn", REQUIREMENT, "scikit-learn", "requirements.txt", 1, 1.0, "scikit-learn"),
               Reason("sklearn", IMPORT, "import sklearn", "a.py", 1, 2.0, "sklearn"),
               Reason("keras", IMPORT, "import keras", "a.py", 2, 2.0, "keras")]
    result = weigh(reasons, files_scanned=1)
    assert (result.framework, result.decided_by, result.runner_up, result.close) == \
        ("sklearn", WEAKER_EVIDENCE, "keras", False)  # 2 of 3 is below CLOSE_RATIO
    assert "close decision" not in result.explain() and "model-building scores" not in result.explain()
    tied = weigh([*reasons, Reason("keras", USAGE, "keras.ops.add()", "a.py", 3, 1.0, "keras.ops")], files_scanned=1)
    assert (tied.framework, tied.close) == ("keras", True)  # equal totals: FRAMEWORKS order, and close


def test_an_override_is_never_close_and_offers_no_override() -> None:
    result = weigh(_building(keras=10.0, sklearn=9.0), "sklearn", files_scanned=2)
    assert (result.framework, result.close, result.runner_up) == ("sklearn", False, None)
    assert "if this is wrong" not in result.explain()

# --- the command line ---------------------------------------------------------------------------------

def test_cli_classify_json(tmp_path: Path) -> None:
    from mlchain.cli import cli

    write(tmp_path, {"train.py": KERAS_CNN, "broken.py": "import keras\ndef f(:\n"})
    out = CliRunner().invoke(cli, ["classify", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["framework"] == "keras"
    assert data["files_scanned"] == 2
    assert data["skipped"][0]["file"] == "broken.py" and data["skipped"][0]["line"] == 2
    assert set(data["scores"]) >= {"keras", "sklearn"}
    first = data["reasons"][0]
    assert {"file", "line", "evidence", "kind", "weight", "framework"} <= set(first)
    assert first["file"] == "train.py" and first["kind"] == MODEL_BUILDING


def test_cli_classify_unsupported_exits_4(tmp_path: Path) -> None:
    from mlchain.cli import cli

    write(tmp_path, {"train.py": "import torch\nnet = torch.nn.Linear(3, 4)\n"})
    out = CliRunner().invoke(cli, ["classify", str(tmp_path)])
    assert out.exit_code == 4
    assert "found torch in train.py:1" in out.output
    assert "keras, keras2, sklearn" in out.output


def test_cli_classify_text_sorts_scores_and_says_how_to_override(tmp_path: Path) -> None:
    from mlchain.cli import cli

    write(tmp_path, {"train.py": KERAS_CNN,
                     "eval.py": "from sklearn import metrics\n" + "metrics.f1_score(a, b)\n" * 30})
    out = CliRunner().invoke(cli, ["classify", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "framework: keras (decided by the code that builds the model)"
    assert lines[1:4] == ["model-building scores: keras 23, sklearn 0", "scores: sklearn 32, keras 25",
                          "if this is wrong, put `framework: sklearn` in mlchain.yaml"]


@pytest.mark.parametrize("files,code,message", [
    ({"train.py": "import torch\nnet = torch.nn.Linear(3, 4)\n"}, 4, "unsupported framework: the code builds"),
    ({"train.py": "import os\n"}, 4, "found no framework in 1 Python file(s)"),
    ({"train.py": "import keras\n", "mlchain.yaml": "framework: [keras]\n"}, 3, "framework: in "),
    (None, 2, "is not a folder"),
])
def test_cli_classify_json_prints_one_object_for_every_failure(tmp_path: Path, files: dict[str, str] | None,
                                                               code: int, message: str) -> None:
    from mlchain.cli import cli

    target = write(tmp_path, files) if files is not None else tmp_path / "missing"
    out = CliRunner().invoke(cli, ["classify", str(target), "--json"])
    assert out.exit_code == code
    data = json.loads(out.stdout)  # the whole of stdout is one JSON object
    assert list(data) == ["error"] and data["error"]["exit_code"] == code
    assert message in data["error"]["message"]


def test_the_command_prints_an_error_once_without_a_traceback_and_exits_with_its_code(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": "import torch\nnet = torch.nn.Linear(3, 4)\n"})
    done = subprocess.run([sys.executable, "-m", "mlchain.cli", "classify", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 4
    assert done.stdout == ""
    assert done.stderr.count("unsupported framework") == 1 and done.stderr.startswith("Error: ")
    assert "Traceback" not in done.stderr
    usage = subprocess.run([sys.executable, "-m", "mlchain.cli", "classify"], capture_output=True, text=True,
                           timeout=120, check=False)
    assert usage.returncode == 2 and "Missing argument 'PATH'" in usage.stderr
