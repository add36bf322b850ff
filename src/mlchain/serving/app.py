"""The model server's HTTP routes (Starlette, under uvicorn).

=======================  ==========================================================================
route                    answer
=======================  ==========================================================================
``POST /invocations``    MLflow's scoring protocol -> ``{"predictions": [...], "ids": [...]}`` and
                         the header ``mlchain-model-version``;
                         400 malformed input (with what was wrong), 413 too large, 415 content
                         type, 503 no model loaded yet
``POST /feedback``       ``{"labels": {"<id>": <label>}}`` -> ``{"accepted": n}``
``GET /ping``            200 when a model serves, else 503 (``/health`` too)
``GET /version``         the serving version, its run, repository and commit; the last load failure
``GET /metrics``         Prometheus text format (see :mod:`mlchain.serving.metrics`)
=======================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlchain import __version__
from mlchain.serving.batching import BatchPredictor, MicroBatcher
from mlchain.serving.metrics import ServeMetrics
from mlchain.serving.model import AliasWatcher, ModelHolder
from mlchain.serving.observer_api import Observer
from mlchain.serving.protocol import BadInput, read_request

log = logging.getLogger("mlchain.serving")

MAX_FEEDBACK_LABELS = 100_000
JSON = "application/json"
VERSION_HEADER = "mlchain-model-version"  # which version answered: a swap is visible request by request


@dataclass(frozen=True)
class ServeOptions:
    max_batch_rows: int = 256
    max_wait_s: float = 0.002
    max_body: int = 32 * 1024 * 1024


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(), status_code=status,
                    media_type=JSON)


def create_app(holder: ModelHolder, observer: Observer, options: ServeOptions,
               watcher: AliasWatcher | None = None) -> Starlette:
    metrics = ServeMetrics(observer)
    holder.on_swap.append(metrics.swapped)
    holder.on_failure.append(metrics.load_failure)
    holder.on_recover.append(metrics.recovered)
    if holder.current is not None:
        metrics.swapped(holder.current)
    predictor = BatchPredictor(holder, observer, on_batch=metrics.batch, on_error=metrics.error)
    batcher = MicroBatcher(predictor, max_rows=options.max_batch_rows, max_wait_s=options.max_wait_s)
    count = metrics.requests

    def answer(route: str, payload: Any, status: int = 200) -> Response:
        count.labels(route, str(status)).inc()
        return _json(payload, status)

    def refuse(route: str, error: BadInput) -> Response:
        metrics.error("bad_input")
        code = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(error.status, "BAD_REQUEST")
        return answer(route, {"error_code": code, "message": error.message}, error.status)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > options.max_body:
            raise BadInput(f"the body is {declared} bytes, over the limit of {options.max_body} "
                           "(MLCHAIN_SERVE_MAX_BODY): send fewer rows per request", status=413)
        if declared is not None:
            return await request.body()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > options.max_body:
                raise BadInput(f"the body is over the limit of {options.max_body} bytes "
                               "(MLCHAIN_SERVE_MAX_BODY): send fewer rows per request", status=413)
        return bytes(body)

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        if holder.current is None:
            metrics.error("unavailable")
            return answer("/invocations", {"error_code": "UNAVAILABLE",
                                           "message": f"no model loaded yet: waiting for {holder.target.uri}"}, 503)
        try:
            parsed = read_request(await read_body(request), request.headers.get("content-type"))
        except BadInput as exc:
            return refuse("/invocations", exc)
        outcome = await batcher.submit(parsed)
        if outcome.error is not None:
            code = "BAD_REQUEST" if outcome.status < 500 else "INTERNAL_ERROR"
            response = answer("/invocations", {"error_code": code, "message": outcome.error}, outcome.status)
        else:
            response = answer("/invocations", {"predictions": outcome.predictions, "ids": outcome.ids})
            response.headers[VERSION_HEADER] = str(outcome.version)
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def feedback(request: Request) -> Response:
        try:
            labels = _feedback_labels(await read_body(request))
        except BadInput as exc:
            return refuse("/feedback", exc)
        accepted = await asyncio.to_thread(observer.record_feedback, labels)
        return answer("/feedback", {"accepted": int(accepted)})

    async def ping(request: Request) -> Response:
        status = 200 if holder.current is not None else 503
        count.labels("/ping", str(status)).inc()
        return Response("\n", status_code=status, media_type=JSON)

    async def version(request: Request) -> Response:
        current = holder.current
        return answer("/version", {
            "target": holder.target.uri,
            **(current.describe() if current is not None else {"version": None}),
            "load_error": holder.last_failure.describe() if holder.last_failure else None,
            "mlchain_version": __version__,
        })

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await batcher.start()
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                await asyncio.to_thread(watcher.stop)
            await batcher.stop()
            observer.close()

    routes = [
        Route("/invocations", invocations, methods=["POST"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return app


def _feedback_labels(body: bytes) -> Mapping[str, Any]:
    """``{"labels": {id: label}}`` -> the labels, or BadInput saying what was wrong."""
    example = '{"labels": {"<id from a prediction>": 3}}'
    try:
        decoded = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadInput(f"the body is not valid JSON ({exc}): send {example}") from None
    if not isinstance(decoded, dict) or set(decoded) != {"labels"} or not isinstance(decoded["labels"], dict):
        raise BadInput(f"the body must be exactly {{\"labels\": {{id: label, ...}}}}, e.g. {example}")
    labels = decoded["labels"]
    if not labels:
        raise BadInput("'labels' is empty: send at least one id and its true label")
    if len(labels) > MAX_FEEDBACK_LABELS:
        raise BadInput(f"'labels' has {len(labels)} entries, over the limit of {MAX_FEEDBACK_LABELS} "
                       "per request: send them in several requests")
    for key, value in labels.items():
        if isinstance(value, (dict, list)):
            raise BadInput(f"the label of {key!r} is a JSON {type(value).__name__}: send one value per id")
    return labels
