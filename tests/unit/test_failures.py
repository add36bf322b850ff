"""Failure classification: a pure function over what a runner's handle knows."""

from __future__ import annotations

import signal

import pytest

from mlchain.failures import classify_exit, heartbeat_age
from mlchain.runners.base import ExitInfo

TRACEBACK = [
    "mlchain-train: running train.py (trial r-t1)",
    "Traceback (most recent call last):",
    '  File "/workspace/repo/train.py", line 12, in <module>',
    "    main()",
    '  File "/workspace/repo/train.py", line 9, in main',
    '    raise ValueError("the data has no column label")',
    "ValueError: the data has no column label",
    "mlchain-train: error: train.py raised; see the traceback above",
]
MEMORY_ERROR = [
    "Traceback (most recent call last):",
    '  File "train.py", line 3, in <module>',
    "    x = numpy.zeros((10**6, 10**6))",
    "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 7.28 TiB for an array",
    "mlchain-train: error: train.py raised; see the traceback above",
]
CHAINED = [
    "Traceback (most recent call last):",
    '  File "train.py", line 2, in <module>',
    "KeyError: 'lr'",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "train.py", line 4, in <module>',
    "RuntimeError: no learning rate",
]

CASES = [
    # (id, running, ExitInfo, expected kind, words in the reason)
    ("running", True, ExitInfo(heartbeat_age_s=5.0), "running", ""),
    ("running-no-heartbeat-yet", True, ExitInfo(heartbeat_age_s=None), "running", ""),
    ("hung", True, ExitInfo(heartbeat_age_s=301.0), "hung", "no progress line for 301 s"),
    ("at-the-limit-is-not-hung", True, ExitInfo(heartbeat_age_s=300.0), "running", ""),
    ("completed", False, ExitInfo(exit_code=0), "completed", "exited 0"),
    ("completed-even-with-old-heartbeat", False, ExitInfo(exit_code=0, heartbeat_age_s=9999), "completed", ""),
    ("oom-docker", False, ExitInfo(exit_code=137, oom_killed=True, signal=9), "oom", "out of memory"),
    ("oom-wins-over-exit-0", False, ExitInfo(exit_code=0, oom_killed=True), "oom", ""),
    ("sigkill-docker", False, ExitInfo(exit_code=137, signal=9), "killed", "SIGKILL"),
    ("sigterm-docker-stop", False, ExitInfo(exit_code=143, signal=15), "killed", "SIGTERM"),
    ("sigkill-process", False, ExitInfo(exit_code=137, signal=int(signal.SIGKILL)), "killed", "SIGKILL"),
    ("process-group-killed", False, ExitInfo(engine_lost=True, signal=9), "killed", "vanished"),
    ("engine-restart", False, ExitInfo(engine_lost=True), "killed", "engine restart"),
    ("exit-137-without-signal", False, ExitInfo(exit_code=137), "killed", "SIGKILL"),
    ("unknown-signal-number", False, ExitInfo(exit_code=128 + 60, signal=60), "killed", ""),
    ("traceback", False, ExitInfo(exit_code=1, last_lines=TRACEBACK), "code_error",
     "raised ValueError: the data has no column label"),
    ("chained-traceback-names-the-last", False, ExitInfo(exit_code=1, last_lines=CHAINED), "code_error",
     "RuntimeError: no learning rate"),
    ("exit-1-no-traceback", False, ExitInfo(exit_code=1, last_lines=["mlchain-train: error: exited 1"]),
     "code_error", "exited 1"),
    ("bad-environment", False, ExitInfo(exit_code=2), "code_error", "exited 2"),
    ("contract", False, ExitInfo(exit_code=3, last_lines=["no metrics.json"]), "contract_error", ""),
    ("memory-error-traceback", False, ExitInfo(exit_code=1, last_lines=MEMORY_ERROR), "oom", "ran out of memory"),
    ("odd-exit", False, ExitInfo(exit_code=42), "code_error", "exited 42"),
    ("never-started", False, ExitInfo(), "killed", "without an exit status"),
]


@pytest.mark.parametrize(("running", "info", "kind", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_exit(running: bool, info: ExitInfo, kind: str, words: str) -> None:
    verdict = classify_exit(info, running=running, hung_after_s=300)
    assert verdict.kind == kind, verdict
    assert words in verdict.reason
    assert verdict.transient == (kind in ("killed", "oom", "hung"))


HEARTBEATS = [
    # (id, attempt started, last progress line, last log line, now, expected age)
    ("progress-of-this-attempt", 100.0, 150.0, 160.0, 170.0, 20.0),
    ("log-lines-do-not-count-after-progress", 100.0, 150.0, 169.0, 170.0, 20.0),
    ("slow-start-counts-from-start", 100.0, None, None, 107.0, 7.0),
    ("slow-start-counts-from-last-log-line", 100.0, None, 105.0, 107.0, 2.0),
    ("old-attempt-progress-is-ignored", 100.0, 40.0, None, 103.0, 3.0),
    ("old-attempt-progress-and-fresh-log", 100.0, 40.0, 102.0, 103.0, 1.0),
    ("nothing-known", None, None, None, 103.0, None),
    ("no-start-known", None, 90.0, None, 100.0, 10.0),
    ("clock-skew-is-not-negative", 100.0, 110.0, None, 105.0, 0.0),
]


@pytest.mark.parametrize(("started", "progress", "log", "now", "expected"), [h[1:] for h in HEARTBEATS],
                         ids=[h[0] for h in HEARTBEATS])
def test_heartbeat_age(started: float | None, progress: float | None, log: float | None, now: float,
                       expected: float | None) -> None:
    assert heartbeat_age(now=now, attempt_started_at=started, progress_at=progress, log_at=log) == expected


def test_a_restarted_attempt_is_not_hung_by_the_old_attempts_heartbeat() -> None:
    # The first attempt hung: its last progress line is 400 s old. The restart began 5 s ago
    # and imports TensorFlow: it is running, not hung.
    age = heartbeat_age(now=1000.0, attempt_started_at=995.0, progress_at=600.0, log_at=None)
    verdict = classify_exit(ExitInfo(heartbeat_age_s=age), running=True, hung_after_s=300)
    assert verdict.kind == "running"
