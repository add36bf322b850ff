"""The suite's one decision on skipping (tests/strictness.py), as scripts/test.sh makes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strictness import strict

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("env", "expected"), [
    ({}, False),
    ({"CI": "true"}, True), ({"CI": "TRUE"}, True), ({"CI": "1"}, True), ({"CI": "yes"}, True),
    ({"CI": " on "}, True), ({"CI": "false"}, False), ({"CI": "0"}, False), ({"CI": ""}, False),
    ({"MLCHAIN_TEST_STRICT": "1"}, True), ({"MLCHAIN_TEST_STRICT": "0", "CI": "true"}, False),
    ({"MLCHAIN_TEST_STRICT": "", "CI": "true"}, True),
])
def test_strict_follows_the_scripts_decision_else_ci(env: dict[str, str], expected: bool) -> None:
    assert strict(env) is expected


def _decision(*args: str, ci: str | None) -> str:
    """What scripts/test.sh decides, from its own lines (run up to the decision only)."""
    script = (ROOT / "scripts" / "test.sh").read_text()
    head = script.split('say "$mode"')[0] + 'echo "$MLCHAIN_TEST_STRICT"\n'
    env = {"PATH": "/usr/bin:/bin"} | ({"CI": ci} if ci is not None else {})
    done = subprocess.run(["bash", "-c", head, "test.sh", *args], env=env, capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return done.stdout.strip()


@pytest.mark.parametrize(("args", "ci", "expected"), [
    ((), None, "0"), ((), "true", "1"), ((), "True", "1"), ((), "1", "1"), ((), "false", "0"),
    (("--strict",), None, "1"), (("--no-strict",), "true", "0"), (("tests/unit", "-x"), "yes", "1"),
])
def test_the_script_decides_once(args: tuple[str, ...], ci: str | None, expected: str) -> None:
    assert _decision(*args, ci=ci) == expected
