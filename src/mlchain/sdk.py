"""What training code imports inside the container: ``from mlchain import sdk``.

    params = sdk.params()                 # this trial's hyperparameters
    model.fit(..., callbacks=sdk.keras_callbacks())   # checkpoint/restore + progress
    sdk.report({"accuracy": held_out_accuracy})       # the gate metric: held-out data
    sdk.save_model(model)                 # MLflow flavor format, registrable later

Outside mlchain (``python train.py`` in a checkout) the same calls work: params
come from the repository's ``mlchain.yaml``, outputs go to ``./mlchain-output``.
Only the standard library is imported at module level; frameworks load on use.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlchain import contract

_params_cache: dict[str, Any] | None = None


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


def _repo_dir() -> Path:
    explicit = _env(contract.ENV_REPO_DIR)
    if explicit:
        return Path(explicit)
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    return Path(main_file).resolve().parent if main_file else Path.cwd()


def output_dir() -> Path:
    path = Path(_env(contract.ENV_OUTPUT_DIR) or Path.cwd() / "mlchain-output")
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_dir() -> Path:
    """Where this trial keeps its checkpoints; it survives a restart of the trial."""
    path = Path(_env(contract.ENV_CHECKPOINT_DIR) or output_dir() / "checkpoints")
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    return Path(_env(contract.ENV_DATA_DIR) or _repo_dir() / "data")


def metric_name() -> str:
    return _env(contract.ENV_METRIC) or "accuracy"


def params() -> dict[str, Any]:
    """This trial's hyperparameters (the params file, else mlchain.yaml's params)."""
    global _params_cache
    if _params_cache is None:
        path = _env(contract.ENV_PARAMS_FILE)
        if path:
            _params_cache = json.loads(Path(path).read_text())
        else:
            _params_cache = dict(contract.load_repo_config(_repo_dir()).params)
    return dict(_params_cache)


def params_hash(values: Mapping[str, Any] | None = None) -> str:
    """A short, stable hash of the params: checkpoints of one architecture never load into another."""
    blob = json.dumps(values if values is not None else params(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write_text(path: Path, text: str) -> None:
    """Write then rename, so a kill never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def log_epoch(epoch: int, epochs: int | None = None, **metrics: float) -> None:
    """One progress line per epoch: printed (the console) and appended to progress.jsonl
    (the learning curve, and the heartbeat the monitor uses to tell a hung trial)."""
    row: dict[str, Any] = {"epoch": int(epoch), "time": round(time.time(), 3)}
    if epochs is not None:
        row["epochs"] = int(epochs)
    row.update({k: float(v) for k, v in metrics.items() if _is_number(v)})
    line = json.dumps(row, sort_keys=True)
    with open(output_dir() / contract.PROGRESS_FILE, "a") as fh:
        fh.write(line + "\n")
    print(contract.PROGRESS_PREFIX + line, flush=True)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def report(metrics: Mapping[str, Any]) -> Path:
    """Write metrics.json. The gate metric must come from held-out data."""
    clean = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    dropped = sorted(set(metrics) - set(clean))
    if dropped:
        raise ValueError(f"report() takes numbers only; not numbers: {', '.join(dropped)}")
    path = output_dir() / contract.METRICS_FILE
    atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=True))
    return path


def record_data(*arrays: Any, source: str = "") -> str:
    """Fingerprint the training data (a hash of the arrays' bytes), tagged on the MLflow run."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(array).tobytes() if hasattr(array, "__array__") else repr(array).encode())
    fingerprint = digest.hexdigest()[:16]
    atomic_write_text(output_dir() / "data.json", json.dumps({"hash": fingerprint, "source": source}))
    return fingerprint


def _flavor(model: Any) -> str:
    module = type(model).__module__.split(".")[0]
    for base in type(model).__mro__:
        root = base.__module__.split(".")[0]
        if root in ("keras", "tensorflow", "tf_keras"):
            return "keras"
        if root == "sklearn":
            return "sklearn"
    raise TypeError(f"save_model() supports Keras and scikit-learn models, not {module}.{type(model).__name__}")


def save_model(model: Any) -> Path:
    """Save the model in MLflow's flavor format under output/model, so it can be registered."""
    import shutil

    path = output_dir() / contract.MODEL_DIR
    if path.exists():
        shutil.rmtree(path)
    flavor = _flavor(model)
    if flavor == "keras":
        import mlflow.keras

        mlflow.keras.save_model(model, str(path))
    else:
        import mlflow.sklearn

        mlflow.sklearn.save_model(model, str(path), **_sklearn_format(model))
    return path


def _sklearn_format(model: Any) -> dict[str, Any]:
    """skops (no code runs on load) when installed, trusting the types of the model we just
    trained; else cloudpickle, MLflow's portable fallback."""
    try:
        import skops.io
    except ImportError:
        return {"serialization_format": "cloudpickle"}
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return {"serialization_format": "skops", "skops_trusted_types": trusted}


def keras_callbacks(progress: bool = True) -> list[Any]:
    """Checkpoint/restore (Keras' BackupAndRestore, in a folder keyed by the params) and a progress line."""
    import keras

    backup = checkpoint_dir() / f"keras-{params_hash()}"
    callbacks: list[Any] = [keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch",
                                                              delete_checkpoint=False)]
    if progress:
        callbacks.append(_progress_callback(keras))
    return callbacks


def _progress_callback(keras: Any) -> Any:
    class Progress(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
        """Prints one mlchain progress line per epoch."""

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            epochs = self.params.get("epochs") if isinstance(self.params, dict) else None
            log_epoch(epoch + 1, epochs, **dict(logs or {}))

    return Progress()
