"""How the search spends its trials, decided without Optuna: which sampler and pruner, how many
random start-up trials a space needs, which per-epoch value a pruner judges, whether a new push
starts from the previous push's best params. Pure: no I/O, no Optuna, so the unit tests and a
passing baseline (which never opens the study) use it for free."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # repo_config validates the names below: it imports this module
    from mlchain.repo_config import ParamSpec

SamplerName = Literal["tpe", "random"]
PrunerName = Literal["halving", "hyperband", "none"]
SAMPLERS: tuple[str, ...] = ("tpe", "random")
PRUNERS: tuple[str, ...] = ("halving", "hyperband", "none")
DEFAULT_SAMPLER: SamplerName = "tpe"
# Successive halving by default: with the handful of trials a gate needs, Hyperband splits them
# over brackets of one or two trials each, and a lone trial in a bracket is never pruned.
DEFAULT_PRUNER: PrunerName = "halving"
MAX_STARTUP_TRIALS = 5      # Optuna's TPE uses 10; the chain has about 6 trials in all
PRUNE_MIN_EPOCHS = 1        # the first rung: a trial is first judged after this many epochs
PRUNE_REDUCTION = 3         # each rung keeps the best third (the first trials: the best so far)
SPACE_HASH_ATTR = "space_hash"   # study and trial user attr: the space a trial was drawn from
RUN_ATTR = "mlchain_run"         # trial user attr: the chain run (push) that trained it
MAX_JUDGED_EPOCH = 10_000        # progress lines past this epoch are not told to the study (hostile flood)


@dataclass(frozen=True)
class Strategy:
    """The resolved search strategy of a run."""

    sampler: SamplerName = DEFAULT_SAMPLER
    pruner: PrunerName = DEFAULT_PRUNER

    @property
    def warm_start(self) -> bool:
        """Plain random search is the baseline to beat: it starts from nothing."""
        return self.sampler != "random"


def strategy(sampler: str | None, pruner: str | None) -> Strategy:
    """mlchain.yaml's ``search: {sampler, pruner}`` (or the flags): random search prunes nothing
    unless told to, so that it stays the plain baseline."""
    chosen_sampler: SamplerName = "random" if sampler == "random" else "tpe"
    if pruner is None:
        return Strategy(chosen_sampler, "none" if chosen_sampler == "random" else DEFAULT_PRUNER)
    chosen_pruner: PrunerName = "hyperband" if pruner == "hyperband" else "none" if pruner == "none" else "halving"
    return Strategy(chosen_sampler, chosen_pruner)


def space_size(space: Mapping[str, ParamSpec]) -> float:
    """How many distinct points the space has (infinite along a continuous dimension)."""
    size = 1.0
    for spec in space.values():
        if spec.type == "categorical":
            size *= len(spec.choices or [])
        elif spec.type == "int" and not spec.log:
            step = int(spec.step or 1) or 1
            size *= (int(spec.high or 0) - int(spec.low or 0)) // step + 1
        elif spec.type == "int":
            size *= int(spec.high or 0) - int(spec.low or 0) + 1
        elif spec.step:
            size *= math.floor((float(spec.high or 0) - float(spec.low or 0)) / spec.step) + 1
        else:
            return math.inf
    return size


def startup_trials(space: Mapping[str, ParamSpec]) -> int:
    """Random trials before TPE models the space: one per three dimensions, and never more than a
    tenth of a finite space's points; at least one, at most MAX_STARTUP_TRIALS. (Multivariate TPE
    models the dimensions together, so it needs fewer draws than one per dimension.)"""
    by_dims = 1 + len(space) // 3
    size = space_size(space)
    by_size = max(1, int(size // 10)) if math.isfinite(size) else by_dims
    return max(1, min(MAX_STARTUP_TRIALS, by_dims, by_size))


def space_hash(space: Mapping[str, ParamSpec]) -> str:
    """A stable fingerprint of the search space (its names and distributions)."""
    plain = {name: spec.model_dump(mode="json") for name, spec in sorted(space.items())}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PastTrial:
    """A finished trial of the study, as the warm-start decision needs it."""

    run_id: str | None
    space_hash: str | None
    value: float | None
    params: Mapping[str, Any]


@dataclass(frozen=True)
class WarmStart:
    params: dict[str, Any] | None
    reason: str
    worth_saying: bool = False   # a warm start, or a changed space: the log and the email say it


def warm_start(past: Sequence[PastTrial], run_id: str, current_hash: str, baseline: Mapping[str, Any],
               direction: str) -> WarmStart:
    """The params of the previous pushes' best trial, drawn from the same space, to try second;
    None (with why) when there is none, the space changed, or they are the baseline's own."""
    earlier = [t for t in past if t.run_id != run_id and t.value is not None]
    if not earlier:
        return WarmStart(None, "no earlier push of this branch")
    same = [t for t in earlier if t.space_hash == current_hash]
    if not same:
        return WarmStart(None, "the search space changed since the last push: starting afresh", True)
    best = same[0]
    for t in same[1:]:
        assert t.value is not None and best.value is not None
        if (t.value > best.value) if direction != "minimize" else (t.value < best.value):
            best = t
    params = dict(best.params)
    if all(baseline.get(k) == v for k, v in params.items()):
        return WarmStart(None, "the previous push's best params are this push's own (trial 1)")
    return WarmStart(params, f"warm start: trying the previous push's best params (its {best.value:.4f})"
                             " second, the search space being unchanged", True)


HALVING_RUNG_ATTR = "completed_rung_{}"  # Optuna's successive halving: a trial's value at rung i


def halving_rungs(curve: Sequence[tuple[int, float]]) -> dict[str, float]:
    """The rungs a finished learning curve reached, as successive halving records them on a trial
    it judged: the repository's own trial then competes at each rung like any pruned-or-promoted
    trial (Optuna's halving compares only trials that carry these marks)."""
    values = dict(curve)
    rungs: dict[str, float] = {}
    rung = 0
    while (step := PRUNE_MIN_EPOCHS * PRUNE_REDUCTION ** rung) in values:
        rungs[HALVING_RUNG_ATTR.format(rung)] = values[step]
        rung += 1
    return rungs


def epoch_key(metric: str, keys: Iterable[str]) -> str | None:
    """Which per-epoch value stands for the gate metric: its validation value when the training
    logs one (Keras' ``val_accuracy``), else the metric itself; None when it logs neither."""
    present = set(keys)
    for key in (f"val_{metric}", metric):
        if key in present:
            return key
    return None


def epoch_values(rows: Iterable[Mapping[str, Any]], metric: str, after_epoch: int) -> list[tuple[int, float]]:
    """(epoch, value) of the gate metric for the progress lines past ``after_epoch``, in order,
    one per epoch (a restarted attempt repeats epochs: the first report stands). Rows come from
    the training (hostile): anything not a finite number is skipped."""
    out: list[tuple[int, float]] = []
    last = after_epoch
    for row in rows:
        epoch = row.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= last or epoch > MAX_JUDGED_EPOCH:
            continue
        key = epoch_key(metric, row.keys())
        value = row.get(key) if key else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        out.append((epoch, float(value)))
        last = epoch
    return out


PRUNED = "pruned"  # a trial's status (and the gate's word) when the pruner stopped it


@dataclass(frozen=True)
class Pruned:
    """The pruner's decision on a running trial: stop it after ``epoch``."""

    epoch: int
    key: str          # the per-epoch value it judged (val_accuracy, say)
    value: float
    pruner: str

    @property
    def reason(self) -> str:
        return (f"pruned after epoch {self.epoch}: {self.key} {self.value:.4f} is behind the other trials at"
                f" that epoch ({self.pruner})")

    def metrics(self) -> dict[str, float]:
        """What the trial's row keeps: its last epoch and value."""
        return {"epoch": self.epoch, self.key: self.value}
