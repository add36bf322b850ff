"""Fixtures of the tests that need a real Docker engine (skipped without one, failing in CI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from docker_support import built_image, fresh_run_id, require_docker

from mlchain.images import ImageRef


@pytest.fixture(scope="session")
def docker_client() -> Any:
    return require_docker()


@pytest.fixture(scope="session")
def sklearn_image(docker_client: Any) -> ImageRef:
    return built_image("sklearn")


@pytest.fixture()
def run_id(docker_client: Any) -> Iterator[str]:
    with fresh_run_id(docker_client) as rid:
        yield rid
