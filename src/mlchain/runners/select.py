"""Which runner trains: Docker when an engine answers, else a subprocess (with a warning).

``settings.runner`` forces one: 'docker' fails with how to start an engine when none
answers; 'process' never touches Docker. ``runner_by_name`` re-creates the runner a
trial was started with, for the monitor and job3 (which run in other processes).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from mlchain.config import Settings
from mlchain.errors import ConfigError
from mlchain.runners.base import Runner

if TYPE_CHECKING:
    import docker

Echo = Callable[[str], None]

PING_TIMEOUT_S = 3
FALLBACK_WARNING = ("warning: no Docker engine answers; training runs as a local process, without the "
                    "sandbox (start Docker: bash scripts/setup-docker.sh, or set MLCHAIN_RUNNER=process)")


def _warn(echo: Echo | None, message: str) -> None:
    """A warning to stderr: through click's echo when given one (it takes err=), else print."""
    if echo is None:
        print(message, file=sys.stderr)
        return
    try:
        cast(Any, echo)(message, err=True)
    except TypeError:  # a plain callable of one string
        echo(message)


def docker_answers(timeout: int = PING_TIMEOUT_S) -> docker.DockerClient | None:
    """A client when an engine answers a ping within the timeout, else None."""
    try:
        import docker
    except ImportError:
        return None
    client = None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        return None


def _docker(settings: Settings, echo: Echo | None) -> Runner:
    from mlchain.runners.docker import DockerRunner

    return DockerRunner(settings, echo=echo)


def _process(settings: Settings, echo: Echo | None) -> Runner:
    from mlchain.runners.process import ProcessRunner

    return ProcessRunner(settings, echo=echo)


RUNNERS: dict[str, Callable[[Settings, Echo | None], Runner]] = {"docker": _docker, "process": _process}


def get_runner(settings: Settings, echo: Echo | None = None) -> Runner:
    """The runner for new trials: settings.runner, or 'auto' = docker if it answers, else process."""
    if settings.runner != "auto":
        return runner_by_name(settings.runner, settings, echo)
    probe = docker_answers()
    if probe is not None:
        probe.close()
        return _docker(settings, echo)
    _warn(echo, FALLBACK_WARNING)
    return _process(settings, echo)


def runner_by_name(name: str, settings: Settings, echo: Echo | None = None) -> Runner:
    """The runner that started a trial, to attach to it again ('docker' raises when unreachable)."""
    try:
        factory = RUNNERS[name]
    except KeyError:
        raise ConfigError(f"unknown runner {name!r}", hint=f"use one of: {', '.join(RUNNERS)}") from None
    return factory(settings, echo)
