"""Processes: is one alive, and waiting for one to end (one answer for the runners, the
engine and the webhook service)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (it has exited, its parent has not reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): the signal said it exists
    return state != "Z"


def wait_for_exit(pid: int, timeout_s: float | None) -> None:
    """Return when ``pid`` exits or after ``timeout_s`` (None: no limit); on Linux at once on
    exit (a pidfd), elsewhere by polling."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or gone already
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pid_alive(pid) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
        return
    try:
        select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
