"""Search.add_baseline on a real Optuna SQLite storage: the repository's own params are taught
to the study only when every one fits its distribution (Optuna's public create_trial decides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlchain.repo_config import ParamSpec
from mlchain.tweak import Search

SPACE = {
    "units": ParamSpec(type="categorical", choices=[32, 64]),
    "layers": ParamSpec(type="int", low=1, high=5, step=2),
    "lr": ParamSpec(type="float", low=1e-4, high=1e-1, log=True),
}


def search(tmp_path: Path) -> Search:
    return Search(f"sqlite:///{tmp_path / 'optuna.db'}", "mlchain:repo@main")


def test_params_inside_the_space_become_a_complete_trial_with_their_value(tmp_path: Path) -> None:
    s = search(tmp_path)
    assert s.add_baseline({"units": 64, "layers": 3, "lr": 0.01, "epochs": 7}, SPACE, 0.75)
    (trial,) = s.study.trials
    assert trial.params == {"units": 64, "layers": 3, "lr": 0.01}
    assert trial.value == 0.75


@pytest.mark.parametrize("outside", [
    {"units": 48},            # not one of the choices
    {"layers": 2},            # off the int grid (step 2 from 1)
    {"layers": 7},            # above high
    {"lr": 0.5},              # above high
    {"lr": "fast"},           # not a number
    {"lr": None},
])
def test_params_outside_the_space_teach_nothing(tmp_path: Path, outside: dict[str, Any]) -> None:
    s = search(tmp_path)
    assert not s.add_baseline({"units": 64, "layers": 3, "lr": 0.01, **outside}, SPACE, 0.75)
    assert s.study.trials == []


def test_a_missing_param_or_a_failed_trial_teaches_nothing(tmp_path: Path) -> None:
    s = search(tmp_path)
    assert not s.add_baseline({"units": 64, "layers": 3}, SPACE, 0.75)
    assert not s.add_baseline({"units": 64, "layers": 3, "lr": 0.01}, SPACE, None)
    assert s.study.trials == []
