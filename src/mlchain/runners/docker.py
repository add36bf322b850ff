"""The docker runner: each training attempt in a sandboxed container of its framework's image.

The sandbox: the repository mounted read-only, only the output and checkpoint
folders writable, no network (unless mlchain.yaml says ``network: true``), a non-root user, a read-only root filesystem with a
tmpfs /tmp, no capabilities, no privilege escalation, and limits on memory, CPU
and processes. The container's environment is the training contract and nothing
of the host's (secrets stay out).

Containers are kept after they exit (the monitor reads their exit code and OOM
flag) and are found again by id (``attach``) or by label
(``find_training_containers``) from another process. Their output is appended to
``spec.log_file`` by a follower thread, as the process runner's output is, so job3
and the monitor read the same file whichever runner ran the trial. A lock file and
a cursor (the timestamp of the last copied line) beside it let a follower in another
process (job3 after job2 has exited) take over without copying a line twice. All
three live in the trial's host folder, which is not mounted: the host never writes
into a folder the container can change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from mlchain.config import TRAIN_LOG_MAX_BYTES, Settings, memory_bytes
from mlchain.dockerclient import docker_client, engine_errors
from mlchain.errors import MlchainError
from mlchain.fileio import last_lines, tail_text
from mlchain.runners.base import (
    LABEL_MANAGED,
    LABEL_RUN,
    ExitInfo,
    Status,
    TrialSpec,
    heartbeat_age,
    open_log,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

Echo = Callable[[str], None]

LABEL_IMAGE = "io.mlchain.image"
LABEL_SPEC = "io.mlchain.spec"   # the whole TrialSpec as JSON: the monitor rebuilds a spec from it

# Where things are inside the container (the image creates these folders).
REPO_MOUNT = "/workspace/repo"
OUTPUT_MOUNT = "/workspace/output"
CHECKPOINT_MOUNT = "/workspace/checkpoints"
DATA_MOUNT = "/workspace/data"
PARAMS_MOUNT = "/workspace/params.json"
# The dataset cache, where the libraries look with HOME=/tmp (a tmpfs): Keras needs its home
# writable (else it looks elsewhere), so only its datasets folder is a read-only mount in it.
KERAS_DATASETS_MOUNT = "/tmp/.keras/datasets"
SKLEARN_DATA_MOUNT = "/tmp/scikit_learn_data"
NETWORK_OPT_IN = "bridge"  # the engine's default network, for a repository with network: true
TRAIN_UID = 10001
TMPFS_OPTIONS = "rw,nosuid,nodev,size=1g,mode=1777"

STOP_TIMEOUT_S = 10
WAIT_SLICE_S = 30.0          # container.wait in slices, so a vanished engine is noticed
LOG_JOIN_S = 15.0            # how long wait() lets the follower drain the last lines
LOG_LOCK = ".docker-logs.lock"
LOG_CURSOR = ".docker-logs.cursor"
LOG_ALIVE_S = 1.0            # past the cap, how often the log's mtime still says "alive"
CURSOR_EVERY_LINES = 1000    # past the cap, how often the cursor is written
LAST_LINES = 200

# Docker's states -> the handle's; anything unknown counts as exited.
STATUS_MAP: dict[str, Status] = {
    "created": "created",
    "running": "running",
    "paused": "running",
    "restarting": "running",
    "exited": "exited",
    "dead": "exited",
    "removing": "exited",
}
RUNNING_STATES = {"created", "running", "paused", "restarting"}
NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


def container_name(spec: TrialSpec) -> str:
    """``mlchain-{run_id}-t{trial}-a{attempt}``, with what Docker refuses in names replaced."""
    raw = f"mlchain-{spec.run_id}-t{spec.trial}-a{spec.attempt}"
    return NAME_UNSAFE.sub("-", raw).strip("-.")[:200]


def signal_of(exit_code: int | None) -> int | None:
    """A container killed by signal n exits 128+n (137 is SIGKILL: a kill or the OOM killer)."""
    if exit_code is not None and 128 < exit_code <= 128 + 64:
        return exit_code - 128
    return None


def _docker_errors() -> Any:
    import docker

    return docker.errors


# --- ownership of the writable mounts ---------------------------------------------------

def make_writable_for_container(path: Path) -> None:
    """The container runs as uid 10001: give it the folder (chown as root, else open it up).

    What an earlier attempt left there is the training's: a symlink is never followed and
    a file with another name elsewhere (a hard link) is left alone, so neither can make the
    host change a host file's owner or mode."""
    root = os.geteuid() == 0
    for p in [path, *path.rglob("*")]:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if not (is_dir or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)):
            continue
        # Opened without following, and checked again on the descriptor (it may have been swapped).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else os.O_NONBLOCK)
        with contextlib.suppress(OSError):
            fd = os.open(p, flags)
            try:
                now = os.fstat(fd)
                if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev) or (not is_dir and now.st_nlink != 1):
                    continue
                if root:
                    os.fchown(fd, TRAIN_UID, TRAIN_UID)
                else:
                    os.fchmod(fd, 0o777 if is_dir else 0o666)
            finally:
                os.close(fd)


# --- log following ----------------------------------------------------------------------

def _timestamp_ns(stamp: str) -> int:
    """Docker's RFC 3339 nano timestamp -> integer nanoseconds (datetime keeps only micro)."""
    from datetime import datetime

    head, _, frac = stamp.rstrip("Z").partition(".")
    seconds = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9])


class CappedLog:
    """A log file written up to ``max_bytes``; past it only the last ``tail_lines`` lines are
    kept, and written with a note of what was left out when the output ends. A training that
    prints without end must not fill the host's disk, and its last lines say how it ended.
    While lines are held back the file's mtime still moves (it is the heartbeat of a training
    that writes no progress lines)."""

    def __init__(self, out: BinaryIO, max_bytes: int, tail_lines: int = LAST_LINES) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.written = out.seek(0, os.SEEK_END)  # an earlier attempt's lines count too
        self.tail: deque[bytes] = deque(maxlen=tail_lines)
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self._touched = 0.0

    @property
    def holding(self) -> bool:
        """Past the cap: lines go to the tail, not to the file."""
        return bool(self.tail) or self.dropped_lines > 0

    def write(self, line: bytes) -> bool:
        """Append ``line``; False when it was held back (the cap is reached)."""
        if not self.holding and self.written + len(line) <= self.max_bytes:
            self.out.write(line)
            self.out.flush()
            self.written += len(line)
            return True
        if len(self.tail) == self.tail.maxlen:
            self.dropped_lines += 1
            self.dropped_bytes += len(self.tail[0])
        self.tail.append(line)
        now = time.monotonic()
        if now - self._touched >= LOG_ALIVE_S:
            os.utime(self.out.fileno())
            self._touched = now
        return False

    def close(self) -> None:
        """Write what was held back: the note, then the last lines."""
        if self.dropped_lines:
            self.out.write(f"mlchain: {self.dropped_lines:,} lines ({self.dropped_bytes:,} bytes) of the training's "
                           f"output are not kept here: a trial's log is limited to {self.max_bytes:,} bytes "
                           "(MLCHAIN_TRAIN_LOG_MAX_BYTES); its last lines follow\n".encode())
        for line in self.tail:
            self.out.write(line)
        self.out.flush()
        self.written += sum(len(line) for line in self.tail)
        self.tail.clear()


class LogFollower(threading.Thread):
    """Copies a container's output into the trial's log file, once, across processes."""

    def __init__(self, container: Container, log_file: Path, echo: Echo | None = None,
                 max_bytes: int = TRAIN_LOG_MAX_BYTES) -> None:
        super().__init__(name=f"mlchain-logs-{container.short_id}", daemon=True)
        self.container = container
        self.log_file = log_file
        self.echo = echo
        self.max_bytes = max_bytes
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        lock_path = self.log_file.parent / LOG_LOCK
        with contextlib.suppress(*engine_errors(), OSError), os.fdopen(open_log(lock_path, append=True)) as lock:
            if self._acquire(lock):
                try:
                    self._copy()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _acquire(self, lock: Any) -> bool:
        # Another process (job2 still running) may be copying: wait for it, not duplicate it.
        while not self._stop_event.is_set():
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                self._stop_event.wait(0.5)
        return False

    def _cursor(self) -> int:
        try:
            return int((self.log_file.parent / LOG_CURSOR).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _lines(self, since_ns: int) -> Iterator[tuple[int, bytes]]:
        """(timestamp in ns, line) of the container's output from ``since_ns`` to its end. When the
        engine rotates the log (its size limit) while it is followed, the stream can end before
        the output does: it is followed again from the last line seen, and once the container has
        exited its last lines are read once more."""
        last = since_ns
        while True:
            # `since` has second resolution on old engines: ask a second early (the caller drops repeats).
            since = max(last / 1e9 - 1.0, 0.0) or None
            stream = self.container.logs(stream=True, follow=True, timestamps=True, since=since)
            for stamp, line in _split_frames(cast(Iterator[bytes], stream)):
                stamp_ns = _timestamp_ns(stamp)
                last = max(last, stamp_ns)
                yield stamp_ns, line
            if self._stop_event.is_set():
                return
            self.container.reload()
            if self.container.status not in RUNNING_STATES:
                break
        tail = cast(bytes, self.container.logs(stdout=True, stderr=True, timestamps=True, tail=LAST_LINES))
        for stamp, line in _split_frames(iter([tail])):
            yield _timestamp_ns(stamp), line

    def _copy(self) -> None:
        cursor = self._cursor()
        cursor_file = self.log_file.parent / LOG_CURSOR
        with os.fdopen(open_log(self.log_file, append=True), "ab") as out:
            log = CappedLog(out, self.max_bytes)
            held = 0
            try:
                for stamp_ns, line in self._lines(cursor):
                    if stamp_ns <= cursor:
                        continue
                    kept = log.write(line)
                    cursor = stamp_ns
                    held = 0 if kept else held + 1
                    if kept or held % CURSOR_EVERY_LINES == 1:
                        cursor_file.write_text(str(cursor))
                    if self.echo is not None and (kept or held == 1):
                        self.echo(line.decode("utf-8", "replace").rstrip("\n") if kept else
                                  f"mlchain: the training's log reached {self.max_bytes:,} bytes; "
                                  "its last lines are written when it ends")
                    if self._stop_event.is_set():
                        break
            finally:
                log.close()
                cursor_file.write_text(str(cursor))


_FOLLOWERS: dict[tuple[str, Path], LogFollower] = {}
_FOLLOWERS_LOCK = threading.Lock()


def follow_logs_of(container: Container, log_file: Path, echo: Echo | None = None,
                   max_bytes: int = TRAIN_LOG_MAX_BYTES) -> LogFollower:
    """The one follower of this container's log in this process (a monitor attaching every few
    seconds must not start a thread each time)."""
    key = (str(container.id), log_file)
    with _FOLLOWERS_LOCK:
        for stale in [k for k, f in _FOLLOWERS.items() if not f.is_alive()]:
            del _FOLLOWERS[stale]
        follower = _FOLLOWERS.get(key)
        if follower is None:
            follower = LogFollower(container, log_file, echo, max_bytes)
            follower.start()
            _FOLLOWERS[key] = follower
        return follower


def _split_frames(stream: Iterator[bytes]) -> Iterator[tuple[str, bytes]]:
    """(timestamp, line) from a timestamped log stream; a frame may hold part of a line."""
    pending = b""
    for chunk in stream:
        pending += chunk
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            stamp, _, line = raw.partition(b" ")
            yield stamp.decode(), line + b"\n"
    if pending:
        stamp, _, line = pending.partition(b" ")
        yield stamp.decode(), line + b"\n"


# --- the handle -----------------------------------------------------------------------

class DockerHandle:
    """One container; survives its creator: any process can rebuild it from the id."""

    runner = "docker"

    def __init__(self, client: docker.DockerClient, spec: TrialSpec, container: Container,
                 echo: Echo | None = None, follow_logs: bool = True,
                 log_max_bytes: int = TRAIN_LOG_MAX_BYTES) -> None:
        self.client = client
        self.log_max_bytes = log_max_bytes
        self.spec = spec
        self.container = container
        self.ref = str(container.id)
        self.image: str | None = container.labels.get(LABEL_IMAGE) or spec.image
        self.image_id: str | None = container.attrs.get("Image")
        self._follower: LogFollower | None = None
        if follow_logs:
            self._follower = follow_logs_of(container, spec.log_file, echo, log_max_bytes)

    # state ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any] | None:
        """The container's State, or None when it is gone or the engine does not answer."""
        try:
            self.container.reload()
        except engine_errors():
            return None
        return cast(dict[str, Any], self.container.attrs.get("State", {}))

    def status(self) -> Status:
        state = self._state()
        if state is None:
            return "missing"
        return STATUS_MAP.get(str(state.get("Status")), "exited")

    def exit_info(self) -> ExitInfo:
        info = ExitInfo(last_lines=last_lines(self.logs(LAST_LINES), LAST_LINES),
                        heartbeat_age_s=heartbeat_age(self.spec))
        state = self._state()
        if state is None:
            info.engine_lost = True
            return info
        if state.get("Status") in RUNNING_STATES:
            return info
        info.exit_code = int(state.get("ExitCode", -1))
        info.oom_killed = bool(state.get("OOMKilled"))
        info.signal = signal_of(info.exit_code)
        return info

    # waiting --------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> ExitInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return self.exit_info()
            try:
                self.container.wait(timeout=max(0.1, min(WAIT_SLICE_S, remaining)))
                break
            except engine_errors():
                # A read timeout (still running) or a lost engine: the state tells which.
                if self.status() != "running":
                    break
        self._drain_logs()
        return self.exit_info()

    def _drain_logs(self) -> None:
        """After the exit, let the follower copy the last lines before they are read."""
        if self._follower is None:
            # A handle that did not follow (the monitor's) still makes the file complete.
            self._follower = follow_logs_of(self.container, self.spec.log_file, max_bytes=self.log_max_bytes)
        self._follower.join(LOG_JOIN_S)

    def logs(self, tail: int | None = None) -> str:
        try:
            raw = self.container.logs(stdout=True, stderr=True, tail=tail if tail else "all")
            return cast(bytes, raw).decode("utf-8", "replace")
        except engine_errors():
            return self._log_file_tail(tail)

    def _log_file_tail(self, tail: int | None) -> str:
        return tail_text(self.spec.log_file, tail)

    def cancel(self) -> None:
        """Stop (SIGTERM, then SIGKILL after a grace); the container is kept for inspection."""
        with contextlib.suppress(*engine_errors()):
            self.container.stop(timeout=STOP_TIMEOUT_S)


# --- the runner -----------------------------------------------------------------------

class DockerRunner:
    name = "docker"

    def __init__(self, settings: Settings, client: docker.DockerClient | None = None,
                 echo: Echo | None = None, echo_logs: bool = False) -> None:
        self.settings = settings
        self.client = client or docker_client()
        self.echo = echo
        # Off by default: job3 already tails train.log to the console; echoing here too doubles it.
        self.echo_logs = echo_logs

    def _image(self, spec: TrialSpec) -> str:
        if spec.image:
            return spec.image
        from mlchain.images import ensure_image

        return ensure_image(self.settings, spec.framework, echo=self.echo, client=self.client).tag

    def container_options(self, spec: TrialSpec, image: str) -> dict[str, Any]:
        """Everything the sandbox is made of, as arguments of containers.create."""
        s = self.settings
        memory = memory_bytes(s.docker_memory)
        env = spec.contract_env(repo_dir=REPO_MOUNT, output_dir=OUTPUT_MOUNT,
                                checkpoint_dir=CHECKPOINT_MOUNT, data_dir=DATA_MOUNT, params_file=PARAMS_MOUNT)
        env["HOME"] = "/tmp"
        env.update(spec.dataset_env(keras_datasets=KERAS_DATASETS_MOUNT, sklearn_data=SKLEARN_DATA_MOUNT))
        datasets = {spec.datasets[library]: {"bind": mount, "mode": "ro"}
                    for library, mount in (("keras", KERAS_DATASETS_MOUNT), ("sklearn", SKLEARN_DATA_MOUNT))
                    if library in spec.datasets}
        network = s.docker_network
        if spec.network and network == "none":
            network = NETWORK_OPT_IN
        return {
            "image": image,
            "name": container_name(spec),
            "environment": env,
            "volumes": {
                str(spec.repo_dir.resolve()): {"bind": REPO_MOUNT, "mode": "ro"},
                str(spec.output_dir.resolve()): {"bind": OUTPUT_MOUNT, "mode": "rw"},
                str(spec.checkpoint_dir.resolve()): {"bind": CHECKPOINT_MOUNT, "mode": "rw"},
                str(spec.data_dir.resolve()): {"bind": DATA_MOUNT, "mode": "ro"},
                str(spec.params_file.resolve()): {"bind": PARAMS_MOUNT, "mode": "ro"},
                **datasets,
            },
            "working_dir": REPO_MOUNT,
            "user": f"{TRAIN_UID}:{TRAIN_UID}",
            "network_mode": network,
            "read_only": True,
            "tmpfs": {"/tmp": TMPFS_OPTIONS},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": memory,
            "memswap_limit": memory,   # equal: no swap, so an over-limit run is OOM-killed, not slowed
            "nano_cpus": int(s.docker_cpus * 1e9),
            "pids_limit": s.docker_pids_limit,
            "init": True,              # tini as PID 1: SIGTERM reaches training, zombies are reaped
            "labels": {**spec.labels(), LABEL_IMAGE: image, LABEL_SPEC: spec.to_json()},
            "auto_remove": False,      # the monitor needs the exit code and the OOM flag
            # The engine's own copy of the output, bounded too (rotated: the newest is kept).
            "log_config": {"type": "json-file",
                           "config": {"max-size": str(s.train_log_max_bytes), "max-file": "2"}},
            "detach": True,
        }

    def start(self, spec: TrialSpec) -> DockerHandle:
        spec.prepare()
        for writable in (spec.output_dir, spec.checkpoint_dir):
            make_writable_for_container(writable)
        for stale in (LOG_CURSOR,):
            (spec.host_dir / stale).unlink(missing_ok=True)
        options = self.container_options(spec, self._image(spec))
        container = self._create(options)
        container.start()
        container.reload()
        return DockerHandle(self.client, spec, container, echo=self.echo if self.echo_logs else None,
                            log_max_bytes=self.settings.train_log_max_bytes)

    def _create(self, options: dict[str, Any]) -> Container:
        errors = _docker_errors()
        try:
            return self.client.containers.create(**options)
        except errors.ImageNotFound as exc:
            raise MlchainError(f"image {options['image']} is not on this engine",
                               hint="build it: `mlchain images build`") from exc
        except errors.APIError as exc:
            if exc.status_code != 409:
                raise MlchainError(f"docker refused the training container: {exc.explanation}") from exc
        # A container of the same name: a rerun of the same attempt. Replace it unless it runs.
        old = self.client.containers.get(options["name"])
        if old.status in RUNNING_STATES:
            raise MlchainError(f"container {options['name']} is already running",
                               hint=f"wait for it or stop it: docker stop {options['name']}")
        old.remove(force=True)
        return self.client.containers.create(**options)

    def attach(self, spec: TrialSpec, ref: str, follow_logs: bool = True) -> DockerHandle:
        """Find the container again by id (from job3 or the monitor, in another process)."""
        errors = _docker_errors()
        try:
            container = self.client.containers.get(ref)
        except errors.NotFound:
            return _MissingHandle.make(self.client, spec, ref)
        return DockerHandle(self.client, spec, container, echo=self.echo if self.echo_logs else None,
                            follow_logs=follow_logs, log_max_bytes=self.settings.train_log_max_bytes)


class _MissingHandle(DockerHandle):
    """A container that no longer exists (removed, or the engine lost it): reports engine_lost."""

    def __init__(self, client: docker.DockerClient, spec: TrialSpec, ref: str) -> None:
        self.client = client
        self.spec = spec
        self.ref = ref
        self.image = spec.image
        self.image_id = None
        self._follower = None
        self.log_max_bytes = TRAIN_LOG_MAX_BYTES

    @classmethod
    def make(cls, client: docker.DockerClient, spec: TrialSpec, ref: str) -> DockerHandle:
        return cls(client, spec, ref)

    def status(self) -> Status:
        return "missing"

    def exit_info(self) -> ExitInfo:
        return ExitInfo(engine_lost=True, last_lines=last_lines(self._log_file_tail(LAST_LINES), LAST_LINES),
                        heartbeat_age_s=heartbeat_age(self.spec))

    def wait(self, timeout: float | None = None) -> ExitInfo:
        return self.exit_info()

    def logs(self, tail: int | None = None) -> str:
        return self._log_file_tail(tail)

    def cancel(self) -> None:
        return None


def find_training_containers(client: docker.DockerClient, run_id: str | None = None) -> list[Container]:
    """mlchain's training containers (all states), optionally of one run: for the monitor."""
    labels = [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])
    return cast(list["Container"], client.containers.list(all=True, filters={"label": labels}))


def spec_of(container: Container) -> TrialSpec | None:
    """The TrialSpec a container was started with (from its label), when it carries one this
    mlchain can read: on a shared engine, another mlchain version's containers carry other
    fields, and the monitor must pass them by, not stop on them."""
    raw = container.labels.get(LABEL_SPEC)
    if not raw:
        return None
    try:
        return TrialSpec.from_json(raw)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
