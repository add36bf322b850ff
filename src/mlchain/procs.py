"""Processes: is one alive, and waiting for one to end (one answer for the runners, the
engine and the webhook service); the one reader of Linux's /proc files."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): index 0 is the state (field 3 of proc(5)), index N is field N + 3.
    ``pid`` may be "self". None without such a process, or without /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    _, paren, rest = text.rpartition(")")
    return rest.split() if paren else None


def proc_cmdline(pid: int) -> list[bytes] | None:
    """The arguments of a process (/proc/PID/cmdline); None without it, or without /proc."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").split(b"\0") if raw else []


def proc_start_time(pid: int | str) -> str | None:
    """When a process started (clock ticks since boot, field 22): with its pid, names one
    process even after the pid is reused."""
    fields = proc_stat(pid)
    return fields[22 - 3] if fields is not None and len(fields) > 22 - 3 else None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (it has exited, its parent has not reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    fields = proc_stat(pid)
    if not fields:
        return True  # no /proc (not Linux): the signal said it exists
    return fields[0] != "Z"


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


def hide_environment(names: Iterable[str]) -> None:
    """Remove the variables ``names`` from what other processes can read of this one.

    Unsetting a variable changes only the C library's list: /proc/PID/environ still shows the
    block the process started with, and a training process (the process runner's) can read it
    from its engine. So the entries are overwritten in that block (through /proc/self/mem,
    as setproctitle rewrites argv), and the process is made non-dumpable, which keeps other
    processes of the same user (not root) out of its /proc files and memory.
    """
    wanted = tuple(f"{name}=".encode() for name in names)
    for name in names:
        os.environ.pop(name, None)
    if sys.platform != "linux":
        return
    try:
        fields = proc_stat("self") or []
        start, end = int(fields[50 - 3]), int(fields[51 - 3])  # env_start, env_end (fields 50, 51)
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            block = mem.read(end - start)
            offset = 0
            for entry in block.split(b"\0"):
                if entry.startswith(wanted):
                    mem.seek(start + offset)
                    mem.write(b"\0" * len(entry))
                offset += len(entry) + 1
    except (OSError, IndexError, ValueError):
        pass  # no /proc, or a kernel without these fields: the non-dumpable flag still applies
    import ctypes

    pr_set_dumpable = 4
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass
