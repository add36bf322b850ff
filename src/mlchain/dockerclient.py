"""The one way mlchain reaches a Docker engine (the image builder and the Docker runner both
use it), and what the SDK raises when the engine stops answering."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlchain.errors import RunnerUnavailable

if TYPE_CHECKING:
    import docker

API_TIMEOUT_S = 120


def engine_errors() -> tuple[type[BaseException], ...]:
    """What the SDK raises when the engine stops answering (requests' errors, not DockerException)."""
    import docker
    import requests

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout, docker.errors.DockerException)


def docker_client(timeout: int = API_TIMEOUT_S) -> docker.DockerClient:
    """A client of the engine in the environment; RunnerUnavailable with how to start one."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, *engine_errors()) as exc:
        raise RunnerUnavailable(
            f"no Docker engine answers ({exc})",
            hint="start it: `sudo systemctl start docker`, or `dockerd &`, or `bash scripts/setup-docker.sh`;"
                 " or point DOCKER_HOST at an engine that runs; or set MLCHAIN_RUNNER=process") from exc
    return client
