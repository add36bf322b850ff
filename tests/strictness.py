"""One decision for the whole suite: may a test skip when something it needs is missing
(a Docker engine, Chromium, Groovy and a JDK)?

``scripts/test.sh`` decides it once (``--strict``, or CI set to a true value) and passes it
on as ``MLCHAIN_TEST_STRICT`` (1 or 0); pytest started by hand applies the same rule to CI.
Strict: a missing tool fails the test that needs it. Otherwise the test is skipped, and
pytest's ``-rs`` lists why.
"""

from __future__ import annotations

import os

import pytest

TRUE = ("1", "true", "yes", "on")
STRICT_VAR = "MLCHAIN_TEST_STRICT"


def strict(env: dict[str, str] | None = None) -> bool:
    """Pure over ``env``: the value scripts/test.sh passed, else CI's."""
    values = dict(os.environ) if env is None else env
    decided = values.get(STRICT_VAR, "").strip().lower()
    if decided:
        return decided in TRUE
    return values.get("CI", "").strip().lower() in TRUE


def require(missing: str | None) -> None:
    """Nothing when ``missing`` is None; else fail (strict) or skip, saying what is missing."""
    if missing is None:
        return
    if strict():
        pytest.fail(f"{missing} (strict mode: {STRICT_VAR} or CI is set; install it, or run without)")
    pytest.skip(missing)
