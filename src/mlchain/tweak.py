"""The search for the next architecture: Optuna's ask-and-tell over persistent storage,
one study per repository and branch. The first trial is the repository's own params;
later ones come from the search space in mlchain.yaml, or the default space of the
framework restricted to the params the repository actually has.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlchain import searchplan
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
            opened = _STORAGES[url] = _create_rdb_storage(url)
        return opened


SCHEMA_RACE_ATTEMPTS = 3


def _create_rdb_storage(url: str) -> Any:
    """RDBStorage(url), when several agents may open a new database at once: each creates the
    schema, and PostgreSQL lets one transaction win (the others fail on the types or tables it
    made). The schema is created in one transaction, so the next try of a loser finds it."""
    import optuna
    import sqlalchemy.exc

    for _ in range(SCHEMA_RACE_ATTEMPTS - 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            continue  # another agent's schema won: look again
    return optuna.storages.RDBStorage(url)


def make_sampler(name: str, seed: int, startup: int) -> optuna.samplers.BaseSampler:
    """Plain random search, or multivariate TPE (it models the dimensions together: an
    architecture's learning rate and depth interact) after ``startup`` random trials."""
    import warnings

    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # multivariate is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner judges a trial at epochs 1, 3, 9, ... against the others at the same epoch."""
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=searchplan.PRUNE_MIN_EPOCHS,
                                              reduction_factor=searchplan.PRUNE_REDUCTION)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=searchplan.PRUNE_MIN_EPOCHS,
                                                      reduction_factor=searchplan.PRUNE_REDUCTION)
    return optuna.pruners.NopPruner()


class Search:
    """One study per repository and branch, in any Optuna storage (SQLite by default)."""

    def __init__(self, storage: str, name: str, direction: str = DEFAULT_DIRECTION, seed: int = 0,
                 strategy: searchplan.Strategy | None = None,
                 space: Mapping[str, ParamSpec] | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = name
        self.direction = direction
        self.storage = storage
        self.strategy = strategy or searchplan.Strategy()
        self.study = optuna.create_study(study_name=name, storage=open_storage(storage),
                                         direction="maximize" if direction == "maximize" else "minimize",
                                         pruner=make_pruner(self.strategy.pruner), load_if_exists=True)
        # Every job is a fresh process: seed by study and progress so that successive asks
        # do not replay the same random start-up draws, yet a run can be replayed.
        mixed = int(hashlib.sha256(f"{name}:{seed}:{len(self.study.trials)}".encode()).hexdigest()[:8], 16)
        self.study.sampler = make_sampler(self.strategy.sampler, mixed, searchplan.startup_trials(space or {}))

    def ask(self, space: Mapping[str, ParamSpec], base: Mapping[str, Any],
            run_id: str | None = None) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(distributions(space))
        trial.set_user_attr(searchplan.SPACE_HASH_ATTR, searchplan.space_hash(space))
        if run_id is not None:
            trial.set_user_attr(searchplan.RUN_ATTR, run_id)
        return trial.number, {**base, **trial.params}

    def enqueue(self, params: Mapping[str, Any]) -> None:
        """The next ask returns these params (a warm start)."""
        self.study.enqueue_trial(dict(params), skip_if_exists=False)

    def past_trials(self) -> list[searchplan.PastTrial]:
        """The study's completed trials, with the push and the space each came from."""
        import optuna

        return [searchplan.PastTrial(run_id=t.user_attrs.get(searchplan.RUN_ATTR),
                                     space_hash=t.user_attrs.get(searchplan.SPACE_HASH_ATTR),
                                     value=t.value, params=t.params)
                for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]

    def mark_space(self, space: Mapping[str, ParamSpec]) -> str | None:
        """Record the space of this push on the study; returns the previous push's (None at first)."""
        previous = self.study.user_attrs.get(searchplan.SPACE_HASH_ATTR)
        self.study.set_user_attr(searchplan.SPACE_HASH_ATTR, searchplan.space_hash(space))
        return None if previous is None else str(previous)

    def report(self, optuna_trial: int, values: Sequence[tuple[int, float]]) -> int | None:
        """Tell the study a running trial's per-epoch values, judging after each: the epoch at
        which the pruner stopped it, or None. Epochs the study has already are skipped."""
        import optuna

        # Optuna reopens a running trial by its id only; job3 knows its number (job4 asked it).
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, optuna_trial)
        frozen = storage.get_trial(trial_id)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            return None
        trial = optuna.trial.Trial(self.study, trial_id)
        known = frozen.intermediate_values
        for epoch, value in values:
            if epoch in known:
                continue
            trial.report(value, epoch)
            if trial.should_prune():
                return epoch
        return None

    def tell(self, optuna_trial: int, value: float | None, pruned: bool = False) -> None:
        import optuna

        existing = self.study.trials[optuna_trial] if optuna_trial < len(self.study.trials) else None
        if existing is not None and existing.state != optuna.trial.TrialState.RUNNING:
            return  # told already (a job run twice after a resume)
        if pruned:
            self.study.tell(optuna_trial, state=optuna.trial.TrialState.PRUNED)
        elif value is None:
            self.study.tell(optuna_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(optuna_trial, value)

    def add_baseline(self, params: Mapping[str, Any], space: Mapping[str, ParamSpec], value: float | None,
                     curve: Sequence[tuple[int, float]] = (), run_id: str | None = None) -> bool:
        """Teach the study the repository's own params (and their learning curve, which the
        pruner compares later trials with), when they fit the space."""
        import optuna

        dists = distributions(space)
        fitted = {k: params[k] for k in dists if k in params}
        if value is None or len(fitted) != len(dists):
            return False
        attrs: dict[str, Any] = {searchplan.SPACE_HASH_ATTR: searchplan.space_hash(space)}
        if run_id is not None:
            attrs[searchplan.RUN_ATTR] = run_id
        try:  # create_trial refuses (ValueError) a value outside its distribution
            rungs = searchplan.halving_rungs(curve) if self.strategy.pruner == "halving" else {}
            self.study.add_trial(optuna.trial.create_trial(params=fitted, distributions=dists, value=value,
                                                           intermediate_values=dict(curve), user_attrs=attrs,
                                                           system_attrs=rungs))
        except (ValueError, TypeError):
            return False
        return True


# Hyperparameters found as literals in the code (mlchain.literals): a literal's kind -> its
# dimension in the framework's default space, and the dimensions only found literals have.
LITERAL_KIND_DIMENSIONS = {"units": "dense_units", "rate": "dropout"}
LITERAL_ONLY_SPACES: dict[str, ParamSpec] = {
    "dense_blocks": ParamSpec(type="int", low=1, high=3),
    "max_iter": ParamSpec(type="int", low=100, high=2000, log=True),
}


def literal_space(framework: str, kinds: Mapping[str, str]) -> dict[str, ParamSpec]:
    """The search space of the literals found in the code (name -> kind, as
    ``mlchain.literals.Found.kinds()`` gives them): each is searched in the default range of its
    kind (``dense_1.units`` as ``dense_units``), the framework's first; a kind with no default
    range is not searched."""
    own = DEFAULT_SPACES.get("keras" if framework == "keras2" else framework, {})
    other = {k: v for space in DEFAULT_SPACES.values() for k, v in space.items()}
    space: dict[str, ParamSpec] = {}
    for name, kind in kinds.items():
        dimension = LITERAL_KIND_DIMENSIONS.get(kind, kind)
        spec = own.get(dimension) or LITERAL_ONLY_SPACES.get(dimension) or other.get(dimension)
        if spec is not None:
            space[name] = spec
    return space
