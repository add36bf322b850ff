"""The served model: which registry version to serve, loading it, and swapping versions.

:class:`ModelHolder` holds the one :class:`LoadedModel` that batches read (one attribute,
replaced whole: a batch reads it once, so a swap falls between batches). :class:`AliasWatcher`
polls the registry in a thread and, when the alias names another version, loads that version
beside the serving one and swaps it in; a version that fails to load is recorded (reason,
time) and not tried again until the alias moves, while the old one keeps serving.
:func:`next_version_to_load` is the decision, pure.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlchain.errors import MlchainError, NotFound
from mlchain.serving.protocol import InputSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from mlchain.config import Settings

log = logging.getLogger("mlchain.serving")

DEFAULT_ALIAS = "champion"


class ModelLoadError(NotFound):
    """A registered version could not be loaded (its files are missing or not a model)."""


@dataclass(frozen=True)
class Target:
    """What to serve: a registered model by alias (followed as it moves) or a fixed version."""

    name: str
    alias: str | None = DEFAULT_ALIAS
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.version else f"models:/{self.name}@{self.alias}"


@dataclass
class LoadedModel:
    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]  # the run's mlchain.* tags (repository, commit, ...)
    pyfunc: Any
    spec: InputSpec
    loaded_at: float
    schema: Any = None  # the signature's input schema (MLflow's parser casts by it), if any
    files: Path | None = None  # the downloaded copy, removed once replaced

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        if params:
            return self.pyfunc.predict(data, params=params)
        return self.pyfunc.predict(data)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id,
                "repository": self.tags.get("mlchain.remote") or self.tags.get("mlchain.repo"),
                "repo": self.tags.get("mlchain.repo"), "commit": self.tags.get("mlchain.commit"),
                "framework": self.tags.get("mlchain.framework"),
                "loaded_at": _iso(self.loaded_at)}

    def discard(self) -> None:
        if self.files is not None:
            shutil.rmtree(self.files, ignore_errors=True)


@dataclass(frozen=True)
class LoadFailure:
    version: str
    reason: str
    at: float

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "reason": self.reason, "at": _iso(self.at)}


def next_version_to_load(serving: str | None, wanted: str | None, failed: str | None) -> str | None:
    """The version to load now: the one the registry names, unless it is already serving or it
    already failed to load (tried again only once the alias has moved on and back)."""
    if wanted is None or wanted == serving or wanted == failed:
        return None
    return wanted


@dataclass
class ModelHolder:
    """The serving model and what the last load attempt said; read by every batch and route."""

    target: Target
    current: LoadedModel | None = None
    last_failure: LoadFailure | None = None
    on_swap: list[Callable[[LoadedModel], None]] = field(default_factory=list)
    on_failure: list[Callable[[LoadFailure], None]] = field(default_factory=list)
    on_recover: list[Callable[[], None]] = field(default_factory=list)

    def swap(self, model: LoadedModel) -> None:
        old, self.current = self.current, model  # one assignment: batches see old or new, whole
        self.last_failure = None
        for hook in self.on_swap:
            hook(model)
        if old is not None and old is not model:
            old.discard()
            log.info("serving %s version %s (was %s)", model.name, model.version, old.version)
        else:
            log.info("serving %s version %s", model.name, model.version)

    def recovered(self) -> None:
        self.last_failure = None
        for hook in self.on_recover:
            hook()

    def failed(self, failure: LoadFailure) -> None:
        self.last_failure = failure
        for hook in self.on_failure:
            hook(failure)
        serving = f"version {self.current.version} keeps serving" if self.current else "nothing is serving"
        log.error("could not load %s version %s: %s (%s)", self.target.name, failure.version,
                  failure.reason, serving)


class Registry:
    """The MLflow registry the settings name: resolving the target, loading a version."""

    def __init__(self, settings: Settings) -> None:
        from mlchain import tracking

        self.settings = settings
        self.client: MlflowClient = tracking.client(settings)

    def wanted_version(self, target: Target) -> str:
        """The version the target names now; NotFound when the model or alias does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            if target.version is not None:
                return str(self.client.get_model_version(target.name, target.version).version)
            return str(self.client.get_model_version_by_alias(target.name, str(target.alias)).version)
        except MlflowException as exc:
            # The registry is named by its setting, never by its URI: that may hold a password.
            raise NotFound(f"{target.uri} does not exist in the registry (MLFLOW_REGISTRY_URI, else "
                           f"MLFLOW_TRACKING_URI): {_first_line(exc)}",
                           hint=f"register a model named {target.name!r} with the alias {target.alias!r} "
                                f"(a chain run whose gate passes does), or pass --version"
                           if target.version is None else "pass a version that is registered") from None

    def load(self, name: str, version: str) -> LoadedModel:
        """Download and load one version; ModelLoadError (with the reason) when it cannot be."""
        import mlflow.artifacts
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        try:
            record = self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise NotFound(f"models:/{name}/{version} does not exist: {_first_line(exc)}") from None
        files: Path | None = None
        try:
            uri = self.client.get_model_version_download_uri(name, version)
            if uri.startswith("file:") or "://" not in uri:  # on this machine: loaded where it lies
                local = uri
            else:
                files = Path(tempfile.mkdtemp(prefix=f"mlchain-serve-{version}-"))
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(files),
                                                            tracking_uri=self.settings.resolved_tracking_uri)
            pyfunc = mlflow.pyfunc.load_model(local)
            tags: dict[str, str] = {}
            if record.run_id:
                try:
                    run = self.client.get_run(record.run_id)
                    tags = {k: v for k, v in run.data.tags.items() if k.startswith("mlchain.")}
                except MlflowException:
                    tags = {}  # the run was deleted: the model still serves, without its provenance
        except Exception as exc:  # noqa: BLE001 - whatever the files were, this version does not serve
            if files is not None:
                shutil.rmtree(files, ignore_errors=True)
            raise ModelLoadError(f"models:/{name}/{version} could not be loaded: {_first_line(exc)}",
                                 hint="register a version whose files are an MLflow model "
                                      "(sdk.save_model writes one)") from None
        return LoadedModel(name=name, version=str(version), run_id=record.run_id, tags=tags, pyfunc=pyfunc,
                           spec=input_spec(pyfunc), loaded_at=time.time(), files=files,
                           schema=input_schema(pyfunc))


def input_schema(pyfunc: Any) -> Any:
    try:
        return pyfunc.metadata.get_input_schema()
    except Exception:  # noqa: BLE001 - an unreadable signature: the raw model may say
        return None


def input_spec(pyfunc: Any) -> InputSpec:
    """What the model takes: its signature when it has one, else what the raw model says."""
    schema = input_schema(pyfunc)
    if schema is not None:
        if schema.is_tensor_spec():
            specs = schema.inputs
            if len(specs) == 1 and specs[0].name is None:
                return InputSpec(row_shape=tuple(int(d) for d in specs[0].shape[1:]))
            return InputSpec()
        if schema.has_input_names():
            return InputSpec(columns=tuple(str(n) for n in schema.input_names()))
        return InputSpec(n_features=len(schema.inputs))
    try:
        raw = pyfunc.get_raw_model()
    except Exception:  # noqa: BLE001 - no raw model: nothing is checked before predict
        return InputSpec()
    names = getattr(raw, "feature_names_in_", None)
    if names is not None:
        return InputSpec(columns=tuple(str(n) for n in names))
    count = getattr(raw, "n_features_in_", None)
    if isinstance(count, int):
        return InputSpec(n_features=count, numeric=True)
    shape = getattr(raw, "input_shape", None)  # keras
    if isinstance(shape, tuple) and len(shape) > 1:
        return InputSpec(row_shape=tuple(-1 if d is None else int(d) for d in shape[1:]), numeric=True)
    return InputSpec()


class AliasWatcher:
    """Polls the registry every ``poll_s`` seconds (in its own thread) and swaps in the version
    the alias names; stops when :meth:`stop` is called."""

    def __init__(self, registry: Registry, holder: ModelHolder, poll_s: float) -> None:
        self.registry, self.holder, self.poll_s = registry, holder, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlchain-alias-watcher")
        self._missing_logged = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def check_once(self) -> None:
        """One poll: resolve the alias, load and swap when it names a new version."""
        try:
            wanted = self.registry.wanted_version(self.holder.target)
            self._missing_logged = False
        except NotFound as exc:
            if not self._missing_logged:
                log.warning("%s", exc.reason)
                self._missing_logged = True
            return
        except Exception as exc:  # noqa: BLE001 - the registry did not answer: keep serving, poll again
            log.warning("could not ask the registry for %s: %s", self.holder.target.uri, _first_line(exc))
            return
        serving = self.holder.current.version if self.holder.current else None
        failed = self.holder.last_failure.version if self.holder.last_failure else None
        if failed is not None and wanted == serving:  # the alias came back: nothing is failing now
            self.holder.recovered()
            return
        version = next_version_to_load(serving, wanted, failed)
        if version is None:
            return
        try:
            model = self.registry.load(self.holder.target.name, version)
        except MlchainError as exc:
            self.holder.failed(LoadFailure(version, exc.reason, time.time()))
            return
        self.holder.swap(model)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_once()


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0][:500] if str(text).strip() else type(exc).__name__


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
