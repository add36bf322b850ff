"""The search for the next architecture: Optuna's ask-and-tell over persistent storage,
one study per repository and branch. The first trial is the repository's own params;
later ones come from the search space in mlchain.yaml, or the default space of the
framework restricted to the params the repository actually has.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlchain.errors import ConfigError
from mlchain.gate import DEFAULT_DIRECTION
from mlchain.repo_config import ParamSpec

if TYPE_CHECKING:
    import optuna

# Documented default spaces (README, "The search"): they change the architecture and the
# training knobs. Only keys the repository's params already have are searched.
DEFAULT_SPACES: dict[str, dict[str, ParamSpec]] = {
    "keras": {
        "conv_blocks": ParamSpec(type="int", low=1, high=3),
        "filters": ParamSpec(type="categorical", choices=[16, 32, 64]),
        "kernel_size": ParamSpec(type="categorical", choices=[3, 5]),
        "dense_units": ParamSpec(type="categorical", choices=[32, 64, 128, 256]),
        "dropout": ParamSpec(type="float", low=0.0, high=0.5),
        "learning_rate": ParamSpec(type="float", low=1e-4, high=1e-2, log=True),
        "epochs": ParamSpec(type="int", low=5, high=20),
        "batch_size": ParamSpec(type="categorical", choices=[32, 64, 128]),
    },
    "sklearn": {
        "hidden_layers": ParamSpec(type="int", low=1, high=3),
        "hidden_units": ParamSpec(type="categorical", choices=[32, 64, 128, 256]),
        "n_estimators": ParamSpec(type="int", low=50, high=400, log=True),
        "max_depth": ParamSpec(type="int", low=2, high=32, log=True),
        "alpha": ParamSpec(type="float", low=1e-6, high=1e-2, log=True),
        "C": ParamSpec(type="float", low=1e-3, high=1e3, log=True),
        "learning_rate": ParamSpec(type="float", low=1e-4, high=1e-1, log=True),
        "epochs": ParamSpec(type="int", low=5, high=50),
        "batch_size": ParamSpec(type="categorical", choices=[32, 64, 128]),
    },
}


DEFAULT_SPACES["keras2"] = DEFAULT_SPACES["keras"]  # Keras 2 code tunes the same knobs


def study_name(repo_name: str, branch: str | None) -> str:
    return f"mlchain:{repo_name}@{branch or 'HEAD'}"


def search_space(framework: str, configured: Mapping[str, ParamSpec], params: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """mlchain.yaml's ``search:``, else the framework's default space restricted to the params the
    repository has; empty when there is nothing to tune (the gate then stops, saying so)."""
    if configured:
        return dict(configured)
    return {k: v for k, v in DEFAULT_SPACES.get(framework, {}).items() if k in params}


def distributions(space: Mapping[str, ParamSpec]) -> dict[str, optuna.distributions.BaseDistribution]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def one(name: str, spec: ParamSpec) -> optuna.distributions.BaseDistribution:
        if spec.type == "categorical":
            odd = [c for c in spec.choices or [] if c is not None and not isinstance(c, (bool, int, float, str))]
            if odd:
                raise ConfigError(f"search.{name}: a categorical choice must be a number, a string, true/false"
                                  f" or null, got {odd[0]!r}",
                                  hint=f"list plain values in mlchain.yaml's search.{name}.choices")
            return CategoricalDistribution(list(spec.choices or []))
        if spec.type == "int":
            return IntDistribution(int(spec.low or 0), int(spec.high or 0), log=spec.log,
                                   step=int(spec.step) if spec.step and not spec.log else 1)
        return FloatDistribution(float(spec.low or 0), float(spec.high or 0), log=spec.log,
                                 step=spec.step if spec.step and not spec.log else None)

    return {name: one(name, spec) for name, spec in space.items()}


_STORAGES: dict[str, Any] = {}
_STORAGES_LOCK = threading.Lock()


def open_storage(url: str) -> Any:
    """The Optuna storage for ``url``, opened once per process (opening an RDB storage checks
    its schema; a run with several trials asks the study several times)."""
    if "://" not in url:
        return url  # not an RDB URL: let Optuna interpret it
    with _STORAGES_LOCK:
        opened = _STORAGES.get(url)
        if opened is None:
            import optuna

            opened = _STORAGES[url] = optuna.storages.RDBStorage(url)
        return opened


class Search:
    """One study per repository and branch, in any Optuna storage (SQLite by default)."""

    def __init__(self, storage: str, name: str, direction: str = DEFAULT_DIRECTION, seed: int = 0) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = name
        self.direction = direction
        self.storage = storage
        self.study = optuna.create_study(study_name=name, storage=open_storage(storage),
                                         direction="maximize" if direction == "maximize" else "minimize",
                                         load_if_exists=True)
        # Every job is a fresh process: seed by study and progress so that successive asks
        # do not replay the same random start-up draws, yet a run can be replayed.
        mixed = int(hashlib.sha256(f"{name}:{seed}:{len(self.study.trials)}".encode()).hexdigest()[:8], 16)
        self.study.sampler = optuna.samplers.TPESampler(seed=mixed, n_startup_trials=5)

    def ask(self, space: Mapping[str, ParamSpec], base: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(distributions(space))
        return trial.number, {**base, **trial.params}

    def tell(self, optuna_trial: int, value: float | None) -> None:
        import optuna

        existing = self.study.trials[optuna_trial] if optuna_trial < len(self.study.trials) else None
        if existing is not None and existing.state != optuna.trial.TrialState.RUNNING:
            return  # told already (a job run twice after a resume)
        if value is None:
            self.study.tell(optuna_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(optuna_trial, value)

    def add_baseline(self, params: Mapping[str, Any], space: Mapping[str, ParamSpec], value: float | None) -> bool:
        """Teach the study the repository's own params, when they fit the space."""
        import optuna

        dists = distributions(space)
        fitted = {k: params[k] for k in dists if k in params}
        if value is None or len(fitted) != len(dists):
            return False
        try:  # create_trial refuses (ValueError) a value outside its distribution
            self.study.add_trial(optuna.trial.create_trial(params=fitted, distributions=dists, value=value))
        except (ValueError, TypeError):
            return False
        return True
