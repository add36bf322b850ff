"""``mlchain model serve``: load the target from the registry, then serve it under uvicorn.

The first load happens before the port opens, so a name or alias that does not exist ends
the command at once with its reason (exit 9); with ``wait`` the server starts anyway, answers
503 until the registry has the model, and loads it as soon as it appears.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlchain.errors import ConfigError, NotFound
from mlchain.serving.app import ServeOptions, create_app
from mlchain.serving.model import AliasWatcher, ModelHolder, Registry, Target
from mlchain.serving.observer_api import NullObserver, Observer

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from mlchain.config import Settings

log = logging.getLogger("mlchain.serving")


def options_of(settings: Settings) -> ServeOptions:
    return ServeOptions(max_batch_rows=settings.serve_max_batch_rows, max_wait_s=settings.serve_max_wait_ms / 1000,
                        max_body=settings.serve_max_body)


def target_of(name: str, alias: str | None, version: str | None) -> Target:
    if alias and version:
        raise ConfigError("--alias and --version both name what to serve", hint="pass one of them")
    if version is not None and not (version.isdigit() and int(version) > 0):
        raise ConfigError(f"--version {version!r} is not a model version", hint="pass a positive whole number")
    return Target(name=name, alias=None if version else (alias or "champion"), version=version)


def build_app(settings: Settings, target: Target, *, wait: bool = False,
              observer: Observer | None = None) -> Starlette:
    """The app serving ``target``; its first version loaded already (unless ``wait``)."""
    registry = Registry(settings)
    holder = ModelHolder(target)
    try:
        holder.swap(registry.load(target.name, registry.wanted_version(target)))
    except NotFound as exc:
        if not wait:
            raise
        log.warning("%s; waiting for it (polling every %.1f s)", exc.reason, settings.serve_poll_s)
    watcher = AliasWatcher(registry, holder, settings.serve_poll_s) if (target.alias or wait) else None
    return create_app(holder, observer or NullObserver(), options_of(settings), watcher=watcher)


def serve(settings: Settings, target: Target, *, host: str, port: int, wait: bool = False) -> None:
    import uvicorn

    from mlchain.serving.observe import DriftObserver
    from mlchain.webhook.server import log_config

    # Every prediction is kept for feedback and watched for drift (the store, the detectors and
    # retraining on drift are the observer's: serving/observe.py).
    app = build_app(settings, target, wait=wait, observer=DriftObserver(settings, target.name))
    uvicorn.run(app, host=host, port=port, log_config=log_config(), access_log=False, server_header=False,
                loop="uvloop", http="httptools")
