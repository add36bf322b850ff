"""What training code imports inside the container: ``from mlchain import sdk``.

    params = sdk.params()                 # this trial's hyperparameters
    model.fit(..., callbacks=sdk.keras_callbacks())   # checkpoint/restore + progress
    sdk.report({"accuracy": held_out_accuracy})       # the gate metric: held-out data
    sdk.save_model(model)                 # MLflow flavor format, registrable later

scikit-learn estimators that train epoch by epoch (``partial_fit``, or ``warm_start=True``)
checkpoint after each epoch, so a restarted trial goes on where it stopped:

    model, done = sdk.resume(lambda: MLPClassifier(...))  # the last checkpoint, or a new model and 0
    for epoch in range(done + 1, epochs + 1):
        model.partial_fit(x, y, classes=classes)
        sdk.checkpoint(model, epoch)      # atomic; the previous checkpoint is kept as a backup
        sdk.log_epoch(epoch, epochs, loss=model.loss_)

Outside mlchain (``python train.py`` in a checkout) the same calls work: params
come from the repository's ``mlchain.yaml``, outputs go to ``./mlchain-output``.
Only the standard library is imported at module level; frameworks load on use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlchain import contract
from mlchain.fileio import atomic_write, fsync_dir, sha256_file

# What the training writes for the chain is read outside the container by another user (a
# Jenkins agent's `jenkins`, not root): readable by all, not mkstemp's 0600.
SHARED_FILE_MODE = 0o644

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
    return _env(contract.ENV_METRIC) or contract.DEFAULT_METRIC


def params() -> dict[str, Any]:
    """This trial's hyperparameters (the params file, else mlchain.yaml's params)."""
    global _params_cache
    if _params_cache is None:
        path = _env(contract.ENV_PARAMS_FILE)
        if path:
            _params_cache = json.loads(Path(path).read_text())
        else:
            from mlchain.repo_config import load_repo_config  # pydantic: only when there is no params file

            _params_cache = dict(load_repo_config(_repo_dir()).params)
    return dict(_params_cache)


def params_hash(values: Mapping[str, Any] | None = None) -> str:
    """A short, stable hash of the params: checkpoints of one architecture never load into another."""
    blob = json.dumps(values if values is not None else params(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
    atomic_write(path, json.dumps(clean, indent=2, sort_keys=True), mode=SHARED_FILE_MODE)
    return path


def record_data(*arrays: Any, source: str = "") -> str:
    """Fingerprint the training data (a hash of the arrays' bytes), tagged on the MLflow run."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(array).tobytes() if hasattr(array, "__array__") else repr(array).encode())
    fingerprint = digest.hexdigest()[:16]
    atomic_write(output_dir() / "data.json", json.dumps({"hash": fingerprint, "source": source}),
                 mode=SHARED_FILE_MODE)
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
        import keras
        import mlflow.keras

        mlflow.keras.save_model(model, str(path),
                                pip_requirements=pinned_requirements(["keras", keras.backend.backend(), "numpy"]))
    else:
        import mlflow.sklearn

        fmt = _sklearn_format(model)
        modules = ["sklearn", "numpy", "scipy", fmt["serialization_format"]]
        mlflow.sklearn.save_model(model, str(path), pip_requirements=pinned_requirements(modules), **fmt)
    return path


# Import name -> the distributions that may provide it, in the order they are looked for.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos"),
}


def pinned_requirements(modules: list[str]) -> list[str]:
    """``dist==version`` for the distributions that provide ``modules`` here (missing ones left out).

    What MLflow's requirement inference finds for these flavors, without its way of finding
    it: a new Python process that imports MLflow and loads the model again, for every
    trial. Local version labels (``+cpu``) are dropped, as MLflow does, to stay installable.
    """
    from importlib import metadata

    out: list[str] = []
    for module in modules:
        for name in DISTRIBUTIONS.get(module, (module,)):
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            out.append(f"{name}=={version.split('+', 1)[0]}")
            break
    return out


def _sklearn_format(model: Any) -> dict[str, Any]:
    """skops (no code runs on load) when installed, trusting the types of the model we just
    trained; else cloudpickle, MLflow's portable fallback."""
    try:
        import skops.io
    except ImportError:
        return {"serialization_format": "cloudpickle"}
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return {"serialization_format": "skops", "skops_trusted_types": trusted}


# --- checkpoints --------------------------------------------------------------------
#
# One folder per checkpoint, ``<checkpoint_dir>/<framework>-<params hash>/epoch-000012/``,
# written under a temporary name and renamed into place (a rename is atomic: a kill
# leaves either the whole checkpoint or none). ``meta.json`` in it names the epoch, the
# params hash, the time and a sha256 of every file, so a truncated file is seen before it
# is loaded. The newest two are kept: when the newest is unreadable the other one is used,
# and when both are, training starts from scratch (and says so).

CHECKPOINT_META = "meta.json"
CHECKPOINT_PREFIX = "epoch-"
CHECKPOINTS_KEPT = 2
SKLEARN_MODEL_FILE = "model.joblib"
M = TypeVar("M")


def _say(message: str) -> None:
    """A line for the training log (and so for job3's console and the monitor)."""
    print(f"mlchain: {message}", flush=True)


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint on disk: its folder and its metadata."""

    path: Path
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", 0))

    @property
    def resumable(self) -> bool:
        return bool(self.meta.get("resumable", True))

    def problem(self, params_hash_: str | None = None) -> str | None:
        """Why this checkpoint cannot be used (a file missing, truncated or changed), or None."""
        if params_hash_ is not None and self.meta.get("params_hash") != params_hash_:
            return f"it belongs to other params ({self.meta.get('params_hash')}, not {params_hash_})"
        for name, expected in (self.meta.get("files") or {}).items():
            file = self.path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != expected.get("size"):
                return f"{name} has {file.stat().st_size} bytes, {expected.get('size')} were written"
            if sha256_file(file) != expected.get("sha256"):
                return f"{name} does not match its checksum"
        return None


META_MAX_BYTES = 1024 * 1024


def _read_plain(path: Path, max_bytes: int = META_MAX_BYTES) -> bytes:
    """A small regular file, never through a symlink (the monitor reads checkpoints on the host,
    and a training may have planted links there); OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or st.st_size > max_bytes:
            raise OSError(f"{path}: not a plain file of its own, or over {max_bytes} bytes")
        return fh.read(max_bytes)


class CheckpointFolder:
    """The checkpoints of one model of one trial: atomic writes, the newest two kept."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint with readable metadata, newest first."""
        found = []
        if not self.root.is_dir():
            return []
        for child in self.root.iterdir():
            if not child.name.startswith(CHECKPOINT_PREFIX) or child.is_symlink() or not child.is_dir():
                continue
            try:
                meta = json.loads(_read_plain(child / CHECKPOINT_META))
            except (OSError, ValueError):
                meta = {"epoch": _epoch_of(child.name), "unreadable": True}
            if isinstance(meta, dict):
                found.append(CheckpointInfo(child, meta))
        return sorted(found, key=lambda c: (c.epoch, c.path.name), reverse=True)

    def write(self, epoch: int, meta: Mapping[str, Any], save: Callable[[Path], None]) -> CheckpointInfo:
        """``save(folder)`` writes the files; they are checksummed, then the folder is renamed in."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_partial()
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{CHECKPOINT_PREFIX}"))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from the monitor on the host
            save(tmp)
            files = {}
            for file in sorted(p for p in tmp.iterdir() if p.is_file()):
                with open(file, "rb+") as fh:
                    os.fsync(fh.fileno())
                files[file.name] = {"sha256": sha256_file(file), "size": file.stat().st_size}
            full = {**meta, "epoch": int(epoch), "time": round(time.time(), 3), "files": files}
            atomic_write(tmp / CHECKPOINT_META, json.dumps(full, indent=2, sort_keys=True), mode=SHARED_FILE_MODE)
            target = self.root / f"{CHECKPOINT_PREFIX}{int(epoch):06d}"
            if target.exists():  # the same epoch again (after a fallback to the backup)
                trash = self.root / f".trash-{target.name}-{os.getpid()}"
                os.replace(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, target)
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune(keep=target)
        return CheckpointInfo(target, full)

    def _prune(self, keep: Path) -> None:
        kept = [keep]
        for info in self.checkpoints():
            if info.path == keep:
                continue
            if len(kept) < CHECKPOINTS_KEPT and info.epoch < _epoch_of(keep.name):
                kept.append(info.path)
                continue
            shutil.rmtree(info.path, ignore_errors=True)

    def clean_partial(self) -> None:
        """Remove what a killed write left (temporary folders are never loaded)."""
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(child, ignore_errors=True)

    def load(self, loader: Callable[[CheckpointInfo], M], what: str,
             params_hash_: str | None = None) -> tuple[M, CheckpointInfo] | None:
        """The newest checkpoint that verifies and loads; None (and a log line) when none does."""
        problems = []
        for info in self.checkpoints():
            if not info.resumable:
                continue  # a marker of a model that cannot resume: nothing to load
            problem = "its metadata is unreadable" if info.meta.get("unreadable") else info.problem(params_hash_)
            if problem is None:
                try:
                    return loader(info), info
                except Exception as exc:  # noqa: BLE001 - any failure to load means: try the backup
                    problem = f"loading it failed: {type(exc).__name__}: {exc}"
            problems.append(f"epoch {info.epoch}: {problem}")
            _say(f"{what}: the checkpoint of epoch {info.epoch} is unusable ({problem}); trying the previous one")
        if problems:
            _say(f"{what}: no usable checkpoint ({'; '.join(problems)}); training from scratch")
        return None


def _epoch_of(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[-1])
    except ValueError:
        return -1




def checkpoint_folder(framework: str, values: Mapping[str, Any] | None = None) -> Path:
    """This trial's checkpoint folder for one framework, keyed by the params: a tweaked
    architecture (other params) never loads another one's weights."""
    return checkpoint_dir() / f"{framework}-{params_hash(values)}"


# --- scikit-learn --------------------------------------------------------------------

def can_resume(model: Any) -> bool:
    """An estimator that goes on from its state: ``partial_fit``, or ``warm_start=True``."""
    if hasattr(model, "partial_fit"):
        return True
    get_params = getattr(model, "get_params", None)
    try:
        return bool(get_params(deep=False).get("warm_start")) if callable(get_params) else False
    except Exception:  # noqa: BLE001 - an odd estimator: treat it as not resumable
        return False


def _simple_params(model: Any) -> dict[str, str]:
    """The estimator's plain hyperparameters (numbers, strings, tuples of them), to compare."""
    plain = (int, float, str, bool, type(None))
    out: dict[str, str] = {}
    try:
        values = model.get_params(deep=False)
    except Exception:  # noqa: BLE001
        return out
    for key, value in values.items():
        if isinstance(value, plain) or (isinstance(value, tuple | list) and all(isinstance(v, plain) for v in value)):
            out[key] = repr(value)
    return out


class SklearnCheckpoint:
    """Checkpoints of one scikit-learn estimator of this trial (joblib, one per epoch).

    ``sdk.resume`` and ``sdk.checkpoint`` use one of these; make your own to keep two
    models apart (``SklearnCheckpoint("encoder")``)."""

    def __init__(self, name: str = "model", directory: Path | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self._directory = directory
        self._params = dict(params) if params is not None else None
        self._warned_not_resumable = False

    @property
    def params_hash(self) -> str:
        return params_hash(self._params)

    @property
    def folder(self) -> CheckpointFolder:
        root = self._directory or checkpoint_folder("sklearn", self._params)
        return CheckpointFolder(root if self.name == "model" else root / self.name)

    def resume(self, make_model: Callable[[], M]) -> tuple[M, int]:
        """The model of the last checkpoint and its epoch, else ``make_model()`` and 0."""
        fresh = make_model()
        kind = type(fresh).__name__
        folder = self.folder
        folder.clean_partial()
        found = folder.checkpoints()
        if not found:
            return fresh, 0
        if not can_resume(fresh):
            _say(f"{kind} cannot resume (it has neither partial_fit nor warm_start=True); "
                 "retraining from scratch")
            return fresh, 0
        expected = _simple_params(fresh)

        def load(info: CheckpointInfo) -> M:
            import joblib

            model = joblib.load(info.path / SKLEARN_MODEL_FILE)
            if type(model).__name__ != kind:
                raise TypeError(f"it holds a {type(model).__name__}, the code makes a {kind}")
            changed = sorted(k for k, v in _simple_params(model).items() if expected.get(k, v) != v)
            if changed:
                raise ValueError(f"its hyperparameters differ ({', '.join(changed)})")
            return model

        loaded = folder.load(load, kind, self.params_hash)
        if loaded is None:
            return fresh, 0
        model, info = loaded
        _say(f"{kind}: resuming from the checkpoint of epoch {info.epoch}")
        return model, info.epoch

    def save(self, model: Any, epoch: int) -> Path | None:
        """Checkpoint after an epoch (atomically; the previous one stays as the backup)."""
        kind = type(model).__name__
        meta = {"framework": "sklearn", "estimator": kind, "params_hash": self.params_hash,
                "name": self.name}
        if not can_resume(model):
            # Nothing worth saving: a restart retrains it. A marker says so (the monitor reads it).
            if not self._warned_not_resumable:
                self._warned_not_resumable = True
                _say(f"{kind} cannot resume (it has neither partial_fit nor warm_start=True);"
                     " a restart retrains it from scratch")
                self.folder.write(epoch, {**meta, "resumable": False}, lambda _folder: None)
            return None

        def save(folder: Path) -> None:
            import joblib

            joblib.dump(model, folder / SKLEARN_MODEL_FILE)

        return self.folder.write(epoch, {**meta, "resumable": True}, save).path


_default_checkpoint: SklearnCheckpoint | None = None


def _sklearn_checkpoint() -> SklearnCheckpoint:
    global _default_checkpoint
    if _default_checkpoint is None:
        _default_checkpoint = SklearnCheckpoint()
    return _default_checkpoint


def resume(make_model: Callable[[], M]) -> tuple[M, int]:
    """``model, done = sdk.resume(make_model)``: the last checkpoint's model and epoch, or a
    new model and 0. Train on from epoch ``done + 1``."""
    return _sklearn_checkpoint().resume(make_model)


def checkpoint(model: Any, epoch: int) -> Path | None:
    """Save the model after ``epoch`` (1-based, like log_epoch): atomic, the previous one kept."""
    return _sklearn_checkpoint().save(model, epoch)


# --- what the monitor tells about a trial's checkpoints -------------------------------

def checkpoint_summary(directory: Path, values: Mapping[str, Any] | None = None) -> str:
    """One line on where a restart of this trial will start (read by the monitor, on the host)."""
    wanted = params_hash(values) if values is not None else None
    newest: CheckpointInfo | None = None
    if directory.is_dir():
        for child in sorted(directory.iterdir()):
            if child.is_symlink() or not child.is_dir() or (wanted and not child.name.endswith(f"-{wanted}")):
                continue
            for info in CheckpointFolder(child).checkpoints():
                if newest is None or info.meta.get("time", 0) > newest.meta.get("time", 0):
                    newest = info
                break
    if newest is None:
        return "no checkpoint yet: training starts from scratch"
    what = newest.meta.get("estimator") or newest.meta.get("framework") or "model"
    if not newest.resumable:
        return f"{what} cannot resume (neither partial_fit nor warm_start): retraining from scratch"
    return f"resuming {what} from the checkpoint of epoch {newest.epoch}"


# --- Keras -----------------------------------------------------------------------------

def keras_callbacks(progress: bool = True) -> list[Any]:
    """Checkpoint/restore (each epoch, in a folder keyed by the params) and a progress line."""
    from mlchain.keras_callbacks import CheckpointAndRestore, ProgressLines

    folder = CheckpointFolder(checkpoint_folder("keras"))
    callbacks: list[Any] = [CheckpointAndRestore(folder, params_hash(), _say)]
    if progress:
        callbacks.append(ProgressLines(log_epoch))
    return callbacks
