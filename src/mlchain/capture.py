"""Taking the held-out metric and the model from training code that never calls the sdk.

Runs inside the training process (``mlchain-train``), so it imports only the standard
library at module level: the frameworks are hooked when the training code imports them.

How the hooks are installed: :class:`PostImportHooks`, a ``sys.meta_path`` finder, lets the
normal finders load ``sklearn.base``, ``sklearn.metrics``, ``keras`` and ``tf_keras``, then
wraps a few of their functions with plain wrappers (nothing else is changed, no other module
is touched). A wrapper records only calls made by the training code itself (its caller's
file is in the repository, or is a notebook's cell) and only the outermost one (a metric
computed inside ``score`` is the score's), then returns what the library returned.

What is recorded, and the order of preference (:func:`choose`):

1. ``sdk.report(...)``: the code said which metric counts.
2. Evaluation on held-out data: ``sklearn.metrics.accuracy_score`` (and the other scores)
   whose ``y_true`` is not an array passed to ``fit``; ``estimator.score(X, y)`` and Keras'
   ``model.evaluate(x, y)`` whose ``x`` is not an array passed to ``fit``. The last one wins.
3. Validation metrics: the last epoch's ``val_*`` of Keras' ``model.fit`` history.

Training-set metrics (the arrays passed to ``fit``, by identity) never count.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import linecache
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType, ModuleType
from typing import Any

MAX_KEPT = 1000
SDK_REPORT = "sdk.report"
HELD_OUT = "held-out"
VALIDATION = "validation"
TRAINING = "training"
PREFERENCE = (HELD_OUT, VALIDATION)  # sdk.report beats both; training never counts

# sklearn.metrics functions whose result can gate -> the metric's name.
SKLEARN_METRICS = {
    "accuracy_score": "accuracy",
    "balanced_accuracy_score": "balanced_accuracy",
    "f1_score": "f1",
    "precision_score": "precision",
    "recall_score": "recall",
    "roc_auc_score": "roc_auc",
    "r2_score": "r2",
    "mean_squared_error": "mean_squared_error",
    "mean_absolute_error": "mean_absolute_error",
    "log_loss": "log_loss",
}
# Keras' names of accuracy -> the one name the gate uses.
_ACCURACY_ALIASES = frozenset({"acc", "accuracy", "sparse_categorical_accuracy", "categorical_accuracy",
                               "binary_accuracy"})
LOOKED_FOR = ("sdk.report({...})", "sklearn.metrics calls (accuracy_score, f1_score, ...) on held-out labels",
              "estimator.score(X, y) on data not passed to fit", "Keras model.evaluate(x, y) on data not passed to fit",
              "the last epoch's val_* of Keras model.fit(..., validation_data=...)")


def metric_name(name: str) -> str:
    """A library's metric name as the gate names it (``sparse_categorical_accuracy`` -> ``accuracy``)."""
    return "accuracy" if name in _ACCURACY_ALIASES else name


@dataclass
class Observation:
    """One metric seen: its value, where it came from and on what data."""

    name: str
    value: float
    kind: str  # HELD_OUT | VALIDATION | TRAINING | SDK_REPORT
    call: str  # the call as written (``model.evaluate(x_test, y_test)``)
    where: str  # file:line in the training code
    model: Any = None  # the model the metric is of (None: not known)

    def describe(self) -> str:
        return f"{self.name} {self.value:.4g} from {self.call} at {self.where}"


@dataclass
class Recorder:
    """What the hooks saw during one run of the training code."""

    roots: tuple[str, ...] = ()  # folders of the training code (absolute)
    files: set[str] = field(default_factory=set)  # other file names that are training code (notebook cells)
    # Bounded: a loop that fits or scores per epoch keeps only the latest (and the data they hold).
    observations: deque[Observation] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    fitted: deque[tuple[Any, Any, Any]] = field(default_factory=lambda: deque(maxlen=MAX_KEPT))  # (model, x, y)
    depth: int = 0

    def user_frame(self, frame: FrameType | None) -> FrameType | None:
        """``frame`` when it runs training code (not a library's), else None."""
        if frame is None:
            return None
        name = frame.f_code.co_filename
        if name in self.files:
            return frame
        path = os.path.abspath(name)
        return frame if any(path.startswith(root + os.sep) for root in self.roots) else None

    def where(self, frame: FrameType) -> str:
        name = frame.f_code.co_filename
        if name not in self.files:
            for root in self.roots:
                if os.path.abspath(name).startswith(root + os.sep):
                    name = os.path.relpath(os.path.abspath(name), root)
                    break
        return f"{name}:{frame.f_lineno}"

    def trained_on(self, data: Any) -> bool:
        """Whether ``data`` is (by identity) an array some ``fit`` was given."""
        return data is not None and any(data is x or data is y for _, x, y in self.fitted)

    def last_model(self) -> Any:
        return self.fitted[-1][0] if self.fitted else None


RECORDER = Recorder()


def call_text(frame: FrameType, method: str) -> str:
    """The call as the code wrote it, from its source line (``model.evaluate(x_test, y_test)``)."""
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    try:
        tree = ast.parse(line)
    except SyntaxError:
        return line[:120] or f"{method}()"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == method:
                return ast.unparse(node)[:120]
    return line[:120]


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number  # NaN never gates


def _recorded(method: str, on_return: Callable[[FrameType, Any, tuple[Any, ...], dict[str, Any]], None],
              original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` that calls ``on_return`` after an outermost call made by the training code."""
    if getattr(original, "__mlchain_hooked__", False):
        return original

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rec = RECORDER
        frame = rec.user_frame(sys._getframe(1)) if rec.depth == 0 else None
        rec.depth += 1
        try:
            result = original(*args, **kwargs)
        finally:
            rec.depth -= 1
        if frame is not None:
            try:
                on_return(frame, result, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - a hook must never break the training
                print(f"mlchain: could not record {method}: {type(exc).__name__}: {exc}", flush=True)
        return result

    wrapper.__mlchain_hooked__ = True  # type: ignore[attr-defined]
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(wrapper, attr, getattr(original, attr))
        except (AttributeError, TypeError):
            pass
    return wrapper


# --- scikit-learn ---------------------------------------------------------------------

def _on_sklearn_fit(frame: FrameType, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    model = args[0]
    RECORDER.fitted.append((model, _arg(args, kwargs, 1, "X"), _arg(args, kwargs, 2, "y")))


def _score_name(model: Any) -> str:
    if getattr(model, "scoring", None) not in (None, "accuracy") and hasattr(model, "best_estimator_"):
        return "score"  # a search with its own scorer
    kind = getattr(model, "_estimator_type", None)
    try:
        kind = model.__sklearn_tags__().estimator_type
    except Exception:  # noqa: BLE001,S110 - older scikit-learn: the attribute above
        pass
    return {"classifier": "accuracy", "regressor": "r2"}.get(str(kind), "score")


def _on_sklearn_score(frame: FrameType, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = _as_float(result)
    if value is None:
        return
    model, x = args[0], _arg(args, kwargs, 1, "X")
    kind = TRAINING if RECORDER.trained_on(x) else HELD_OUT
    RECORDER.observations.append(Observation(_score_name(model), value, kind, call_text(frame, "score"),
                                             RECORDER.where(frame), model))


def _sklearn_metric(function: str) -> Callable[[FrameType, Any, tuple[Any, ...], dict[str, Any]], None]:
    def on_return(frame: FrameType, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        value = _as_float(result)
        if value is None:
            return
        y_true = _arg(args, kwargs, 0, "y_true")
        kind = TRAINING if RECORDER.trained_on(y_true) else HELD_OUT
        RECORDER.observations.append(Observation(SKLEARN_METRICS[function], value, kind,
                                                 call_text(frame, function), RECORDER.where(frame),
                                                 RECORDER.last_model()))
    return on_return


def _wrap_estimator_class(cls: type) -> None:
    """Wrap ``fit`` and ``score`` where the class defines them itself (a method offered only
    when the final step has it, as ``Pipeline.score``, is a descriptor: its function is wrapped)."""
    for method, hook in (("fit", _on_sklearn_fit), ("score", _on_sklearn_score)):
        original = cls.__dict__.get(method)
        if callable(original):
            setattr(cls, method, _recorded(method, hook, original))
        elif original is not None and callable(getattr(original, "fn", None)):  # sklearn.utils._available_if
            original.fn = _recorded(method, hook, original.fn)


def hook_sklearn_base(module: ModuleType) -> None:
    """Every estimator class defined from now on gets its ``fit``/``score`` wrapped (through
    ``BaseEstimator.__init_subclass__``); the mixins' ``score`` are wrapped now."""
    base = module.BaseEstimator
    for mixin in ("ClassifierMixin", "RegressorMixin"):
        cls = getattr(module, mixin, None)
        if cls is not None:
            _wrap_estimator_class(cls)

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        super(base, cls).__init_subclass__(**kwargs)
        _wrap_estimator_class(cls)

    base.__init_subclass__ = classmethod(__init_subclass__)


def hook_sklearn_metrics(module: ModuleType) -> None:
    for function in SKLEARN_METRICS:
        original = getattr(module, function, None)
        if callable(original):
            setattr(module, function, _recorded(function, _sklearn_metric(function), original))


# --- Keras -----------------------------------------------------------------------------

def _on_keras_fit(frame: FrameType, history: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    model = args[0]
    RECORDER.fitted.append((model, _arg(args, kwargs, 1, "x"), _arg(args, kwargs, 2, "y")))
    logs = getattr(history, "history", None) or {}
    call, where = call_text(frame, "fit"), RECORDER.where(frame)
    for key, values in logs.items():
        if not key.startswith("val_") or not values:
            continue
        value = _as_float(values[-1])
        if value is not None:
            RECORDER.observations.append(Observation(metric_name(key[4:]), value, VALIDATION,
                                                     f"the last epoch's {key} of {call}", where, model))


def _evaluation_results(model: Any, result: Any) -> dict[str, float]:
    if isinstance(result, dict):
        raw = result
    else:
        getter = getattr(model, "get_metrics_result", None)
        raw = getter() if callable(getter) else {}
        if not raw:
            values = result if isinstance(result, (list, tuple)) else [result]
            raw = dict(zip(getattr(model, "metrics_names", []) or ["loss"], values, strict=False))
    out = {}
    for key, value in raw.items():
        number = _as_float(value)
        if number is not None:
            out[metric_name(str(key))] = number
    return out


def _on_keras_evaluate(frame: FrameType, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    model, x = args[0], _arg(args, kwargs, 1, "x")
    kind = TRAINING if RECORDER.trained_on(x) else HELD_OUT
    call, where = call_text(frame, "evaluate"), RECORDER.where(frame)
    for name, value in _evaluation_results(model, result).items():
        RECORDER.observations.append(Observation(name, value, kind, call, where, model))


def hook_keras(module: ModuleType) -> None:
    model = getattr(module, "Model", None)
    if model is None:
        return
    for method, hook in (("fit", _on_keras_fit), ("evaluate", _on_keras_evaluate)):
        original = getattr(model, method, None)
        if callable(original):
            setattr(model, method, _recorded(method, hook, original))


def _on_report(frame: FrameType, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    reported = _arg(args, kwargs, 0, "metrics") or {}
    call, where = call_text(frame, "report"), RECORDER.where(frame)
    for name, value in reported.items():
        number = _as_float(value)
        if number is not None:
            RECORDER.observations.append(Observation(str(name), number, SDK_REPORT, call, where))


def hook_sdk(module: ModuleType) -> None:
    """``sdk.report`` is recorded too, so that its metric says where it was reported."""
    module.report = _recorded("report", _on_report, module.report)  # type: ignore[attr-defined]


HOOKS: dict[str, Callable[[ModuleType], None]] = {
    "sklearn.base": hook_sklearn_base,
    "sklearn.metrics": hook_sklearn_metrics,
    "keras": hook_keras,
    "tf_keras": hook_keras,
}


class _HookedLoader(importlib.abc.Loader):
    """The real loader, then the module's hook (once: the finder forgets it then)."""

    def __init__(self, loader: importlib.abc.Loader, finder: PostImportHooks) -> None:
        self.loader = loader
        self.finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package ...: the real loader's
        return getattr(self.loader, name)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        hook = self.finder.hooks.pop(module.__name__, None)
        if hook is None:
            return
        try:
            hook(module)
        except Exception as exc:  # noqa: BLE001 - a hook must never break the import
            print(f"mlchain: could not hook {module.__name__}: {type(exc).__name__}: {exc}", flush=True)


class PostImportHooks(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that lets the other finders find the hooked modules and
    runs their hook once each has been executed. Every other module is left to the others."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]) -> None:
        self.hooks = dict(hooks)  # the modules not yet hooked

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                # A probe (importlib.util.find_spec) gets a spec too: the hook is forgotten
                # only when the module is executed.
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, self)
                return spec
        return None


def install(roots: Sequence[str | os.PathLike[str]]) -> Recorder:
    """Hook the frameworks for training code under ``roots``; hooks modules already imported too."""
    from mlchain import sdk

    RECORDER.roots = tuple(os.path.abspath(r) for r in roots)
    hook_sdk(sdk)
    finder = PostImportHooks(HOOKS)
    for name in list(finder.hooks):
        module = sys.modules.get(name)
        if module is not None:
            finder.hooks.pop(name)(module)
    sys.meta_path.insert(0, finder)
    return RECORDER


# --- the decision (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """The gate metric taken, or why none was."""

    observation: Observation | None
    metrics: dict[str, float]  # what goes into metrics.json (the chosen call's metrics)
    problem: str | None = None  # no metric: what was looked for, what was found, the line to add


def choose(observations: Sequence[Observation], metric: str) -> Choice:
    """The gate metric by the order of preference (module docstring): the last held-out
    evaluation of ``metric``, else the last validation value; training values never."""
    for kind in PREFERENCE:
        matching = [o for o in observations if o.kind == kind and o.name == metric]
        if matching:
            chosen = matching[-1]
            same_call = {o.name: o.value for o in observations
                         if o.kind == kind and o.where == chosen.where and o.call == chosen.call}
            return Choice(chosen, {**same_call, metric: chosen.value})
    return Choice(None, {}, no_metric_problem(observations, metric))


def no_metric_problem(observations: Sequence[Observation], metric: str) -> str:
    seen = [o for o in observations if o.name == metric and o.kind == TRAINING]
    others = sorted({o.name for o in observations if o.kind in PREFERENCE and o.name != metric})
    found = ""
    if seen:
        found += f"; found only training-set {metric} ({seen[-1].describe()}), which never counts"
    if others:
        found += f"; found held-out or validation metrics other than {metric}: {', '.join(others)}"
    return (f"no held-out {metric} found: looked for {'; '.join(LOOKED_FOR)}{found or '; found none'}."
            f" Add one line at the end of training: from mlchain import sdk;"
            f" sdk.report({{'{metric}': <{metric} on held-out data>}})")
