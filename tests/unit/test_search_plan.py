"""The search's strategy (issue 19), decided in memory: sampler and pruner from mlchain.yaml and
the flags, the start-up count from the space's size, the warm-start decision across pushes, the
per-epoch values a pruner judges, and the gate's view of a pruned trial. Then the study itself on
a real Optuna SQLite storage: it receives a running trial's intermediate values, its pruner stops
a trial behind the others, and a new push starts from the previous push's best params."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mlchain import gate, searchplan
from mlchain.config import load_settings
from mlchain.engine.jobs import resolved_config
from mlchain.errors import ConfigError
from mlchain.repo_config import ParamSpec, RepoConfig, load_repo_config
from mlchain.searchplan import PastTrial, Strategy
from mlchain.tweak import DEFAULT_SPACES, Search

SPACE = {
    "lr": ParamSpec(type="float", low=1e-4, high=1e-1, log=True),
    "units": ParamSpec(type="categorical", choices=[32, 64, 128]),
}


# --- strategy ---------------------------------------------------------------------------

def test_the_default_is_tpe_with_successive_halving_and_random_search_prunes_nothing() -> None:
    assert searchplan.strategy(None, None) == Strategy("tpe", "halving")
    assert searchplan.strategy("random", None) == Strategy("random", "none")
    assert searchplan.strategy("random", "hyperband") == Strategy("random", "hyperband")
    assert searchplan.strategy("tpe", "none") == Strategy("tpe", "none")
    assert Strategy("tpe", "halving").warm_start and not Strategy("random", "none").warm_start


def write_config(repo: Path, text: str) -> RepoConfig:
    (repo / "mlchain.yaml").write_text(text)
    return load_repo_config(repo)


def test_search_names_its_sampler_and_pruner_beside_the_space(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "search:\n  sampler: random\n  pruner: hyperband\n"
                                 "  lr: {type: float, low: 0.001, high: 0.1}\n"
                                 "  pruner_width: {type: int, low: 1, high: 3}\n")
    assert set(cfg.search) == {"lr", "pruner_width"}
    assert cfg.strategy.resolved() == Strategy("random", "hyperband")
    # what job1 stores is read back the same by the later jobs
    assert RepoConfig.model_validate(cfg.model_dump(mode="json")).strategy.resolved() == Strategy("random", "hyperband")


def test_a_param_named_like_a_strategy_word_stays_a_param(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "search:\n  sampler: {type: categorical, choices: [a, b]}\n")
    assert set(cfg.search) == {"sampler"}
    assert cfg.strategy.resolved() == Strategy("tpe", "halving")


def test_an_unknown_pruner_says_which_ones_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        write_config(tmp_path, "search:\n  pruner: median\n")
    assert "search.pruner must be one of halving, hyperband, none, got 'median'" in err.value.message


def test_the_sampler_flag_overrides_mlchain_yaml(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "search:\n  pruner: hyperband\n")
    settings = load_settings({"home": tmp_path / "home", "sampler": "random"}, env={})
    resolved = resolved_config(settings, cfg)
    assert resolved.strategy.resolved() == Strategy("random", "hyperband")
    settings = load_settings({"home": tmp_path / "home", "pruner": "none"}, env={})
    assert resolved_config(settings, cfg).strategy.resolved() == Strategy("tpe", "none")


# --- start-up trials -------------------------------------------------------------------

def test_startup_trials_follow_the_space_size() -> None:
    one_choice_of_two = {"units": ParamSpec(type="categorical", choices=[32, 64])}
    assert searchplan.startup_trials(one_choice_of_two) == 1
    assert searchplan.startup_trials(SPACE) == 1                      # 2 dimensions
    assert searchplan.startup_trials(DEFAULT_SPACES["keras"]) == 3    # 8 dimensions, continuous
    wide = {f"x{i}": ParamSpec(type="float", low=0.0, high=1.0) for i in range(20)}
    assert searchplan.startup_trials(wide) == searchplan.MAX_STARTUP_TRIALS
    grid = {f"x{i}": ParamSpec(type="int", low=1, high=2) for i in range(6)}  # 64 points, 6 dims
    assert searchplan.startup_trials(grid) == 3
    tiny = {f"x{i}": ParamSpec(type="int", low=1, high=2) for i in range(4)}  # 16 points
    assert searchplan.startup_trials(tiny) == 1
    assert searchplan.space_size(SPACE) == math.inf


def test_the_space_hash_ignores_order_and_sees_a_changed_bound() -> None:
    reordered = dict(reversed(list(SPACE.items())))
    assert searchplan.space_hash(reordered) == searchplan.space_hash(SPACE)
    changed = {**SPACE, "lr": ParamSpec(type="float", low=1e-4, high=0.2, log=True)}
    assert searchplan.space_hash(changed) != searchplan.space_hash(SPACE)


# --- warm start --------------------------------------------------------------------------

H = "space-1"


def test_warm_start_takes_the_best_earlier_trial_of_the_same_space() -> None:
    past = [PastTrial("run-1", H, 0.90, {"lr": 0.01}), PastTrial("run-1", H, 0.95, {"lr": 0.02}),
            PastTrial("run-1", "space-0", 0.99, {"lr": 0.5}), PastTrial("run-2", H, 0.97, {"lr": 0.03})]
    start = searchplan.warm_start(past, "run-2", H, {"lr": 0.001}, "maximize")
    assert start.params == {"lr": 0.02}
    assert "previous push's best params (its 0.9500)" in start.reason and start.worth_saying
    low = searchplan.warm_start(past, "run-2", H, {"lr": 0.001}, "minimize")
    assert low.params == {"lr": 0.01}


def test_no_warm_start_without_an_earlier_push_after_a_space_change_or_for_the_baseline_itself() -> None:
    assert searchplan.warm_start([PastTrial("run-2", H, 0.9, {"lr": 0.1})], "run-2", H, {}, "maximize").params is None
    changed = searchplan.warm_start([PastTrial("run-1", "old", 0.9, {"lr": 0.1})], "run-2", H, {}, "maximize")
    assert changed.params is None and "space changed" in changed.reason and changed.worth_saying
    own = searchplan.warm_start([PastTrial("run-1", H, 0.9, {"lr": 0.1})], "run-2", H, {"lr": 0.1, "x": 1},
                                "maximize")
    assert own.params is None and "own" in own.reason and not own.worth_saying


# --- what the pruner judges ------------------------------------------------------------

def test_epoch_values_prefer_the_validation_metric_and_skip_what_is_not_a_number() -> None:
    rows = [{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.4}, {"epoch": 2, "accuracy": 0.6},
            {"epoch": 2, "val_accuracy": 0.9},                     # a restart repeats an epoch
            {"epoch": 3, "val_accuracy": float("nan")}, {"epoch": True, "accuracy": 1.0},
            {"epoch": "4", "accuracy": 1.0}, {"epoch": 5, "val_accuracy": 0.8},
            {"epoch": searchplan.MAX_JUDGED_EPOCH + 1, "val_accuracy": 0.9}]  # a flood of lines is not told
    assert searchplan.epoch_values(rows, "accuracy", 0) == [(1, 0.4), (2, 0.6), (5, 0.8)]
    assert searchplan.epoch_values(rows, "accuracy", 2) == [(5, 0.8)]
    assert searchplan.epoch_values(rows, "loss", 0) == []


def test_halving_rungs_are_the_values_at_epochs_1_3_9() -> None:
    curve = [(e, e / 10) for e in range(1, 11)]
    assert searchplan.halving_rungs(curve) == {"completed_rung_0": 0.1, "completed_rung_1": 0.3,
                                              "completed_rung_2": 0.9}
    assert searchplan.halving_rungs([(2, 0.5)]) == {}


def test_a_pruned_trial_is_below_the_gate_but_costs_no_patience() -> None:
    budget = gate.Budget(max_trials=10, max_minutes=60, patience=2)
    trials = [gate.TrialResult(1, 0.5), gate.TrialResult(2, None, gate.PRUNED), gate.TrialResult(3, None, gate.PRUNED),
              gate.TrialResult(4, None, gate.PRUNED)]
    decision = gate.decide(trials, 0.9, budget, 1.0, metric_name="accuracy")
    assert decision.action == "retry"
    assert decision.reason == "accuracy pruned early below 0.90: trying another architecture"
    spent = gate.decide([*trials, gate.TrialResult(5, 0.4), gate.TrialResult(6, 0.45)], 0.9, budget, 1.0)
    assert (spent.action, spent.reason) == ("stop", "patience spent (2 trials without improvement)")
    capped = gate.decide(trials, 0.9, gate.Budget(4, 60, 2), 1.0)
    assert (capped.action, capped.reason) == ("stop", "max_trials reached (4)")


# --- the study, on a real SQLite storage -------------------------------------------------

def open_search(tmp_path: Path, strategy: Strategy | None = None) -> Search:
    return Search(f"sqlite:///{tmp_path / 'optuna.db'}", "mlchain:repo@main", strategy=strategy, space=SPACE)


def test_the_study_receives_intermediate_values_and_halving_stops_a_trial_behind_the_baseline(tmp_path: Path) -> None:
    search = open_search(tmp_path)
    assert search.add_baseline({"lr": 0.01, "units": 64}, SPACE, 0.7, [(1, 0.5), (2, 0.6), (3, 0.7)], run_id="r1")
    ahead, _ = search.ask(SPACE, {}, run_id="r1")
    assert search.report(ahead, [(1, 0.55), (2, 0.6)]) is None      # best at epoch 1: promoted
    assert search.report(ahead, [(2, 0.6), (3, 0.8)]) is None       # epoch 2 told once, not twice
    behind, _ = search.ask(SPACE, {}, run_id="r1")
    assert search.report(behind, [(1, 0.2), (2, 0.3)]) == 1         # behind both at epoch 1
    study = open_search(tmp_path).study                             # what another process reads
    assert study.trials[ahead].intermediate_values == {1: 0.55, 2: 0.6, 3: 0.8}
    assert study.trials[behind].intermediate_values == {1: 0.2}
    search.tell(behind, None, pruned=True)
    assert open_search(tmp_path).study.trials[behind].state.name == "PRUNED"
    assert search.report(behind, [(3, 0.9)]) is None               # a finished trial is judged no more


def test_random_search_never_prunes(tmp_path: Path) -> None:
    search = open_search(tmp_path, searchplan.strategy("random", None))
    search.add_baseline({"lr": 0.01, "units": 64}, SPACE, 0.7, [(1, 0.9)], run_id="r1")
    number, _ = search.ask(SPACE, {}, run_id="r1")
    assert search.report(number, [(1, 0.01), (3, 0.01), (9, 0.01)]) is None


def test_a_new_push_asks_the_previous_push_best_params_second(tmp_path: Path) -> None:
    first = open_search(tmp_path)
    first.add_baseline({"lr": 0.0001, "units": 32}, SPACE, 0.3, run_id="push-1")
    good, good_params = first.ask(SPACE, {}, run_id="push-1")
    first.tell(good, 0.95)
    poor, _ = first.ask(SPACE, {}, run_id="push-1")
    first.tell(poor, 0.4)
    second = open_search(tmp_path)
    second.add_baseline({"lr": 0.0001, "units": 32}, SPACE, 0.35, run_id="push-2")
    start = searchplan.warm_start(second.past_trials(), "push-2", searchplan.space_hash(SPACE),
                                  {"lr": 0.0001, "units": 32}, "maximize")
    assert start.params == good_params
    second.enqueue(start.params)
    _, params = second.ask(SPACE, {"epochs": 5}, run_id="push-2")
    assert params == {"epochs": 5, **good_params}
    assert second.mark_space(SPACE) is None and second.mark_space(SPACE) == searchplan.space_hash(SPACE)
