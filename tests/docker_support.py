"""Helpers for the tests that need a real Docker engine.

Without an engine the tests are skipped, or fail in strict mode (tests/strictness.py:
scripts/test.sh --strict, or CI), where ``scripts/setup-docker.sh`` is expected to have
started one.

Images are built from ``MLCHAIN_BASE_IMAGE`` when set, else from the offline base
(``scripts/build-base-image.sh``, built on demand when neither it nor
python:3.11-slim is on the engine), with the CA bundle in
``MLCHAIN_BUILD_CA_BUNDLE`` or ``PIP_CERT`` so pip can reach the index through an
intercepting proxy. Built images are cached by content hash, so only the first
session pays for a build.

Test modules import from here after putting tests/ on sys.path, and define their
fixtures over these functions (fixtures imported from another module confuse linters).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from strictness import require

from mlchain.config import Settings
from mlchain.images import ImageRef, ensure_image
from mlchain.runners.base import TrialSpec
from mlchain.runners.docker import find_training_containers

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_BASE = "mlchain-base:bookworm"
DEFAULT_BASE = "python:3.11-slim"


@functools.lru_cache(maxsize=1)
def _engine() -> Any | None:
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return None


def require_docker() -> Any:
    """The engine's client; skip without one, or fail in strict mode."""
    client = _engine()
    if client is None:
        require("no Docker engine answers (start one with `bash scripts/setup-docker.sh`,"
                " or point DOCKER_HOST at one)")
    return client


def _has_image(client: Any, name: str) -> bool:
    import docker

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


@functools.lru_cache(maxsize=1)
def base_image() -> str:
    """MLCHAIN_BASE_IMAGE, else whichever Python base is on the engine, else the offline one (built now)."""
    explicit = os.environ.get("MLCHAIN_BASE_IMAGE")
    if explicit:
        return explicit
    client = require_docker()
    for name in (OFFLINE_BASE, DEFAULT_BASE):
        if _has_image(client, name):
            return name
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build-base-image.sh")],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"no base image, and scripts/build-base-image.sh failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def ca_bundle() -> Path | None:
    for var in ("MLCHAIN_BUILD_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def docker_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": home, "runner": "docker", "base_image": base_image(), "build_ca_bundle": ca_bundle(),
        "docker_memory": "2g", "docker_cpus": 2.0, "docker_pids_limit": 128,
    }
    values.update(overrides)
    return Settings(**values)


@functools.cache
def built_image(framework: str) -> ImageRef:
    """Each framework's image, built once per test session (and cached by tag across sessions)."""
    # Images do not depend on the home folder; any will do.
    return ensure_image(docker_settings(Path(tempfile.gettempdir())), framework, echo=None,
                        client=require_docker())


@contextlib.contextmanager
def fresh_run_id(client: Any) -> Iterator[str]:
    """A new run id; its containers are removed afterwards (test modules wrap this in a fixture)."""
    rid = f"test-{uuid.uuid4().hex[:10]}"
    try:
        yield rid
    finally:
        for container in find_training_containers(client, rid):
            container.remove(force=True)


def write_repo(root: Path, train_py: str, name: str = "repo") -> Path:
    repo = root / name
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "train.py").write_text(textwrap.dedent(train_py))
    return repo


def make_spec(tmp: Path, run_id: str, repo: Path, image: str | None, *, framework: str = "sklearn",
              params: dict[str, object] | None = None, attempt: int = 1, metric: str = "accuracy") -> TrialSpec:
    return TrialSpec(run_id=run_id, trial=1, framework=framework, repo_dir=repo, entry="train.py",
                     params=params or {}, output_dir=tmp / "out", checkpoint_dir=tmp / "ckpt",
                     data_dir=tmp / "data", metric=metric, attempt=attempt, image=image)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class NoBuildClient:
    """A docker client whose build endpoint must not be called (what is cached must be found)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.api = _NoBuildApi(real.api)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _NoBuildApi:
    def __init__(self, real: Any) -> None:
        self._real = real
        self.build_calls = 0

    def build(self, *args: Any, **kwargs: Any) -> Any:
        self.build_calls += 1
        raise AssertionError("an image was rebuilt although nothing changed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
