"""The warm server: the engine's imports paid once, not by every command.

`mlchain run`, `resume`, `train` and `job ...` need MLflow, SQLAlchemy, Optuna and matplotlib:
3-4 seconds of CPU to import, which on a small machine competes with the training itself.
The first such command starts a server for its MLCHAIN_HOME (``warm.sock`` there) and runs
as usual (the server waits for it to end before importing, so as not to slow it down); the
next ones hand their command over. The server, single-threaded, imports all
that once; for each command it forks a worker that takes the client's standard streams
(passed over the socket), directory and environment, and runs the command exactly as the
client would have, its exit code going back to the client. (A Gradle daemon, or
multiprocessing's forkserver, for the same reason.)

- The client forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the worker's process group; a
  client that dies (killed) takes its worker with it, as an in-process engine would die.
- The server refuses a command from other code than its own (the package, the interpreter
  or the installed packages changed: it exits, and the client starts a new one) and from
  another user; it exits after ``warm_server_idle_s`` without a command.
- Anything wrong on the way (no server yet, a stale socket, a refusal, a server too slow to
  answer) and the command just runs in the client's process: the server only ever makes a
  command faster. A command runs once: the worker starts only after the client has said
  "go", and a client that said it waits for the worker whatever happens.
- ``MLCHAIN_WARM_SERVER=0`` turns it off.

Usage (by the CLI only): python -m mlchain.warm HOME IDLE_SECONDS STARTED_BY_PID
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlchain.procs import wait_for_exit

if TYPE_CHECKING:
    import socket

# socket, struct, select, subprocess, hashlib and sysconfig are imported where they are used:
# every `mlchain` command imports this module to decide, and most never hand over (0.02-0.04 s).

SOCKET_NAME = "warm.sock"
LOG_NAME = "warm.log"
LOCK_NAME = "warm.lock"
WORKER_ENV = "MLCHAIN_WARM_WORKER"  # set in a worker: it must not hand its command over again
COMMANDS = frozenset({"run", "resume", "train", "job"})  # the ones worth it: they load MLflow
DEFAULT_IDLE_S = 1200.0
PRELOAD = (
    "mlchain.cli", "mlchain.engine.chain", "mlchain.engine.jobs", "mlchain.engine.local", "mlchain.detect",
    "mlchain.trainer", "mlchain.monitor", "mlchain.notify", "mlchain.runners.process", "mlchain.runners.docker",
    "mlflow.tracking", "mlflow.entities", "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store", "optuna", "optuna.storages",
    "matplotlib.figure", "matplotlib.backends.backend_agg", "jinja2", "rich.progress",
)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
ANSWER_TIMEOUT_S = 5.0  # for the server to answer; then the command runs in the client


def socket_path(home: Path) -> Path | None:
    path = home / SOCKET_NAME
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None


def fingerprint() -> str:
    """Which code a process runs: the interpreter, mlchain's files and the installed packages
    (a site-packages folder changes when a package is installed or removed)."""
    import hashlib
    import sysconfig

    digest = hashlib.sha256(sys.executable.encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".j2", ".yaml", ".html", ".css", ".js"):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    for entry in sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")}):
        with contextlib.suppress(OSError):
            digest.update(f"{entry}:{os.stat(entry).st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


# --- messages: a 4-byte length, then JSON ---------------------------------------------

def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    import socket
    import struct

    body = json.dumps(message).encode()
    data = struct.pack("!I", len(body)) + body
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        data += chunk
    return data


def _recv(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
    import socket
    import struct

    if max_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, max_fds)
        if len(head) < 4:
            head += _recv_exact(sock, 4 - len(head))
    else:
        head, fds = _recv_exact(sock, 4), []
    (size,) = struct.unpack("!I", head)
    return json.loads(_recv_exact(sock, size)), list(fds)


# --- the client (in the `mlchain` process) ---------------------------------------------

_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})


def client_settings(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Path, bool, float] | None:
    """(home, warm_server, warm_server_idle_s) for the command line ``argv``, or None when it
    is not a command for the server. Resolved like mlchain.config.load_settings (defaults <
    file < environment < ``--home``), for these three settings only: the client decides
    without importing pydantic (a third of a second; a test keeps the two in step)."""
    home_flag: str | None = None
    args = list(argv)
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "--home" and args:
            home_flag = args.pop(0)
        elif option.startswith("--home="):
            home_flag = option.partition("=")[2]
        else:
            return None  # --help, --version, or something click will explain
    if not args or args[0] not in COMMANDS or {"-h", "--help"} & set(args):
        return None
    home = Path(home_flag or env.get("MLCHAIN_HOME") or ".mlchain").expanduser()
    values: dict[str, Any] = {}
    config = Path(env["MLCHAIN_CONFIG"]) if env.get("MLCHAIN_CONFIG") else home / "config.toml"
    if config.is_file():
        import tomllib

        try:
            values = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            return None  # the command itself reports the broken file
    for key in ("warm_server", "warm_server_idle_s"):
        if env.get(f"MLCHAIN_{key.upper()}"):
            values[key] = env[f"MLCHAIN_{key.upper()}"]
    enabled = values.get("warm_server", True)
    if isinstance(enabled, str):
        enabled = enabled.strip().lower() not in _FALSE
    try:
        idle = float(values.get("warm_server_idle_s", DEFAULT_IDLE_S))
    except (TypeError, ValueError):
        return None
    return home.resolve(), bool(enabled), idle


def hand_over_argv(argv: Sequence[str]) -> int | None:
    """The client's whole decision: hand ``mlchain ARGV`` to the warm server when it is on and
    the command is one for it; the exit code, or None to run the command here."""
    if os.environ.get(WORKER_ENV):
        return None
    resolved = client_settings(argv, os.environ)
    if resolved is None or not resolved[1]:
        return None
    return hand_over(resolved[0], argv, resolved[2])


def hand_over(home: Path, argv: Sequence[str], idle_s: float) -> int | None:
    """Run ``argv`` in the warm server of ``home``: its exit code, or None when the command
    should run here (no server yet: one is started for the next command; or it refused)."""
    import socket

    path = socket_path(home)
    if path is None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ANSWER_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            start_server(home, idle_s)
            return None
        except OSError:
            return None
        request = {"fingerprint": fingerprint(), "argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}
        try:
            _send(sock, request, [0, 1, 2])
            reply, _ = _recv(sock)
            if "refused" in reply:
                if reply.get("restart"):
                    start_server(home, idle_s)
                return None
            _send(sock, {"go": True})  # from here on the command is the server's to run
        except (OSError, ConnectionError, ValueError):
            return None
        sock.settimeout(None)
        return _wait_for_worker(sock)
    finally:
        sock.close()


def _wait_for_worker(sock: socket.socket) -> int:
    pgid = 0
    early: list[int] = []  # signals that came before the worker's group was known

    def forward(signum: int, _frame: Any) -> None:
        if not pgid:
            early.append(signum)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                reply, _ = _recv(sock)
            except (OSError, ConnectionError, ValueError):
                print("mlchain: the warm server's worker ended without an exit code", file=sys.stderr)
                return 1
            if "pgid" in reply:
                pgid = int(reply["pgid"])
                for signum in early:
                    forward(signum, None)
                early.clear()
            if "exit" in reply:
                return int(reply["exit"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_server(home: Path, idle_s: float) -> None:
    """Start the server for ``home`` in the background (it imports for a few seconds first)."""
    import subprocess

    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOG_NAME, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "mlchain.warm", str(home), str(idle_s), str(os.getpid())],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         close_fds=True, cwd=str(home))


# --- the server --------------------------------------------------------------------------

def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def serve(home: Path, idle_s: float, started_by: int = 0) -> int:
    import socket

    path = socket_path(home)
    if path is None:
        return 2
    lock = _take_lock(home / LOCK_NAME)
    if lock is None:
        return 0  # another server is starting or serving
    if started_by > 0:
        wait_for_exit(started_by, None)  # importing now would slow the command that started us
    import importlib

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a missing extra: the worker imports what it needs
            _log(f"not preloaded: {module}: {exc}")
    for step in _WARM_STEPS:
        try:
            step(home)
        except Exception as exc:  # noqa: BLE001 - the worker does it again, and reports what is wrong
            _log(f"not warmed: {step.__name__}: {exc}")
    gc.collect()
    gc.freeze()  # what is loaded now stays shared with the workers (no copy-on-write by the GC)
    mine = fingerprint()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead server's: the lock says none is alive
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is the owner's only
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    inode = path.stat().st_ino
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap the per-command processes
    _log(f"serving {path}")
    try:
        with listener:
            listener.settimeout(idle_s)
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    _log(f"idle for {idle_s:g} s: exiting")
                    return 0
                if _handle(conn, mine, listener):
                    return 0
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()
        os.close(lock)


def _load_jobs(_home: Path) -> None:
    from mlchain.engine.jjb import default_jobs_dir, load_chain

    load_chain(default_jobs_dir())


def _draw_once(_home: Path) -> None:
    from mlchain.engine.chain import warm_plot

    warm_plot()  # fonts, the Agg backend and the PNG encoder: the email's plot then takes 0.2 s, not 1 s


def _build_config_validator(_home: Path) -> None:
    from mlchain.repo_config import parse_repo_config

    parse_repo_config("")  # the models defer building their validators to the first use: 0.05 s


_engines: list[Any] = []  # SQLAlchemy engines opened here: a worker must not use their connections
_store_files: dict[str, tuple[int, int]] = {}  # SQLite files opened here -> (device, inode)


def _open_stores(home: Path) -> None:
    """This home's MLflow and Optuna databases, opened and their schemas checked once (half a
    second to a second per command otherwise). Workers keep the engines, not the connections."""
    from mlchain import tracking, tweak
    from mlchain.config import load_settings

    settings = load_settings({"home": home})  # the rest of its environment is its first client's
    engines = tracking.open_stores(settings)
    tweak.open_storage(settings.resolved_optuna_storage)
    _engines.extend(engines + tweak.open_storages())
    for engine in _engines:
        database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        if database:
            stat = os.stat(database)
            _store_files[database] = (stat.st_dev, stat.st_ino)


def _stores_replaced() -> bool:
    """A database file opened here was deleted or replaced: the cached stores are stale."""
    for database, identity in _store_files.items():
        try:
            stat = os.stat(database)
        except OSError:
            return True
        if (stat.st_dev, stat.st_ino) != identity:
            return True
    return False


def _forget_connections() -> None:
    for engine in _engines:
        engine.dispose(close=False)  # SQLAlchemy's way after a fork: new connections, old ones left alone


_WARM_STEPS = (_load_jobs, _build_config_validator, _draw_once, _open_stores)


def _take_lock(path: Path) -> int | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())  # for stop_server()
    return fd


def server_pid(home: Path) -> int | None:
    """The pid of the server of ``home`` while one is starting or serving, else None."""
    import fcntl

    try:
        fd = os.open(home / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: a server is there
            text = os.read(fd, 32).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_server(home: Path) -> bool:
    """Stop the server of ``home`` (commands it is running go on); False when there is none."""
    pid = server_pid(home)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


def _handle(conn: socket.socket, mine: str, listener: socket.socket) -> bool:
    """Take one command; True when the server should exit (its code is out of date)."""
    import socket
    import struct

    fds: list[int] = []
    try:
        conn.settimeout(5.0)
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
        request, fds = _recv(conn, max_fds=3)
        if uid != os.getuid():
            _send(conn, {"refused": "another user"})
            return False
        if request.get("fingerprint") != mine or len(fds) != 3:
            _send(conn, {"refused": "the code changed since this server started", "restart": True})
            _log("code changed: exiting")
            return True
        if _stores_replaced():
            _send(conn, {"refused": "a database was replaced since this server started", "restart": True})
            _log("a database was replaced: exiting")
            return True
        if os.fork() == 0:  # the per-command process: starts the worker, reports its end
            try:
                listener.close()  # a client must never reach a server that is gone
                _command(conn, request, fds)
            finally:
                os._exit(0)
        return False
    except (OSError, ConnectionError, ValueError) as exc:
        _log(f"bad request: {exc}")
        return False
    finally:
        conn.close()
        for fd in fds:
            os.close(fd)


def _command(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        _send(conn, {"ready": True})
        conn.settimeout(ANSWER_TIMEOUT_S)
        if not _recv(conn)[0].get("go"):
            return
    except (OSError, ConnectionError, ValueError):
        return  # the client gave up waiting and runs the command itself
    conn.settimeout(None)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _worker(request, fds)  # never returns
    # Here too, not only in the worker: the group must exist before the client may signal it.
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    _send(conn, {"pgid": pid})
    for fd in fds:
        os.close(fd)
    _log(f"worker {pid}: mlchain {' '.join(request['argv'])}")
    code = _wait(conn, pid)
    _log(f"worker {pid}: exit {code}")
    with contextlib.suppress(OSError):
        _send(conn, {"exit": code})


def _wait(conn: socket.socket, pid: int) -> int:
    """The worker's exit code; a client that hangs up takes its worker down."""
    import select

    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready, _, _ = select.select([conn.fileno(), pidfd], [], [])
            if pidfd in ready:
                break
            if not conn.recv(4096):  # the client sends nothing more: readable means it is gone
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                break
    finally:
        os.close(pidfd)
    status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _worker(request: dict[str, Any], fds: list[int]) -> None:
    code = 1
    try:
        os.setpgid(0, 0)  # its own group: the client's signals reach it and its children
        for signum in FORWARDED_SIGNALS + (signal.SIGCHLD,):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_std_streams()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[WORKER_ENV] = "1"
        _forget_connections()
        from mlchain import cli

        code = cli.run_argv(list(request["argv"]))  # click's exits become the return value
    except BaseException:  # noqa: BLE001 - reported like an uncaught error in the client's process
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        from mlchain.procs import end_process

        end_process(code)


def _reopen_std_streams() -> None:
    def text(fd: int, mode: str) -> io.TextIOWrapper:
        tty = os.isatty(fd)
        raw = io.FileIO(fd, mode, closefd=False)
        buffered: Any = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding="utf-8", errors="backslashreplace" if mode == "w" else "strict",
                                line_buffering=tty, write_through=fd == 2)

    sys.stdin, sys.stdout, sys.stderr = text(0, "r"), text(1, "w"), text(2, "w")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return serve(Path(args[0]), float(args[1]), int(args[2]) if len(args) > 2 else 0)


if __name__ == "__main__":
    sys.exit(main())
