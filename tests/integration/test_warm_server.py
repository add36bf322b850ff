"""The warm server (mlchain.warm), for real: `mlchain` processes, its Unix socket, forked workers."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from mlchain import warm
from mlchain.procs import pid_alive

pytestmark = pytest.mark.slow


def mlchain(home: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlchain.cli", *args], check=False, env=_env(home), capture_output=True,
                          text=True, timeout=300, **kwargs)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "MLCHAIN_HOME": str(home), "MLCHAIN_WARM_SERVER": "1", "MLCHAIN_RUNNER": "process",
            "MLCHAIN_WARM_SERVER_IDLE_S": "120"}


@pytest.fixture
def home(tmp_path: Path) -> Any:
    home = tmp_path / "home"
    yield home
    warm.stop_server(home)


def served(home: Path) -> list[str]:
    log = home / warm.LOG_NAME
    return [line for line in log.read_text().splitlines() if ": mlchain " in line] if log.exists() else []


def test_the_first_command_starts_the_server_and_the_next_ones_are_served_alike(home: Path) -> None:
    cold = mlchain(home, "resume", "no-such-run")  # runs here, starts the server for the next ones
    assert cold.returncode == 9 and "no-such-run" in cold.stderr
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")
    assert served(home) == []

    again = mlchain(home, "resume", "no-such-run")
    assert (again.returncode, again.stdout, again.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    ok = mlchain(home, "job", "monitor")
    assert ok.returncode == 0, ok.stderr
    lines = served(home)
    assert len(lines) == 2 and lines[0].endswith("mlchain resume no-such-run") and lines[1].endswith("job monitor")
    assert warm.server_pid(home) is not None


def test_a_killed_client_takes_its_worker_down_and_the_run_can_resume(home: Path, git_repo: Any) -> None:
    repo = git_repo("digits_sklearn", example="digits_sklearn")
    first = mlchain(home, "job", "monitor")
    assert first.returncode == 0
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")

    client = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json",
                               "--run-id", "warm-killed"], env=_env(home), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for(lambda: engine_pid(home, "warm-killed") is not None, 120, "the worker to take the run")
    worker = engine_pid(home, "warm-killed")
    assert worker is not None and worker != client.pid  # the chain runs in the server's worker
    client.kill()
    client.wait()
    wait_for(lambda: not pid_alive(worker), 30, "the worker to die with its client")
    assert interrupted(home) == ["warm-killed"]


def test_ctrl_c_on_a_client_reaches_its_worker_and_ends_the_command_as_click_does(home: Path, git_repo: Any) -> None:
    repo = git_repo("digits_sklearn", example="digits_sklearn")
    assert mlchain(home, "job", "monitor").returncode == 0
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")

    client = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main",
                               "--run-id", "warm-interrupted"], env=_env(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: engine_pid(home, "warm-interrupted") is not None, 120, "the worker to take the run")
    worker = engine_pid(home, "warm-interrupted")
    assert worker is not None and worker != client.pid
    client.send_signal(signal.SIGINT)  # the client only: it forwards the signal to its worker's group
    _, err = client.communicate(timeout=120)
    # As a command run in its own process ends on Ctrl-C: click's "Aborted!", exit code 1.
    assert client.returncode == 1 and "Aborted!" in err, err
    wait_for(lambda: not pid_alive(worker), 30, "the worker to end")
    assert interrupted(home) == ["warm-interrupted"]  # resumable, like any interrupted run


def engine_pid(home: Path, run_id: str) -> int | None:
    db = home / "state.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute("SELECT engine_pid FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        except sqlite3.OperationalError:
            return None
    return int(row[0]) if row and row[0] else None


def interrupted(home: Path) -> list[str]:
    from mlchain.config import load_settings
    from mlchain.engine.chain import interrupted_runs
    from mlchain.state import StateStore

    return interrupted_runs(StateStore(load_settings({"home": home}, env={}).state_db))


def test_a_server_refuses_other_code_and_makes_way_for_a_new_one(home: Path) -> None:
    mlchain(home, "job", "monitor")
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")
    old = warm.server_pid(home)
    assert old is not None

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(home / warm.SOCKET_NAME))
    warm._send(sock, {"fingerprint": "other code", "argv": ["job", "monitor"], "cwd": "/", "env": {}}, [0, 1, 2])
    reply, _ = warm._recv(sock)
    sock.close()
    assert reply.get("restart") is True and "code changed" in reply["refused"]
    wait_for(lambda: not pid_alive(old), 30, "the old server to exit")

    fallback = mlchain(home, "job", "monitor")  # runs here and starts a new server
    assert fallback.returncode == 0
    wait_for(lambda: warm.server_pid(home) not in (None, old), 120, "a new server")


def test_an_idle_server_exits_and_removes_its_socket(home: Path) -> None:
    home.mkdir(parents=True)
    server = subprocess.Popen([sys.executable, "-m", "mlchain.warm", str(home), "1", "0"], env=_env(home))
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")
    assert server.wait(timeout=60) == 0
    assert not (home / warm.SOCKET_NAME).exists()
    assert warm.server_pid(home) is None


def test_a_server_whose_database_was_replaced_makes_way_for_a_new_one(home: Path) -> None:
    mlchain(home, "job", "monitor")
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")
    old = warm.server_pid(home)
    assert old is not None and (home / "optuna.db").exists()  # opened by the server, once

    (home / "optuna.db").unlink()  # say, someone reset the search
    after = mlchain(home, "job", "monitor")
    assert after.returncode == 0, after.stderr
    wait_for(lambda: not pid_alive(old), 30, "the old server to exit")
    assert "a database was replaced" in (home / warm.LOG_NAME).read_text()


def test_a_server_started_for_a_home_flag_opens_that_homes_stores(home: Path) -> None:
    env = {k: v for k, v in _env(home).items() if k != "MLCHAIN_HOME"}
    first = subprocess.run([sys.executable, "-m", "mlchain.cli", "--home", str(home), "job", "monitor"], check=False,
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    wait_for(lambda: (home / warm.SOCKET_NAME).exists(), 120, "the server to serve")
    assert (home / "mlflow.db").exists() and (home / "optuna.db").exists()
    assert not (home / ".mlchain").exists()  # not the default home, resolved from the server's folder
