"""The sdk's checkpoints: scikit-learn per epoch with joblib (atomic, a backup, a fallback to
scratch that says so), estimators that cannot resume, and Keras checkpoints keyed by params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.svm import SVC

from mlchain import contract, sdk

X, Y = load_digits(return_X_y=True)
CLASSES = np.arange(10)


@pytest.fixture()
def trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A trial's contract environment: params file, output and checkpoint folders."""
    monkeypatch.setenv(contract.ENV_OUTPUT_DIR, str(tmp_path / "out"))
    monkeypatch.setenv(contract.ENV_CHECKPOINT_DIR, str(tmp_path / "ckpt"))
    use_params(tmp_path, monkeypatch, {"alpha": 0.001, "epochs": 5})
    yield tmp_path / "ckpt"
    reset()


def reset() -> None:
    sdk._params_cache = None
    sdk._default_checkpoint = None


def use_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]) -> None:
    path = tmp_path / f"params-{sdk.params_hash(params)}.json"
    path.write_text(json.dumps(params))
    monkeypatch.setenv(contract.ENV_PARAMS_FILE, str(path))
    reset()


def make_sgd() -> SGDClassifier:
    return SGDClassifier(alpha=float(sdk.params()["alpha"]), random_state=0)


def train(epochs: int, make: Any = make_sgd) -> tuple[Any, int]:
    """The loop a data scientist writes; returns the model and the epoch it resumed from."""
    model, done = sdk.resume(make)
    for epoch in range(done + 1, epochs + 1):
        model.partial_fit(X, Y, classes=CLASSES)
        sdk.checkpoint(model, epoch)
    return model, done


def epochs_on_disk(ckpt: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in ckpt.glob("sklearn-*/epoch-*"))


def newest(ckpt: Path) -> Path:
    return max(ckpt.glob("sklearn-*/epoch-*"))


def test_a_new_trial_starts_at_epoch_zero(trial: Path) -> None:
    model, done = sdk.resume(make_sgd)
    assert done == 0 and isinstance(model, SGDClassifier) and not hasattr(model, "coef_")


def test_resume_goes_on_from_the_last_epoch_with_the_same_weights(trial: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = train(3)
    reset()  # a new attempt: a new process
    resumed, done = sdk.resume(make_sgd)
    assert done == 3
    np.testing.assert_array_equal(resumed.coef_, first.coef_)
    assert "SGDClassifier: resuming from the checkpoint of epoch 3" in capsys.readouterr().out
    # Uninterrupted and resumed training end with identical models.
    _, again = train(5)
    assert again == 3
    reset()
    uninterrupted = make_sgd()
    for _ in range(5):
        uninterrupted.partial_fit(X, Y, classes=CLASSES)
    np.testing.assert_array_equal(sdk.resume(make_sgd)[0].coef_, uninterrupted.coef_)


def test_each_checkpoint_has_metadata_and_only_two_are_kept(trial: Path) -> None:
    train(4)
    assert epochs_on_disk(trial) == [3, 4]
    folder = newest(trial)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["epoch"] == 4 and meta["params_hash"] == sdk.params_hash() and meta["time"] > 0
    assert meta["estimator"] == "SGDClassifier" and meta["resumable"] is True
    assert set(meta["files"]) == {"model.joblib"}
    assert meta["files"]["model.joblib"]["size"] == (folder / "model.joblib").stat().st_size
    assert folder.parent.name == f"sklearn-{sdk.params_hash()}"


def test_a_truncated_newest_checkpoint_falls_back_to_the_backup(trial: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    train(4)
    capsys.readouterr()
    model_file = newest(trial) / "model.joblib"
    model_file.write_bytes(model_file.read_bytes()[:64])
    reset()
    model, done = sdk.resume(make_sgd)
    out = capsys.readouterr().out
    assert done == 3 and hasattr(model, "coef_")
    assert "the checkpoint of epoch 4 is unusable" in out and "resuming from the checkpoint of epoch 3" in out
    # Training goes on and writes epoch 4 again, replacing the broken one.
    train(5)
    assert epochs_on_disk(trial) == [4, 5]


def test_when_both_checkpoints_are_bad_training_starts_from_scratch_and_says_so(
        trial: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(4)
    for folder in trial.glob("sklearn-*/epoch-*"):
        (folder / "model.joblib").write_bytes(b"")
    (newest(trial) / "meta.json").write_text("{not json")
    reset()
    capsys.readouterr()
    model, done = sdk.resume(make_sgd)
    out = capsys.readouterr().out
    assert done == 0 and not hasattr(model, "coef_")
    assert "no usable checkpoint" in out and "training from scratch" in out
    train(1)  # and it does not crash-loop: training writes a fresh checkpoint over the bad ones
    assert epochs_on_disk(trial) == [1]


def test_a_write_cut_short_is_never_loaded(trial: Path) -> None:
    train(2)
    folder = sdk.checkpoint_folder("sklearn")
    # A kill during a write leaves a temporary folder: it is invisible to resume, and removed.
    partial = folder / ".tmp-epoch-abc"
    partial.mkdir()
    (partial / "model.joblib").write_bytes(b"half")
    reset()
    _, done = sdk.resume(make_sgd)
    assert done == 2 and not partial.exists()

    class Killed(BaseException):
        pass

    def dies(_folder: Path) -> None:
        raise Killed

    with pytest.raises(Killed):
        sdk.CheckpointFolder(folder).write(3, {"params_hash": sdk.params_hash()}, dies)
    assert epochs_on_disk(trial) == [1, 2] and not list(folder.glob(".tmp-*"))


def test_other_params_never_load_this_trials_checkpoint(trial: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    train(3)
    use_params(tmp_path, monkeypatch, {"alpha": 0.01, "epochs": 5})  # a tweaked trial, same folder
    model, done = sdk.resume(make_sgd)
    assert done == 0 and not hasattr(model, "coef_")
    assert len(list(trial.glob("sklearn-*"))) == 1  # nothing written yet for the new params


def test_a_changed_estimator_is_not_loaded_into(trial: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(2)
    reset()
    model, done = sdk.resume(lambda: SGDClassifier(alpha=0.5, random_state=0))  # code changed, params not
    assert done == 0 and not hasattr(model, "coef_")
    assert "hyperparameters differ (alpha)" in capsys.readouterr().out


def test_warm_start_estimators_resume(trial: Path) -> None:
    def make() -> SGDClassifier:
        return SGDClassifier(warm_start=True, max_iter=1, tol=None, random_state=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model, _ = sdk.resume(make)
        model.fit(X, Y)
        sdk.checkpoint(model, 1)
        reset()
        resumed, done = sdk.resume(make)
    assert done == 1
    np.testing.assert_array_equal(resumed.coef_, model.coef_)


def test_an_estimator_that_cannot_resume_is_retrained_and_says_so(trial: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert not sdk.can_resume(SVC()) and sdk.can_resume(SGDClassifier())
    model, done = sdk.resume(SVC)
    model.fit(X[:200], Y[:200])
    assert sdk.checkpoint(model, 1) is None  # nothing worth saving
    assert "SVC cannot resume" in capsys.readouterr().out
    summary = sdk.checkpoint_summary(trial, sdk.params())
    assert "SVC cannot resume" in summary and "retraining from scratch" in summary
    reset()
    _, done = sdk.resume(SVC)
    assert done == 0
    assert "SVC cannot resume (it has neither partial_fit nor warm_start=True); retraining from scratch" \
        in capsys.readouterr().out


def test_checkpoint_summary_for_the_monitor(trial: Path) -> None:
    assert sdk.checkpoint_summary(trial, sdk.params()) == "no checkpoint yet: training starts from scratch"
    train(3)
    assert sdk.checkpoint_summary(trial, sdk.params()) == "resuming SGDClassifier from the checkpoint of epoch 3"
    assert "no checkpoint yet" in sdk.checkpoint_summary(trial, {"other": "params"})


KERAS_SCRIPT = """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from pathlib import Path
    import keras, numpy as np
    from mlchain import sdk

    tmp = Path(sys.argv[1])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def run(params, epochs):
        (tmp / "params.json").write_text(json.dumps(params))
        sdk._params_cache = None
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(params["units"], activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=epochs, verbose=0, callbacks=sdk.keras_callbacks())
        return {"epochs_run": len(history.history["loss"]), "folder": sdk.checkpoint_folder("keras").name}

    out = {"a": run({"units": 8}, 2)}
    out["b"] = run({"units": 16}, 3)            # a tweaked architecture, same trial folder
    out["a_again"] = run({"units": 8}, 4)        # the first architecture resumes at epoch 2
    newest = sorted((tmp / "ckpt" / out["b"]["folder"]).glob("epoch-*/model.weights.h5"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])   # truncate B's newest checkpoint (epoch 3)
    out["after_truncation"] = run({"units": 16}, 4)
    # A model that is not built has no weights to load into: the callback says so, loads nothing.
    from mlchain.keras_callbacks import CheckpointAndRestore
    (tmp / "params.json").write_text(json.dumps({"units": 8}))
    sdk._params_cache = None
    unbuilt = keras.Sequential([keras.layers.Dense(8), keras.layers.Dense(2)])
    callback = CheckpointAndRestore(sdk.CheckpointFolder(sdk.checkpoint_folder("keras")), sdk.params_hash(), print)
    callback.set_model(unbuilt)
    callback.on_train_begin()
    out["unbuilt_initial_epoch"] = getattr(unbuilt, "_initial_epoch", None)
    print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_keras_checkpoints_are_keyed_by_params_and_survive_a_truncated_file(tmp_path: Path) -> None:
    script = tmp_path / "keras_ckpt.py"
    script.write_text(textwrap.dedent(KERAS_SCRIPT))
    env = {**os.environ, contract.ENV_OUTPUT_DIR: str(tmp_path / "out"),
           contract.ENV_CHECKPOINT_DIR: str(tmp_path / "ckpt"),
           contract.ENV_PARAMS_FILE: str(tmp_path / "params.json")}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["a"]["folder"] != result["b"]["folder"]
    assert result["a"]["epochs_run"] == 2
    assert result["b"]["epochs_run"] == 3  # from scratch: never A's weights (they would not even fit)
    assert result["a_again"]["epochs_run"] == 2  # epochs 3 and 4 only
    # B's newest checkpoint (epoch 3) was truncated: B resumes from its backup (epoch 2), and says so.
    assert result["after_truncation"]["epochs_run"] == 2
    assert "the checkpoint of epoch 3 is unusable" in done.stdout
    assert "resuming from the checkpoint of epoch 2" in done.stdout
    assert "not built before fit" in done.stdout and result["unbuilt_initial_epoch"] in (None, 0)
