"""``mlchain serve``: the GitHub webhook receiver, its durable queue, workers and the dashboard.

``POST /github-webhook/`` (the path Jenkins' GitHub plugin uses) checks size, signature,
event and payload, commits the delivery to the queue (one transaction, fsynced) and only
then answers 202; the chain runs later in worker threads, each in a child process.
Status codes:

=====================================  ======  ===========================
delivery                               status  body ``status``
=====================================  ======  ===========================
push accepted (committed to the queue)  202    ``accepted`` + ``run_id``
push filtered (branch, tag, deletion)   202    ``ignored`` + ``reason``
same X-GitHub-Delivery seen before      200    ``duplicate`` + ``run_id``
ping                                    200    ``pong`` + ``hook_id``
event this service does not handle      202    ``ignored``
missing or wrong X-Hub-Signature-256    401    ``unauthorized``
malformed body or headers               400    ``bad request`` (also: text not valid Unicode)
GET or another method on the path       405    (``Allow: POST``)
body over MLCHAIN_WEBHOOK_MAX_BODY      413    ``too large``
the queue could not commit              503    ``unavailable`` (GitHub may redeliver)
=====================================  ======  ===========================

A delivery is logged by its X-GitHub-Delivery id and outcome only, never with another
header or the body: the signature and the secret never reach a log (uvicorn's access
log prints the request line and status only).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mlchain.engine.jjb import load_chain
from mlchain.errors import NotFound, WebhookError
from mlchain.jobdefs import default_jobs_dir
from mlchain.state import StateStore
from mlchain.webhook import payload as pl
from mlchain.webhook.dashboard import STATIC, DashboardData, router
from mlchain.webhook.queue import (
    DeliveryWriter,
    Dispatcher,
    Executor,
    Recorded,
    SubprocessExecutor,
    WebhookQueue,
    queue_path,
)
from mlchain.webhook.signature import verify

if TYPE_CHECKING:
    from mlchain.config import Settings

log = logging.getLogger("mlchain.webhook")

WEBHOOK_PATH = "/github-webhook/"
_DELIVERY_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # GitHub's are UUIDs; printable ASCII is enough
INSECURE_WARNING = ("running WITHOUT a webhook secret (--insecure-no-secret): anyone who can reach this port "
                    "can start chain runs; set MLCHAIN_WEBHOOK_SECRET and drop the flag")


def webhook_secret(settings: Settings, insecure: bool) -> bytes | None:
    """The shared secret, or None in the explicit insecure mode; refuses to go on with neither."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else ""
    if secret:
        return secret.encode("utf-8")
    if not insecure:
        raise WebhookError(
            "refusing to start without a webhook secret: unsigned deliveries could start runs",
            hint="set MLCHAIN_WEBHOOK_SECRET to the secret of the GitHub hook "
                 "(or pass --insecure-no-secret on a host nobody else can reach)")
    return None


Answer = tuple[int, dict[str, Any]]


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing past ``limit`` bytes: by Content-Length first, then by counting
    the stream (a chunked body, or a Content-Length that lies, is never buffered past it)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ValueError("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_payload(raw: bytes, content_type: str | None) -> Any:
    """The delivery's JSON, or ValueError. Text that cannot be stored as UTF-8 (a lone
    surrogate, which JSON's \\uD800 escape can carry) is malformed too: GitHub never sends
    it, and answering 503 would have it redelivered forever."""
    try:
        data = pl.parse_body(raw, content_type)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"body is not JSON (or a form with a JSON payload): {exc}"[:300]) from exc
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("payload holds text that is not valid Unicode (a lone surrogate)") from exc
    except RecursionError as exc:  # parsed, yet too deep to write back
        raise ValueError("body is nested too deeply") from exc
    return data


@dataclass
class Intake:
    """What ``POST /github-webhook/`` does with one delivery, from its headers and raw body."""

    secret: bytes | None
    policy: pl.Policy
    writer: DeliveryWriter
    dispatcher: Dispatcher | None

    async def answer(self, headers: Mapping[str, str], raw: bytes) -> Answer:
        if self.secret is not None:
            sig = headers.get("x-hub-signature-256")
            if not sig:
                return 401, {"status": "unauthorized", "detail": "missing X-Hub-Signature-256"}
            if not verify(self.secret, raw, sig):
                return 401, {"status": "unauthorized", "detail": "X-Hub-Signature-256 does not match the body"}
        event = headers.get("x-github-event")
        if not event:
            return 400, {"status": "bad request", "detail": "missing X-GitHub-Event"}
        handler = pl.event_handler(event)
        if handler is None:  # not parsed: an event this service does not read
            return 202, {"status": "ignored", "reason": "event not handled", "event": event[:100]}
        try:
            data = parse_payload(raw, headers.get("content-type"))
        except ValueError as exc:
            return 400, {"status": "bad request", "detail": str(exc)}
        if handler == "pong":
            return 200, {"status": "pong", "hook_id": pl.hook_id(data)}
        delivery = headers.get("x-github-delivery") or ""
        if not _DELIVERY_ID.match(delivery):
            return 400, {"status": "bad request", "detail": "missing or malformed X-GitHub-Delivery"}
        decision = pl.decide_push(data, self.policy)
        if decision.action == "reject":
            return 400, {"status": "bad request", "detail": decision.reason}
        try:  # one transaction, fsynced before the answer
            rec = await self.writer.record_push(delivery, decision)
        except Exception:  # the delivery is not durable: say so, GitHub can redeliver
            log.exception("delivery %s: could not be committed to the queue", delivery)
            return 503, {"status": "unavailable", "detail": "the queue could not record the delivery; redeliver"}
        return self._recorded(delivery, rec)

    def _recorded(self, delivery: str, rec: Recorded) -> Answer:
        log.info("delivery %s push: %s %s (%s)", delivery, rec.outcome, rec.run_id or "", rec.reason)
        if rec.outcome == "duplicate":
            return 200, {"status": "duplicate", "run_id": rec.run_id, "delivery": delivery}
        if rec.outcome == "ignored":
            return 202, {"status": "ignored", "reason": rec.reason, "delivery": delivery}
        if self.dispatcher is not None:
            self.dispatcher.wake()
        return 202, {"status": "accepted", "run_id": rec.run_id, "delivery": delivery, "reason": rec.reason}


def create_app(settings: Settings, *, insecure: bool = False, workers: int = 2,
               executor: Executor | None = None, chain_command: Sequence[str] | None = None) -> FastAPI:
    """The service. ``workers`` chain runs at once (0: accept and queue only, run nothing).

    ``executor`` replaces the "run the chain" step (tests use a fake); by default the chain
    runs as ``chain_command`` (default ``python -m mlchain.cli``) ``run``/``resume`` in a child.
    """
    secret = webhook_secret(settings, insecure)
    settings.ensure_dirs()
    wq = WebhookQueue(queue_path(settings.home_abs))
    store = StateStore(settings.state_db)
    logs_dir = settings.home_abs / "webhook-logs"
    limit = settings.webhook_max_body
    if executor is None:
        executor = SubprocessExecutor(home=settings.home_abs, logs_dir=logs_dir)
        if chain_command:
            executor.command = tuple(chain_command)

    def state_status(run_id: str) -> str | None:
        try:
            status: str = store.get_run(run_id).status
        except NotFound:
            return None
        return status

    dispatcher = Dispatcher(wq, executor, workers, state_status) if workers > 0 else None
    intake = Intake(secret, pl.Policy.from_settings(settings), DeliveryWriter(wq.path), dispatcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if secret is None:
            log.warning(INSECURE_WARNING)
        if dispatcher is not None:
            dispatcher.start()
            log.info("mlchain serve: %d worker(s); queue %s", workers, wq.path)
        else:
            log.info("mlchain serve: 0 workers: deliveries are queued, no chain runs; queue %s", wq.path)
        try:
            yield
        finally:
            if dispatcher is not None:
                await asyncio.to_thread(dispatcher.stop)
            intake.writer.close()

    app = FastAPI(title="mlchain", lifespan=lifespan, docs_url=None, redoc_url=None)
    # The chain the runs run (`mlchain run` in a child reads the same jobs/): its jobs are the boxes.
    stages = load_chain(default_jobs_dir()).stages()
    app.state.dashboard = DashboardData(store, wq, logs_dir, stages)
    app.state.queue = wq
    app.state.dispatcher = dispatcher

    # Both spellings of the path: GitHub does not follow the redirect a missing slash would get.
    @app.post(WEBHOOK_PATH)
    @app.post(WEBHOOK_PATH.rstrip("/"), include_in_schema=False)
    async def github_webhook(request: Request) -> JSONResponse:
        try:
            raw = await read_body(request, limit)
        except BodyTooLarge:
            code, body = 413, {"status": "too large", "detail": f"body over {limit} bytes (MLCHAIN_WEBHOOK_MAX_BODY)"}
        except ValueError as exc:
            code, body = 400, {"status": "bad request", "detail": str(exc)}
        else:
            code, body = await intake.answer(request.headers, raw)
        return JSONResponse(body, status_code=code)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "workers": workers, "signed": secret is not None,
                "running": dispatcher.busy if dispatcher else 0}

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def log_config() -> dict[str, Any]:
    """uvicorn's own logging config (access log: request line and status, never headers),
    with mlchain's logger on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["mlchain"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return cfg


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 2,
          insecure: bool = False, chain_command: Sequence[str] | None = None) -> None:
    """Run the service until interrupted (SIGINT/SIGTERM stop it gracefully: running chains
    are stopped and resumed on the next start)."""
    import uvicorn

    if workers < 0:
        raise WebhookError(f"--workers must be 0 or more, not {workers}")
    app = create_app(settings, insecure=insecure, workers=workers, chain_command=chain_command)
    uvicorn.run(app, host=host, port=port, log_config=log_config(), access_log=True, server_header=False)
