"""Stop the Docker engine during a trial and start it again: the monitor restarts the trial.

Stopping dockerd stops every container it runs, so this test never touches the engine
other tests (and people) use: it starts its own dockerd (own socket, data root, exec root
and containerd, no bridge, no iptables), loads the sklearn image into it from the main
engine, points DOCKER_HOST at it, and stops and restarts that one. The private engine's
data root is kept between sessions (an image is loaded once per content hash); the daemon
itself is stopped at the end. Its own file: CI runs it serially with the rest.

The private engine gets its own bridge interface: a dockerd started with ``--bridge none``
deletes ``docker0``, the main engine's bridge, which breaks its builds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker_support import built_image, docker_settings, require_docker
from helpers import wait_for
from strictness import require
from test_monitor_support import (
    Lines,
    collect,
    launch,
    live_ref,
    progress_rows,
    trial_row,
    write_workload,
)

from mlchain.runners.base import TrialSpec
from mlchain.state import StateStore, TrialRow

pytestmark = pytest.mark.docker

ROOT = Path(os.environ.get("MLCHAIN_TEST_DOCKERD_DIR", "/var/tmp/mlchain-test-dockerd"))
START_TIMEOUT_S = 60
BRIDGE = "mlct0"
BRIDGE_ADDRESS = "172.31.254.1/24"


@dataclass
class PrivateEngine:
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def answers(self) -> bool:
        done = subprocess.run(["docker", "-H", self.host, "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, check=False, timeout=30)
        return done.returncode == 0

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "docker.pid").unlink(missing_ok=True)
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--host", self.host, "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
                 "--bridge", BRIDGE, "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.answers() or self.process is None or self.process.poll() is not None,
                 START_TIMEOUT_S, "the private dockerd", poll_s=0.5)
        if not self.answers():
            tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"the private dockerd did not start:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: it stops its containers, then exits."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def load(self, tag: str) -> None:
        """Copy an image from the main engine (once per tag: the data root is kept)."""
        have = subprocess.run(["docker", "-H", self.host, "image", "inspect", tag], capture_output=True, check=False)
        if have.returncode == 0:
            return
        done = subprocess.run(f"docker save {tag} | docker -H {self.host} load", shell=True,
                              capture_output=True, text=True, check=False, timeout=600)
        assert done.returncode == 0, done.stderr


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def _make_bridge() -> bool:
    """The private engine's own bridge; True when this call created it."""
    if _link_exists(BRIDGE):
        return False
    for args in (["link", "add", BRIDGE, "type", "bridge"], ["addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
                 ["link", "set", BRIDGE, "up"]):
        subprocess.run(["ip", *args], capture_output=True, check=True)
    return True


def _can_run_dockerd() -> str | None:
    if os.geteuid() != 0:
        return "starting a private dockerd needs root"
    for tool in ("dockerd", "ip"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            return f"{tool} is not installed"
    return None


@pytest.fixture()
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PrivateEngine, Any]]:
    require_docker()
    require(_can_run_dockerd())
    image = built_image("sklearn")  # built (or found) on the main engine
    main_bridge = _link_exists("docker0")
    made_bridge = _make_bridge()
    private = PrivateEngine(ROOT)
    try:
        private.start()
        private.load(image.tag)
        monkeypatch.setenv("DOCKER_HOST", private.host)
        yield private, image
    finally:
        import docker

        with contextlib.suppress(Exception):  # the engine is being stopped anyway
            client = docker.DockerClient(base_url=private.host, timeout=30)
            for container in client.containers.list(all=True, filters={"label": "io.mlchain.managed=true"}):
                container.remove(force=True)
            client.close()
        private.stop()
        if made_bridge:
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        # The main engine's bridge is untouched (other tests and people use that engine).
        assert _link_exists("docker0") == main_bridge


def test_stopping_and_starting_the_engine_mid_trial_restarts_the_trial(
        tmp_path: Path, engine: tuple[PrivateEngine, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    private, image = engine
    # job2 launches the image loaded into the private engine. (Its tag is a hash of mlchain's
    # source: on a machine where the source changes during the session job2 would want another.)
    import mlchain.images

    monkeypatch.setattr(mlchain.images, "ensure_image", lambda *_a, **_k: image)
    settings = docker_settings(tmp_path / "home", max_restarts=3, backoff_base_s=0.05, backoff_max_s=0.5,
                               monitor_interval_s=0.2, hung_after_s=120.0)
    repo = write_workload(tmp_path, epochs=40, epoch_s=0.25)
    run_id = "engine-restart"
    lines = Lines()
    outcome: dict[str, Any] = {}

    def job3() -> None:
        try:
            outcome["row"] = collect(settings, run_id, lines)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    launcher = threading.Thread(target=launch, args=(settings, repo, run_id, lines))
    launcher.start()
    row = wait_for(lambda: (live_ref(trial_row(settings, run_id)) and trial_row(settings, run_id))
                   or not launcher.is_alive(), 120, "the launch")
    assert isinstance(row, TrialRow), f"job2 failed:\n{lines.text}"
    out = TrialSpec.from_json(row.launched_spec).output_dir
    wait_for(lambda: len(progress_rows(out)) >= 3, 120, "three epochs")
    stopped_at = time.time()
    private.stop()                     # the engine goes away, and the container with it
    assert not private.answers()
    launcher.join(timeout=120)         # (job2 was still creating the MLflow run)
    waiter = threading.Thread(target=job3)
    waiter.start()                     # job3 waits while there is no engine ...
    private.start()                    # ... and it comes back
    waiter.join(timeout=240)
    assert not waiter.is_alive(), lines.text
    assert "error" not in outcome, f"{outcome.get('error')!r}\n{lines.text}"
    final = outcome["row"]
    assert final.status == "succeeded" and final.restarts == 1, lines.text
    (event,) = [e for e in StateStore(settings.state_db).events(run_id) if e.kind == "restart"]
    assert "restart 1/3 after killed" in event.message
    assert "resuming SoftmaxRegression from the checkpoint of epoch" in event.message
    assert event.at > stopped_at
    # The restart resumed: the epochs of the first attempt were not trained again.
    epochs = [r["epoch"] for r in progress_rows(out)]
    assert epochs[-1] == 40 and len(epochs) <= 40 + 1
