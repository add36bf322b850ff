"""How long the classifier takes over its corpus of real-style repositories (a report, no target).

Run by hand:  .venv/bin/python benchmarks/bench_classify.py [--files 5000] [--runs 5]

The corpus:

- ``digits_cnn`` and ``digits_sklearn``: the two examples in models/;
- ``mixed`` (generated, ``--files`` files): a realistic monorepo: utilities, data code,
  CLIs and tests (no framework import), scikit-learn modules, Keras modules, a few PyTorch
  files, files that only mention keras/tensorflow in comments or strings, notebooks, a few
  broken files, plus a ``.git`` and a ``.venv`` full of Python that must be skipped;
- ``worst`` (generated, the same size): every file imports a framework, so the byte
  pre-filter skips nothing and every file is parsed and walked.

The classifier runs in one process. Prints, per repository, the median and best wall time
of ``classify_repo`` in this process and of the ``mlchain classify`` command (a new process
each run: Python's start, the imports, the output), then the median of each over the
corpus. The first line gives the machine's load and how fast ``ast.parse`` runs on it, to
compare figures taken on different machines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlchain.detect import classify_repo

MODELS = Path(__file__).resolve().parent.parent / "models"


def _functions(rng: random.Random, n: int) -> str:
    blocks = []
    for i in range(n):
        name = f"{rng.choice(['load', 'clean', 'split', 'merge', 'format', 'check', 'parse'])}_{i}"
        blocks.append(
            f'def {name}(items: list[dict], limit: int = {rng.randint(1, 99)}) -> list[dict]:\n'
            f'    """Return at most ``limit`` items whose score passes the cut."""\n'
            f'    out = []\n'
            f'    for item in items:\n'
            f'        if item.get("score", 0) > {rng.random():.3f} and len(out) < limit:\n'
            f'            out.append({{"id": item["id"], "score": round(item["score"], 3)}})\n'
            f'    logger.debug("kept %d of %d", len(out), len(items))\n'
            f'    return out\n')
    return "\n\n".join(blocks)


def utility(rng: random.Random) -> str:
    return ('"""Helpers for records."""\nfrom __future__ import annotations\n\nimport json\nimport logging\n'
            'import os\nfrom dataclasses import dataclass\n\nlogger = logging.getLogger(__name__)\n\n\n'
            '@dataclass\nclass Record:\n    id: str\n    score: float = 0.0\n\n    def to_json(self) -> str:\n'
            '        return json.dumps({"id": self.id, "score": self.score})\n\n\n'
            + _functions(rng, rng.randint(1, 8)))


def data_code(rng: random.Random) -> str:
    return ('import logging\n\nimport numpy as np\nimport pandas as pd\n\nlogger = logging.getLogger(__name__)\n\n\n'
            'def normalise(frame: pd.DataFrame) -> pd.DataFrame:\n'
            '    values = frame.to_numpy(dtype=np.float32)\n'
            '    return pd.DataFrame((values - values.mean(0)) / (values.std(0) + 1e-9), columns=frame.columns)\n\n\n'
            + _functions(rng, rng.randint(1, 6)))


def test_code(rng: random.Random) -> str:
    tests = "\n\n".join(f"def test_case_{i}(tmp_path):\n    path = tmp_path / 'f{i}.json'\n"
                        f"    path.write_text('{{}}')\n    assert path.read_text() == '{{}}'\n"
                        for i in range(rng.randint(2, 12)))
    return "import pytest\n\n\n" + tests


def comments_only(rng: random.Random) -> str:
    return ('"""Notes: we tried a keras CNN and a tensorflow pipeline; sklearn was faster."""\n'
            '# TODO: port to torch? keep sklearn for now\nimport logging\n\n'
            'logger = logging.getLogger(__name__)\nMESSAGE = "tensorflow and keras are not needed here"\n\n\n'
            + _functions(rng, rng.randint(1, 5)))


def sklearn_code(rng: random.Random) -> str:
    est = rng.choice(["RandomForestClassifier", "GradientBoostingClassifier", "ExtraTreesClassifier"])
    return (f'"""Baseline model."""\nfrom sklearn.datasets import load_digits\nfrom sklearn.ensemble import {est}\n'
            'from sklearn.linear_model import LogisticRegression\nfrom sklearn.metrics import accuracy_score\n'
            'from sklearn.model_selection import train_test_split\nfrom sklearn.pipeline import make_pipeline\n'
            'from sklearn.preprocessing import StandardScaler\n\n\n'
            'def train(seed: int = 0) -> float:\n    X, y = load_digits(return_X_y=True)\n'
            '    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=seed)\n'
            f'    clf = make_pipeline(StandardScaler(), {est}(n_estimators={rng.randint(10, 300)}))\n'
            '    clf.fit(X_tr, y_tr)\n    lr = LogisticRegression(max_iter=200)\n    lr.fit(X_tr, y_tr)\n'
            '    return accuracy_score(y_te, clf.predict(X_te))\n\n\n' + _functions(rng, rng.randint(0, 4)))


def keras_code(rng: random.Random) -> str:
    style = rng.randint(0, 2)
    head = ["import tensorflow as tf\n\nlayers = tf.keras.layers\nkeras = tf.keras\n",
            "from tensorflow import keras\nfrom tensorflow.keras import layers\n",
            "import keras\nfrom keras import layers\n"][style]
    return (f'"""A small CNN."""\n{head}from sklearn.model_selection import train_test_split\n\n\n'
            'def build(filters: int = 16, classes: int = 10) -> keras.Model:\n'
            '    model = keras.Sequential([\n        keras.Input(shape=(8, 8, 1)),\n'
            '        layers.Conv2D(filters, 3, activation="relu", padding="same"),\n'
            '        layers.MaxPooling2D(),\n        layers.Flatten(),\n'
            f'        layers.Dense({rng.choice([32, 64, 128])}, activation="relu"),\n'
            '        layers.Dropout(0.2),\n        layers.Dense(classes, activation="softmax"),\n    ])\n'
            '    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",\n'
            '                  metrics=["accuracy"])\n    return model\n\n\n' + _functions(rng, rng.randint(0, 4)))


def torch_code(rng: random.Random) -> str:
    return ('import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n'
            '        super().__init__()\n        self.fc = nn.Linear(64, 10)\n\n'
            '    def forward(self, x):\n        return self.fc(x)\n')


def broken(rng: random.Random) -> str:
    return "import tensorflow as tf\n\ndef half(:\n    pass\n"


def notebook(rng: random.Random) -> str:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Exploration\n", "We compare sklearn models."]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 1,
         "source": ["%pip install scikit-learn\n", "!ls data\n", "import numpy as np\n",
                    "from sklearn.svm import SVC\n"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 2,
         "source": ["clf = SVC(C=1.0)\n", "clf.fit(np.zeros((4, 2)), [0, 1, 0, 1])\n"]},
    ]
    return json.dumps({"cells": cells, "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
                       "nbformat": 4, "nbformat_minor": 5})


MIXED: list[tuple[Callable[[random.Random], str], float, str]] = [
    (utility, 0.30, ".py"), (data_code, 0.15, ".py"), (test_code, 0.12, ".py"),
    (comments_only, 0.05, ".py"), (sklearn_code, 0.18, ".py"), (keras_code, 0.15, ".py"),
    (torch_code, 0.01, ".py"), (notebook, 0.03, ".ipynb"), (broken, 0.01, ".py"),
]
WORST: list[tuple[Callable[[random.Random], str], float, str]] = [
    (sklearn_code, 0.5, ".py"), (keras_code, 0.45, ".py"), (notebook, 0.05, ".ipynb"),
]


def generate(root: Path, files: int, mix: list[tuple[Callable[[random.Random], str], float, str]],
             seed: int = 0) -> int:
    rng = random.Random(seed)
    makers = [m for m, _, _ in mix]
    weights = [w for _, w, _ in mix]
    suffix = {m: s for m, _, s in mix}
    total = 0
    for i in range(files):
        folder = root / f"pkg{i % 40}" / f"sub{(i // 40) % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        maker = rng.choices(makers, weights)[0]
        text = maker(rng)
        (folder / f"mod_{i}{suffix[maker]}").write_text(text)
        total += len(text)
    (root / "requirements.txt").write_text("tensorflow-cpu>=2.16\nscikit-learn>=1.4\nnumpy\npandas\n")
    # As a repository pushed to mlchain has: classify reads its framework: key (there is none here).
    (root / "mlchain.yaml").write_text("threshold: 0.9\nbudget: {max_trials: 4}\nnotify: {recipients: [ds@example.com]}\n")
    for skipped in (".git/objects", ".venv/lib/python3.11/site-packages/torch", "build/lib"):
        folder = root / skipped
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(200):
            (folder / f"x{j}.py").write_text(torch_code(rng))
    return total


def measure(root: Path, runs: int) -> tuple[list[float], str]:
    """Wall seconds per run of ``classify_repo`` in this process, and a summary of the result."""
    walls = []
    summary = ""
    for _ in range(runs):
        start = time.perf_counter()
        result = classify_repo(root)
        walls.append(time.perf_counter() - start)
        summary = (f"framework={result.framework} scanned={result.files_scanned} parsed={result.files_parsed} "
                   f"reasons={len(result.reasons)} skipped={len(result.skipped)}")
    return walls, summary


def measure_command(root: Path, runs: int) -> list[float]:
    """Wall seconds of ``mlchain classify ROOT --json``, a new process each run."""
    command = [str(Path(sys.executable).with_name("mlchain")), "classify", str(root), "--json"]
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
    return walls


def calibrate() -> float:
    """This machine's speed: MB/s that ast.parse reaches on generated model code."""
    import ast

    rng = random.Random(1)
    texts = [keras_code(rng) for _ in range(150)] + [sklearn_code(rng) for _ in range(150)]
    start = time.process_time()
    for text in texts:
        ast.parse(text)
    elapsed = time.process_time() - start
    return sum(map(len, texts)) / elapsed / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000, help="files in each generated repository")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"ast.parse {calibrate():.2f} MB/s")
    in_process: list[float] = []
    command: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        corpus = [(name, MODELS / name) for name in ("digits_cnn", "digits_sklearn")]
        for name, mix in (("mixed", MIXED), ("worst", WORST)):
            root = Path(tmp) / name
            size = generate(root, args.files, mix)
            print(f"{name}: generated, {args.files} files, {size / 1e6:.1f} MB")
            corpus.append((name, root))
        for name, root in corpus:
            walls, summary = measure(root, args.runs)
            commands = measure_command(root, args.runs)
            in_process.append(statistics.median(walls))
            command.append(statistics.median(commands))
            print(f"{name}: classify_repo median {in_process[-1]:.3f} s (best {min(walls):.3f} s); "
                  f"mlchain classify median {command[-1]:.3f} s (best {min(commands):.3f} s); "
                  f"{args.runs} runs; {summary}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"corpus of {len(in_process)} repositories, one process: median of the medians "
          f"classify_repo {statistics.median(in_process):.3f} s, mlchain classify {statistics.median(command):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
