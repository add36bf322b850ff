"""The environment real code needs, for real: the Keras 2 image, the repository's requirements in a
cached layer over its framework image, and the dataset cache read inside the sandbox (real Docker,
real images, real installs from the package index at build time)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from docker_support import ROOT, NoBuildClient, built_image, docker_settings, make_spec, read_json, write_repo

from mlchain.datasets import find_dataset_calls, keras_datasets_dir, prepare_datasets
from mlchain.detect import classify_repo
from mlchain.errors import ImageBuildError
from mlchain.images import ImageRef
from mlchain.repo_layer import ensure_repo_image
from mlchain.runners.docker import DockerRunner

# Written the way Keras 2 tutorials write it: np_utils, Adam(lr=...), the old layer modules.
KERAS2_MLP = """
    import numpy as np
    from keras.models import Sequential
    from keras.layers.core import Dense, Dropout
    from keras.optimizers import Adam
    from keras.utils import np_utils
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from mlchain import sdk

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Y = np_utils.to_categorical(y, 10)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.25, random_state=0)
    model = Sequential()
    model.add(Dense(64, activation="relu", input_shape=(64,)))
    model.add(Dropout(0.1))
    model.add(Dense(10, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=0.01), metrics=["accuracy"])
    model.fit(X_train, Y_train, epochs=8, batch_size=32, verbose=0, callbacks=sdk.keras_callbacks())
    loss, accuracy = model.evaluate(X_test, Y_test, verbose=0)
    sdk.report({"accuracy": float(accuracy), "lr": float(model.optimizer.learning_rate.numpy())})
    sdk.save_model(model)
"""

# mnist as the tutorials load it, and how many network interfaces the sandbox has (lo only: 1).
MNIST_SCRIPT = """
    import os
    import keras
    from keras.datasets import mnist
    from mlchain import sdk

    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape[1:] == (28, 28) and x_train.dtype == "uint8", x_train.shape
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train / 255.0, y_train, epochs=1, verbose=0)
    _, accuracy = model.evaluate(x_test / 255.0, y_test, verbose=0)
    sdk.report({"accuracy": float(accuracy), "train_rows": len(x_train), "test_rows": len(x_test),
                "interfaces": len(os.listdir("/sys/class/net"))})
"""

TABULATE_SCRIPT = """
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from tabulate import tabulate
    from mlchain import sdk

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=300).fit(X, y)
    print(tabulate([["accuracy", clf.score(X, y)]]))
    sdk.report({"accuracy": clf.score(X, y)})
"""


# The build's own files anywhere in an image (the CA bundle, the constraints pip was given).
FIND_BUILD_FILES = ("import os; print(sorted(os.path.join(r, n) for r, ds, fs in os.walk('/') if not r.startswith("
                    "('/proc', '/sys', '/dev')) for n in fs if n in ('build-ca.pem', 'constraints.txt')))")


@pytest.fixture(scope="module")
def keras_image(docker_client: Any) -> ImageRef:
    return built_image("keras")


def _train(tmp_path: Path, run_id: str, repo: Path, image: ImageRef, framework: str, **spec_fields: Any) -> Any:
    settings = docker_settings(tmp_path / "home")
    spec = replace(make_spec(tmp_path, run_id, repo, image.tag, framework=framework), **spec_fields)
    handle = DockerRunner(settings).start(spec)
    info = handle.wait(timeout=600)
    return spec, handle, info


@pytest.mark.docker
@pytest.mark.slow
def test_a_keras2_mlp_is_classified_keras2_trains_there_and_fails_on_keras3(
        tmp_path: Path, run_id: str, keras2_image: ImageRef, keras_image: ImageRef) -> None:
    repo = write_repo(tmp_path, KERAS2_MLP)
    decision = classify_repo(repo)
    assert decision.framework == "keras2"
    explained = decision.explain()
    assert "train.py:6" in explained and "keras.utils.np_utils" in explained      # the API and its line
    assert "train.py:19" in explained and "Adam(lr=...)" in explained

    spec, _, info = _train(tmp_path / "k2", run_id, repo, keras2_image, "keras2")
    assert info.exit_code == 0, "\n".join(info.last_lines)
    metrics = read_json(spec.output_dir / "metrics.json")
    assert metrics["accuracy"] > 0.8
    assert metrics["lr"] == pytest.approx(0.01)   # Adam(lr=0.01) is the rate, as in Keras 2 (2.15 dropped it)
    assert (spec.output_dir / "model" / "MLmodel").is_file()  # sdk.save_model works under Keras 2

    _, _, info3 = _train(tmp_path / "k3", run_id + "-k3", repo, keras_image, "keras")
    assert info3.exit_code != 0
    # Keras 3 removed the Keras 2 modules the code imports (the first one stops it)
    assert "No module named 'keras.layers.core'" in "\n".join(info3.last_lines)


KERAS2_RESUMABLE = """
    import numpy as np
    from keras.models import Sequential
    from keras.layers import Dense
    from mlchain import sdk

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(256, 8)), rng.integers(0, 2, 256)
    model = Sequential([Dense(8, activation="relu", input_shape=(8,)), Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, y, epochs=3, verbose=0, callbacks=sdk.keras_callbacks())
    sdk.report({"accuracy": float(model.evaluate(X, y, verbose=0)[1])})
"""


@pytest.mark.docker
@pytest.mark.slow
def test_the_sdks_keras_checkpoints_resume_under_keras2(tmp_path: Path, run_id: str,
                                                        keras2_image: ImageRef) -> None:
    repo = write_repo(tmp_path, KERAS2_RESUMABLE)
    spec, _, info = _train(tmp_path, run_id, repo, keras2_image, "keras2")
    assert info.exit_code == 0, "\n".join(info.last_lines)
    first = spec.log_file.read_text()
    assert first.count("MLCHAIN_PROGRESS ") == 3
    # attempt 2 of the same trial (a restart): it resumes after epoch 3, so it trains no epoch again
    again = replace(spec, attempt=2)
    handle = DockerRunner(docker_settings(tmp_path / "home")).start(again)
    info = handle.wait(timeout=600)
    assert info.exit_code == 0, "\n".join(info.last_lines)
    second = spec.log_file.read_text()[len(first):]
    assert "resuming from the checkpoint of epoch 3" in second
    assert second.count("MLCHAIN_PROGRESS ") == 0


@pytest.mark.docker
@pytest.mark.slow
def test_a_requirements_layer_is_built_once_then_found_and_its_package_imports(
        tmp_path: Path, run_id: str, sklearn_image: ImageRef, docker_client: Any) -> None:
    repo = write_repo(tmp_path, TABULATE_SCRIPT)
    # a marker, so the layer is new to this engine (the hash covers the normalised requirements)
    (repo / "requirements.txt").write_text(f"tabulate>=0.9  # the extra package\nscikit-learn\n"
                                           f"pip ; python_version > '3.{run_id[-6:].encode().hex()[:2]}'\n")
    settings = docker_settings(tmp_path / "home")
    # what the image already has needs no layer (the example's requirements.txt)
    assert ensure_repo_image(settings, sklearn_image, ROOT / "models" / "digits_sklearn", client=docker_client) is None
    first = ensure_repo_image(settings, sklearn_image, repo, client=docker_client)
    assert first is not None and first.cached is False and first.tag.startswith("mlchain-sklearn-repo:")
    second = ensure_repo_image(settings, sklearn_image, repo, client=NoBuildClient(docker_client))
    assert second is not None and second.cached is True
    assert (second.tag, second.image_id) == (first.tag, first.image_id)

    spec, _, info = _train(tmp_path, run_id, repo, first, "sklearn")
    assert info.exit_code == 0, "\n".join(info.last_lines)
    assert read_json(spec.output_dir / "metrics.json")["accuracy"] > 0.9
    # the build's CA bundle and files stayed in the builder stage; the layer runs as the training user
    found = docker_client.containers.run(first.tag, entrypoint="python", remove=True, network_mode="none",
                                         command=["-c", FIND_BUILD_FILES])
    assert found.decode().strip() == "[]"
    assert docker_client.images.get(first.tag).attrs["Config"]["User"] == "10001:10001"
    try:
        docker_client.images.remove(first.tag, force=True)
    except Exception:  # noqa: BLE001,S110 - cleanup only
        pass


@pytest.mark.docker
@pytest.mark.slow
def test_a_requirement_conflicting_with_the_framework_pins_fails_the_build_naming_both(
        tmp_path: Path, sklearn_image: ImageRef, docker_client: Any) -> None:
    repo = write_repo(tmp_path, TABULATE_SCRIPT)
    (repo / "requirements.txt").write_text("tabulate\nscikit-learn==1.0\n")
    with pytest.raises(ImageBuildError) as info:
        ensure_repo_image(docker_settings(tmp_path / "home"), sklearn_image, repo, client=docker_client)
    message = info.value.message
    assert "requirements.txt:2 asks for scikit-learn==1.0" in message
    assert "the sklearn image has scikit-learn==" in message and "scikit-learn>=1.4,<2" in message
    assert info.value.exit_code == 12


def _mnist_npz(path: Path, train: int = 600, test: int = 200) -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 10, train).astype("uint8"), rng.integers(0, 10, test).astype("uint8")
    # learnable: each class lights up its own rows
    def images(labels: np.ndarray) -> np.ndarray:
        x = rng.integers(0, 40, (len(labels), 28, 28)).astype("uint8")
        for i, label in enumerate(labels):
            x[i, label * 2:label * 2 + 3, :] = 250
        return x
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("network", [False, True], ids=["sandboxed", "network-true"])
def test_mnist_load_data_reads_the_dataset_cache_in_the_container(
        tmp_path: Path, run_id: str, keras_image: ImageRef, docker_client: Any, network: bool) -> None:
    repo = write_repo(tmp_path, MNIST_SCRIPT)
    settings = docker_settings(tmp_path / "home")
    _mnist_npz(keras_datasets_dir(settings) / "mnist.npz")
    calls = find_dataset_calls(repo)
    assert [(c.library, c.name, c.line) for c in calls] == [("keras", "mnist", 7)]
    mounts = prepare_datasets(settings, calls, network=network)   # present: nothing is fetched
    assert mounts == {"keras": str(keras_datasets_dir(settings))}

    spec, handle, info = _train(tmp_path, run_id, repo, keras_image, "keras", datasets=mounts, network=network)
    assert info.exit_code == 0, "\n".join(info.last_lines)
    metrics = read_json(spec.output_dir / "metrics.json")
    assert (metrics["train_rows"], metrics["test_rows"]) == (600, 200)   # the cache's file, not MNIST's
    assert metrics["accuracy"] > 0.5
    container = docker_client.containers.get(handle.ref)
    assert container.attrs["HostConfig"]["NetworkMode"] == ("bridge" if network else "none")
    assert metrics["interfaces"] == (2 if network else 1)   # lo, and eth0 only with network: true
    mount = next(m for m in container.attrs["Mounts"] if m["Destination"] == "/tmp/.keras/datasets")
    assert mount["RW"] is False


def test_the_process_runner_trains_in_a_venv_with_the_requirements_made_once(tmp_path: Path,
                                                                             make_settings: Any) -> None:
    import importlib.util

    from mlchain.repo_layer import READY, ensure_repo_venv
    from mlchain.trainer import train_once

    assert importlib.util.find_spec("tabulate") is None  # not in the runner's own environment
    repo = write_repo(tmp_path, TABULATE_SCRIPT)
    (repo / "requirements.txt").write_text("tabulate\nscikit-learn\n")  # scikit-learn: the runner's, kept
    settings = make_settings(runner="process")
    result = train_once(settings, repo, {})
    assert result.runner == "process" and result.metric is not None and result.metric > 0.9
    envs = list((settings.home_abs / "envs").iterdir())
    assert len(envs) == 1 and (envs[0] / READY).is_file()
    assert not list(envs[0].glob("lib/python*/site-packages/scikit_learn*"))  # not installed again
    assert list(envs[0].glob("lib/python*/site-packages/tabulate*"))
    ready = (envs[0] / READY).stat().st_mtime_ns
    assert ensure_repo_venv(settings, repo, "sklearn") == envs[0] / "bin" / "python"   # found, not made again
    assert (envs[0] / READY).stat().st_mtime_ns == ready


CALIFORNIA_SCRIPT = """
    from sklearn.datasets import fetch_california_housing
    from sklearn.linear_model import LinearRegression
    from mlchain import sdk

    X, y = fetch_california_housing(return_X_y=True)
    sdk.report({"accuracy": LinearRegression().fit(X, y).score(X, y), "rows": len(X)})
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_sklearn_fetcher_reads_the_dataset_cache_in_the_sandbox(tmp_path: Path, run_id: str,
                                                                   sklearn_image: ImageRef) -> None:
    import joblib

    from mlchain.datasets import sklearn_data_dir

    repo = write_repo(tmp_path, CALIFORNIA_SCRIPT)
    settings = docker_settings(tmp_path / "home")
    # scikit-learn's own cache layout: the table it keeps after its first download
    rng = np.random.default_rng(0)
    table = rng.uniform(1.0, 5.0, (300, 9))
    table[:, 0] = table[:, 1] * 2.0 + 0.5          # the target, a function of the first feature
    sklearn_data_dir(settings).mkdir(parents=True)
    joblib.dump(table, sklearn_data_dir(settings) / "cal_housing_py3.pkz", compress=6)

    mounts = prepare_datasets(settings, find_dataset_calls(repo), network=False)  # found: fetches nothing
    assert mounts == {"sklearn": str(sklearn_data_dir(settings))}
    spec, _, info = _train(tmp_path, run_id, repo, sklearn_image, "sklearn", datasets=mounts)
    assert info.exit_code == 0, "\n".join(info.last_lines)
    metrics = read_json(spec.output_dir / "metrics.json")
    assert metrics["rows"] == 300 and metrics["accuracy"] > 0.99


@pytest.mark.docker
@pytest.mark.slow
def test_mlchain_train_wires_it_all_requirements_layer_and_dataset_cache(tmp_path: Path,
                                                                          sklearn_image: ImageRef,
                                                                          docker_client: Any) -> None:
    """What job2 does for a repository, through `mlchain train`'s launch: the dataset the code
    fetches is found in the cache and mounted, its requirements.txt becomes the trial's image."""
    import joblib

    from mlchain.datasets import sklearn_data_dir
    from mlchain.trainer import train_once

    repo = write_repo(tmp_path, CALIFORNIA_SCRIPT.replace("from mlchain import sdk", "from mlchain import sdk\n"
                                                                                    "    from tabulate import tabulate"))
    (repo / "requirements.txt").write_text("tabulate\n")
    settings = docker_settings(tmp_path / "home")
    rng = np.random.default_rng(1)
    table = rng.uniform(1.0, 5.0, (120, 9))
    table[:, 0] = table[:, 3] - 1.0
    sklearn_data_dir(settings).mkdir(parents=True)
    joblib.dump(table, sklearn_data_dir(settings) / "cal_housing_py3.pkz", compress=6)

    result = train_once(settings, repo, {})
    assert result.framework == "sklearn" and result.metrics["rows"] == 120
    assert result.image is not None and result.image.startswith("mlchain-sklearn-repo:")
    container = next(c for c in docker_client.containers.list(all=True, filters={"ancestor": result.image}))
    mounts = {m["Destination"]: m["RW"] for m in container.attrs["Mounts"]}
    assert mounts["/tmp/scikit_learn_data"] is False and container.attrs["HostConfig"]["NetworkMode"] == "none"
    container.remove(force=True)
