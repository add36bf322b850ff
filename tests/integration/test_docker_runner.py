"""The docker runner with a real engine: a tiny sklearn trial, logs, labels, cancel, attach, OOM, kill."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from docker_support import (
    docker_settings,
    make_spec,
    read_json,
    write_repo,
)

from mlchain.images import ImageRef
from mlchain.runners.base import LABEL_MANAGED, LABEL_RUN, LABEL_TRIAL, TrialSpec
from mlchain.runners.docker import (
    LABEL_IMAGE,
    DockerHandle,
    DockerRunner,
    LogFollower,
    container_name,
    find_training_containers,
    spec_of,
)
from mlchain.runners.select import get_runner, runner_by_name

pytestmark = pytest.mark.docker


TINY_SKLEARN = """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from mlchain import sdk

    p = sdk.params()
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    model = LogisticRegression(max_iter=int(p["max_iter"])).fit(x_train, y_train)
    print("tiny-sklearn: fitted", flush=True)
    sdk.report({"accuracy": model.score(x_test, y_test)})
    sdk.save_model(model)
"""

LONG_RUNNING = """
    import time
    for i in range(600):
        print(f"still training {i}", flush=True)
        time.sleep(0.5)
"""

ALLOCATE = """
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))  # touched: bytearray zero-fills
"""


def start(tmp_path: Path, run_id: str, image: ImageRef, train_py: str, **settings: Any) -> DockerHandle:
    repo = write_repo(tmp_path, train_py)
    spec = make_spec(tmp_path, run_id, repo, image.tag, params={"max_iter": 200})
    return DockerRunner(docker_settings(tmp_path, **settings)).start(spec)


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_trains_a_tiny_sklearn_repository(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                          docker_client: Any) -> None:
    handle = start(tmp_path, run_id, sklearn_image, TINY_SKLEARN)
    assert handle.status() in ("created", "running", "exited")
    info = handle.wait(timeout=180)
    assert info.exit_code == 0, "\n".join(info.last_lines)
    assert handle.status() == "exited"
    assert not info.oom_killed and info.signal is None and not info.engine_lost
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["accuracy"] > 0.9
    assert (tmp_path / "out" / "model" / "MLmodel").is_file()
    log = handle.spec.log_file.read_text()
    assert "tiny-sklearn: fitted" in log and "mlchain-train: done" in log
    assert "tiny-sklearn: fitted" in "\n".join(info.last_lines)
    assert handle.image == sklearn_image.tag and handle.image_id == sklearn_image.image_id
    labels = docker_client.containers.get(handle.ref).labels
    assert labels[LABEL_MANAGED] == "true" and labels[LABEL_RUN] == run_id and labels[LABEL_TRIAL] == "1"
    assert labels[LABEL_IMAGE] == sklearn_image.tag
    found = find_training_containers(docker_client, run_id)
    assert [c.id for c in found] == [handle.ref]
    assert spec_of(found[0]) == handle.spec


def test_container_is_sandboxed_as_configured(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                              docker_client: Any) -> None:
    repo = write_repo(tmp_path, "print('hi')\n")
    spec = make_spec(tmp_path, run_id, repo, None)   # no image named: the runner ensures the framework's
    settings = docker_settings(tmp_path, docker_memory="256m", docker_cpus=1.5, docker_pids_limit=50)
    handle = DockerRunner(settings).start(spec)
    handle.wait(timeout=60)
    assert handle.image is not None and handle.image.startswith("mlchain-sklearn:")
    host = docker_client.containers.get(handle.ref).attrs["HostConfig"]
    config = docker_client.containers.get(handle.ref).attrs["Config"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == 256 * 1024**2 and host["NanoCpus"] == 1_500_000_000 and host["PidsLimit"] == 50
    assert "/tmp" in host["Tmpfs"] and host["AutoRemove"] is False
    assert config["User"] == "10001:10001"
    binds = {b.split(":")[1]: b.split(":")[-1] for b in host["Binds"]}
    assert binds == {"/workspace/repo": "ro", "/workspace/output": "rw", "/workspace/checkpoints": "rw",
                     "/workspace/data": "ro", "/workspace/params.json": "ro"}
    assert container_name(handle.spec) == f"mlchain-{run_id}-t1-a1"


def test_status_cancel_keeps_the_container(tmp_path: Path, run_id: str, sklearn_image: ImageRef) -> None:
    handle = start(tmp_path, run_id, sklearn_image, LONG_RUNNING)
    wait_until(lambda: "still training 2" in handle.logs())
    assert handle.status() == "running"
    assert handle.wait(timeout=1).exit_code is None  # a timeout returns, it does not hang
    started = time.monotonic()
    handle.cancel()
    assert time.monotonic() - started < 12
    info = handle.wait(timeout=30)
    assert handle.status() == "exited"
    assert info.exit_code is not None and info.exit_code != 0
    assert info.signal in (15, 9)  # SIGTERM reached python through the init; SIGKILL after the grace
    assert "still training" in handle.spec.log_file.read_text()


def test_attach_from_another_runner_finds_the_container(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                                         docker_client: Any) -> None:
    script = LONG_RUNNING.replace("range(600)", "range(6)") + """
    from mlchain import sdk
    sdk.report({"accuracy": 1.0})
"""
    handle = start(tmp_path, run_id, sklearn_image, script)
    spec = TrialSpec.from_json(handle.spec.to_json())   # as job3 would rebuild it
    again = DockerRunner(docker_settings(tmp_path)).attach(spec, handle.ref)
    assert runner_by_name("docker", docker_settings(tmp_path)).name == "docker"
    assert again.ref == handle.ref and again.status() == "running"
    assert again.image == sklearn_image.tag and again.image_id == sklearn_image.image_id
    # As a follower in another process would (flock locks are per open file, not per process).
    rival = LogFollower(docker_client.containers.get(handle.ref), spec.log_file)
    rival.start()
    info = again.wait(timeout=60)
    assert info.exit_code == 0, info.last_lines
    handle.wait(timeout=30)
    rival.join(15)
    log = handle.spec.log_file.read_text().splitlines()
    # Two followers copied the output once: the lock and the cursor share the work.
    for i in range(6):
        assert log.count(f"still training {i}") == 1, log


def test_missing_container_reports_engine_lost(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                               docker_client: Any) -> None:
    handle = start(tmp_path, run_id, sklearn_image, "print('short')\n")
    handle.wait(timeout=60)
    docker_client.containers.get(handle.ref).remove(force=True)
    assert handle.status() == "missing"
    assert handle.exit_info().engine_lost
    ghost = DockerRunner(docker_settings(tmp_path)).attach(handle.spec, handle.ref)
    assert ghost.status() == "missing" and ghost.wait(1).engine_lost
    assert "short" in "\n".join(ghost.exit_info().last_lines)


def test_out_of_memory_is_reported(tmp_path: Path, run_id: str, sklearn_image: ImageRef) -> None:
    handle = start(tmp_path, run_id, sklearn_image, ALLOCATE, docker_memory="96m")
    info = handle.wait(timeout=120)
    assert info.oom_killed, info
    assert info.exit_code == 137 and info.signal == 9


def test_kill_is_reported_as_signal_9(tmp_path: Path, run_id: str, sklearn_image: ImageRef,
                                      docker_client: Any) -> None:
    handle = start(tmp_path, run_id, sklearn_image, LONG_RUNNING)
    wait_until(lambda: handle.status() == "running")
    docker_client.containers.get(handle.ref).kill()
    info = handle.wait(timeout=30)
    assert info.exit_code == 137 and info.signal == 9 and not info.oom_killed


# On stderr, as the logging module writes: one pipe, so the traceback comes after the lines in
# the engine's log too (stdout and stderr are read apart, and stamped as read).
CHATTY_THEN_RAISES = """
    import sys
    for i in range(40_000):
        sys.stderr.write(f"chatty line {i:06d} " + "x" * 80 + "\\n")
    raise ValueError("the end of a chatty training")
"""


def test_a_training_that_prints_without_end_cannot_fill_the_hosts_disk(tmp_path: Path, run_id: str,
                                                                       sklearn_image: ImageRef,
                                                                       docker_client: Any) -> None:
    cap = 256 * 1024  # about 2,600 of the 40,000 lines (4 MB)
    handle = start(tmp_path, run_id, sklearn_image, CHATTY_THEN_RAISES, train_log_max_bytes=cap)
    info = handle.wait(timeout=180)
    assert info.exit_code not in (0, None)
    log = handle.spec.log_file.read_bytes()
    assert len(log) < cap + 64 * 1024, len(log)  # the head, the note and the last 200 lines
    text = log.decode()
    head, note, rest = text.partition("\nmlchain: ")
    assert note and "of the training's output are not kept here: a trial's log is limited to 262,144 bytes" in rest
    # The head: lines in order, once each, up to the limit. Not necessarily from line 0 nor without
    # a gap: the engine keeps only the newest 2 x 256 KB of its own log, and a follower slowed
    # down by a busy machine may find some of it rotated away.
    numbers = [int(line.split()[2]) for line in head.splitlines() if line.startswith("chatty line ")]
    in_order = all(a < b for a, b in itertools.pairwise(numbers))
    assert len(numbers) > 2_000 and in_order, f"{len(numbers)} lines, in order: {in_order}"
    # The end is kept: how the training ended is in the file and in what the monitor reads.
    assert text.rstrip().splitlines()[-1].startswith("mlchain-train: error:"), text[-2000:]
    assert "ValueError: the end of a chatty training" in text
    assert "ValueError: the end of a chatty training" in "\n".join(info.last_lines)
    # The engine's own copy of the output is bounded too (rotated, the newest kept).
    config = docker_client.containers.get(handle.ref).attrs["HostConfig"]["LogConfig"]
    assert config == {"Type": "json-file", "Config": {"max-size": str(cap), "max-file": "2"}}


def test_runner_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_runner(docker_settings(tmp_path, runner="auto")).name == "docker"
    assert get_runner(docker_settings(tmp_path, runner="process")).name == "process"
    # No engine at DOCKER_HOST: auto falls back with a warning, forced docker says how to start one.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    warnings: list[str] = []
    assert get_runner(docker_settings(tmp_path, runner="auto"), echo=warnings.append).name == "process"
    assert len(warnings) == 1 and "Docker" in warnings[0]
    from mlchain.errors import RunnerUnavailable

    with pytest.raises(RunnerUnavailable, match="setup-docker.sh"):
        get_runner(docker_settings(tmp_path, runner="docker"))
