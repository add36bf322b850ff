"""The /proc reader, and run ids."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlchain
from mlchain.procs import pid_alive, proc_cmdline, proc_start_time, proc_stat
from mlchain.runids import new_run_id

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")


@linux_only
def test_proc_stat_of_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # the command name (field 2) is the executable's name: make one with ") (" in it
    exe = tmp_path / "a) (b"
    exe.symlink_to(sys.executable)
    code = "import sys, time; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([str(exe), "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"  # past its exec
        assert Path(f"/proc/{child.pid}/comm").read_text() == "a) (b\n"
        fields = proc_stat(child.pid)
        assert fields is not None
        assert fields[0] in ("S", "R")            # field 3: the state
        assert int(fields[4 - 3]) == os.getpid()  # field 4: the parent
        assert proc_start_time(child.pid) == fields[22 - 3]
        assert proc_cmdline(child.pid) == [str(exe).encode(), b"-c", code.encode()]
    finally:
        child.kill()
        child.wait()
    assert proc_stat(child.pid) is None and proc_cmdline(child.pid) is None


@linux_only
def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    try:
        assert (proc_stat(child.pid) or ["?"])[0] == "Z"
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert pid_alive(os.getpid())
    assert proc_start_time("self") == proc_start_time(os.getpid())


def test_run_ids_carry_prefix_utc_time_and_differ() -> None:
    at = 1_785_000_000.0  # 2026-07-25 17:20:00 UTC
    run_id = new_run_id("wh-", at)
    assert re.fullmatch(r"wh-20260725-172000-[0-9a-f]{8}", run_id), run_id
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", new_run_id())
    assert len({new_run_id("train-", at) for _ in range(1000)}) == 1000
    assert new_run_id(now=at) < new_run_id(now=at + 1)


def test_only_sqlitefile_opens_sqlite() -> None:
    src = Path(mlchain.__file__).parent
    callers = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "sqlite3"):
                callers.append(path.relative_to(src).as_posix())
    assert callers == ["sqlitefile.py"]
