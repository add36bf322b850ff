"""Why did a training attempt end? A pure function over what the runner's handle knows."""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass
from typing import Literal

from mlchain.runners.base import ExitInfo

FailureKind = Literal["completed", "running", "killed", "oom", "hung", "code_error", "contract_error"]

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


def classify_exit(info: ExitInfo, *, running: bool, hung_after_s: float) -> Verdict:
    """completed / code_error / contract_error / oom / killed / hung (or still running)."""
    if running:
        if info.heartbeat_age_s is not None and info.heartbeat_age_s > hung_after_s:
            return Verdict("hung", f"no progress line for {info.heartbeat_age_s:.0f} s (limit {hung_after_s:.0f} s)")
        return Verdict("running", "training is running")
    if info.oom_killed:
        return Verdict("oom", "killed by the kernel: out of memory")
    if info.exit_code == 0:
        return Verdict("completed", "exited 0")
    if info.engine_lost:
        return Verdict("killed", "the training process or container vanished (engine restart or kill)")
    if info.signal is not None:
        name = signals.Signals(info.signal).name if info.signal in signals.Signals._value2member_map_ else str(info.signal)
        return Verdict("killed", f"ended by {name}")
    if info.exit_code is not None and info.exit_code in CODE_EXITS:
        kind = CODE_EXITS[info.exit_code]
        has_traceback = any("Traceback (most recent call last)" in line for line in info.last_lines)
        detail = "the training code raised" if has_traceback else f"mlchain-train exited {info.exit_code}"
        return Verdict(kind, detail)  # type: ignore[arg-type]
    if info.exit_code is not None and info.exit_code > 128:
        return Verdict("killed", f"exit {info.exit_code} (signal {info.exit_code - 128})")
    return Verdict("code_error", f"exited {info.exit_code}")
