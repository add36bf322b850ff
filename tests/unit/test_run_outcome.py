"""How a run's ending becomes an exit code and a hint: pure functions over the run's record."""

from __future__ import annotations

import inspect

import pytest

from mlchain import errors
from mlchain.engine.jobs import EXIT_UNSTABLE
from mlchain.summary import (
    BUDGET_HINT,
    CODE_ERROR_HINT,
    NOTHING_TO_TUNE_HINT,
    TrialRecord,
    run_exit_code,
    stop_hint,
)

CONTRACT_LOG = ("mlchain-train: running train.py (trial r-t1)\n"
                "mlchain-train: error: the entry finished without writing metrics.json; call sdk.report("
                "{'accuracy': <held-out accuracy>}) at the end of training")


def failed_trial(kind: str, log: str = "") -> TrialRecord:
    return TrialRecord(1, {}, "failed", None, failure_kind=kind, failure_log=log or None)


def test_no_error_exits_with_the_code_that_means_another_trial() -> None:
    codes = {cls.__name__: cls.exit_code for _, cls in inspect.getmembers(errors, inspect.isclass)
             if issubclass(cls, errors.MlchainError)}
    assert EXIT_UNSTABLE not in codes.values(), codes
    assert errors.EXIT_GATE_NOT_REACHED not in codes.values(), codes
    assert EXIT_UNSTABLE != errors.EXIT_GATE_NOT_REACHED


@pytest.mark.parametrize("status,error,trials,code", [
    ("passed", None, [], 0),
    ("budget_spent", None, [], 15),
    ("failed", {"job": "job1-pull", "exit_code": 13}, [], 13),          # git error
    ("failed", {"job": "job1-pull", "exit_code": 3}, [], 3),            # invalid mlchain.yaml
    ("failed", {"job": "job2-classify", "exit_code": 4}, [], 4),        # unsupported framework
    ("failed", None, [failed_trial("contract_error")], 5),
    ("failed", None, [failed_trial("code_error")], 6),
    ("failed", None, [], 6),
])
def test_the_exit_code_is_the_one_of_what_stopped_the_run(status: str, error: dict | None,
                                                          trials: list[TrialRecord], code: int) -> None:
    assert run_exit_code(status, error, trials) == code


def test_the_hint_is_the_one_of_the_error_that_stopped_the_run() -> None:
    assert stop_hint("failed", "job2-classify failed: no framework", {"hint": "import keras or sklearn"}, []) \
        == "import keras or sklearn"
    contract = stop_hint("failed", "training failed (contract_error) in trial 1", None,
                         [failed_trial("contract_error", CONTRACT_LOG)])
    assert contract is not None and contract.startswith("the entry finished without writing metrics.json")
    assert stop_hint("failed", "training failed (code_error) in trial 1", None,
                     [failed_trial("code_error", "Traceback ...")]) == CODE_ERROR_HINT
    assert stop_hint("budget_spent", "nothing to tune: no params and no search space", None, []) \
        == NOTHING_TO_TUNE_HINT
    assert stop_hint("budget_spent", "max_trials reached (6)", None, []) == BUDGET_HINT
    assert stop_hint("passed", "gate passed", None, []) is None
    for hint in (contract, CODE_ERROR_HINT):
        assert "search" not in hint
