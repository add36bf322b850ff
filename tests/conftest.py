"""Shared fixtures: fresh settings and stores per test, real git repositories, a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (docker_support, fakes)

from helpers import free_port, make_git_repo

# The corpus holds other people's training repositories (their own tests included): input, not tests.
collect_ignore = ["corpus"]


@pytest.fixture(autouse=True)
def _secrets_taken_per_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings keeps the secrets it took from this process's environment (read once, in a
    real process); a test starts without those of the tests before it."""
    from mlchain import config

    monkeypatch.setattr(config, "_taken_secrets", {})


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Settings on a fresh MLCHAIN_HOME (fresh SQLite MLflow, Optuna and state stores)."""
    from mlchain.config import load_settings

    def make(**flags: Any) -> Any:
        values = {"home": tmp_path / "home", "runner": "process", "monitor_interval_s": 0.5,
                  "backoff_base_s": 0.05, **flags}
        return load_settings(values, env={})

    return make


@pytest.fixture
def git_repo(tmp_path: Path) -> Any:
    def make(name: str = "repo", **kwargs: Any) -> Path:
        return make_git_repo(tmp_path / name, **kwargs)

    return make


class Mailbox:
    """Collects what a real aiosmtpd server received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        # hold_next(): the next message is held unanswered (the sender waits in DATA) until
        # release(), then refused with a temporary error and not kept.
        self._hold = False
        self.held = threading.Event()
        self.released = threading.Event()

    def hold_next(self) -> None:
        self._hold = True

    def release(self) -> None:
        self.released.set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes, policy

        if self._hold:
            self._hold = False
            self.held.set()
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
            return "451 held by the test, not delivered"
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, int, Mailbox]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, mailbox
    finally:
        mailbox.release()
        controller.stop()


# --- a real Docker engine (the tests that use these are skipped without one, failing in CI) ---

@pytest.fixture(scope="session")
def docker_client() -> Any:
    from docker_support import require_docker

    return require_docker()


@pytest.fixture(scope="session")
def sklearn_image(docker_client: Any) -> Any:
    from docker_support import built_image

    return built_image("sklearn")


@pytest.fixture()
def run_id(docker_client: Any) -> Iterator[str]:
    from docker_support import fresh_run_id

    with fresh_run_id(docker_client) as rid:
        yield rid


@pytest.fixture(scope="session")
def keras2_image(docker_client: Any) -> Any:
    """The Keras 2 image (TensorFlow 2.15): about 200 MB to download on its first build."""
    from docker_support import built_image

    return built_image("keras2")


@pytest.fixture(autouse=True)
def _mlflow_uris_stay_with_their_test() -> Any:
    """A test that points MLflow somewhere (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI)
    must not send every later test's processes there."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
