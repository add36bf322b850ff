"""Why did a training attempt end? A pure function over what the runner's handle knows."""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass
from typing import Literal

from mlchain.runners.base import ExitInfo

FailureKind = Literal["completed", "running", "killed", "oom", "hung", "code_error", "contract_error", "pruned"]

# Exit codes of mlchain-train (see train_entry) that mean the code, not the machine, failed.
CODE_EXITS = {1: "code_error", 2: "code_error", 3: "contract_error"}
# What the monitor does with each kind.
TRANSIENT: frozenset[str] = frozenset({"killed", "oom", "hung"})


@dataclass(frozen=True)
class Verdict:
    kind: FailureKind
    reason: str

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT


def heartbeat_age(*, now: float, attempt_started_at: float | None, progress_at: float | None,
                  log_at: float | None) -> float | None:
    """Seconds since this attempt last showed it is alive.

    The last progress line counts only when this attempt wrote it (a restarted attempt must
    not inherit the stale heartbeat of the one that hung). Before its first progress line an
    attempt is alive as of its start or its last log line, whichever is later: the slow start
    (importing TensorFlow) is not a hang until ``hung_after_s`` has passed."""
    if progress_at is not None and (attempt_started_at is None or progress_at >= attempt_started_at):
        return max(0.0, now - progress_at)
    marks = [t for t in (attempt_started_at, log_at) if t is not None]
    if not marks:
        return None
    return max(0.0, now - max(marks))


def _signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _raised(lines: list[str]) -> str | None:
    """The exception line of the last Python traceback in the log, if there is one."""
    start = None
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            start = i
    if start is None:
        return None
    for line in lines[start + 1:]:
        text = line.strip()
        if text and not line.startswith((" ", "\t")) and not text.startswith(("File ", "^", "~")):
            return text
    return None


def classify_exit(info: ExitInfo, *, running: bool, hung_after_s: float) -> Verdict:
    """completed / code_error / contract_error / oom / killed / hung (or still running)."""
    if running:
        if info.heartbeat_age_s is not None and info.heartbeat_age_s > hung_after_s:
            return Verdict("hung", f"no progress line for {info.heartbeat_age_s:.0f} s (limit {hung_after_s:g} s)")
        return Verdict("running", "training is running")
    if info.oom_killed:
        return Verdict("oom", "killed by the kernel: out of memory")
    if info.exit_code == 0:
        return Verdict("completed", "exited 0")
    if info.engine_lost:
        return Verdict("killed", "the training process or container vanished (engine restart or kill)")
    if info.signal is not None:
        return Verdict("killed", f"ended by {_signal_name(info.signal)}")
    if info.exit_code is not None and info.exit_code in CODE_EXITS:
        kind = CODE_EXITS[info.exit_code]
        raised = _raised(info.last_lines)
        if raised is not None and raised.split(":", 1)[0].endswith("MemoryError"):
            return Verdict("oom", f"the training ran out of memory ({raised})")
        detail = f"the training code raised {raised}" if raised else f"mlchain-train exited {info.exit_code}"
        return Verdict(kind, detail)  # type: ignore[arg-type]
    if info.exit_code is not None and info.exit_code > 128:
        return Verdict("killed", f"exit {info.exit_code} ({_signal_name(info.exit_code - 128)})")
    if info.exit_code is None:
        # Not running, yet no exit status: never started, or its engine lost it. Not the code's fault.
        return Verdict("killed", "ended without an exit status (never started, or its engine lost it)")
    return Verdict("code_error", f"exited {info.exit_code}")
