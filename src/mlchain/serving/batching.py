"""Adaptive micro-batching: concurrent requests grouped into one ``predict`` call.

Each request puts a :class:`Job` on a queue and awaits its future. One worker takes whatever is
queued, and, only when the last batch held more than one request (there is concurrency to wait
for), waits up to ``max_wait_s`` for as many requests as that batch held; one client alone never
waits. A batch holds at most ``max_rows`` rows (a larger request is a batch of its own). The batch is predicted in one worker thread (:class:`BatchPredictor`): it reads the
serving model once, so a swap falls between batches; inputs that can be concatenated (same
columns and types, or the same row shape) go to the model as one call, and a failing call is
retried request by request, so that one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlchain.serving import protocol
from mlchain.serving.protocol import BadInput, Request

if TYPE_CHECKING:
    import pandas

    from mlchain.serving.model import LoadedModel, ModelHolder
    from mlchain.serving.observer_api import Observer
    from mlchain.serving.rows import JsonRows

log = logging.getLogger("mlchain.serving")


@dataclass
class Job:
    request: Request
    future: asyncio.Future[Outcome] = field(repr=False)

    @property
    def rows(self) -> int:
        return self.request.rows


@dataclass(frozen=True)
class Outcome:
    """One request's answer: its predictions and ids, or an error and its HTTP status."""

    predictions: Any = None
    ids: list[str | None] | None = None
    version: str | None = None
    error: str | None = None
    status: int = 200


@dataclass
class BatchStats:
    """What the worker hands the metrics after each predict call."""

    rows: int
    requests: int
    seconds: float


def wait_target(last_batch_requests: int, max_rows: int) -> int:
    """How many requests a batch waits for: as many as the last one held (0: do not wait)."""
    return 0 if last_batch_requests <= 1 else min(last_batch_requests, max_rows)


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Job]], list[Outcome]], *, max_rows: int, max_wait_s: float) -> None:
        self.run_batch, self.max_rows, self.max_wait_s = run_batch, max_rows, max_wait_s
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlchain-predict")
        self._worker: asyncio.Task[None] | None = None
        self._last_requests = 0
        self._carried: Job | None = None  # taken from the queue, too many rows for the last batch

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="mlchain-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker and its thread."""
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def submit(self, request: Request) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(request, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._carried if self._carried is not None else await self._queue.get()
            self._carried = None
            if first is None:
                return
            batch, rows, stopping = [first], first.rows, False
            target = wait_target(self._last_requests, self.max_rows)
            deadline = loop.time() + self.max_wait_s
            while rows < self.max_rows:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if len(batch) >= target or remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                else:
                    job = self._queue.get_nowait()
                if job is None:
                    stopping = True
                    break
                if rows + job.rows > self.max_rows:  # it opens the next batch
                    self._carried = job
                    break
                batch.append(job)
                rows += job.rows
            self._last_requests = len(batch)
            try:
                outcomes = await loop.run_in_executor(self._executor, self.run_batch, batch)
            except Exception as exc:  # a defect in the predictor itself: every request of the batch learns it
                log.exception("the batch predictor failed")
                outcomes = [Outcome(error=f"the server failed to predict: {exc}", status=500)] * len(batch)
            for job, outcome in zip(batch, outcomes, strict=True):
                if not job.future.done():  # the client may have gone
                    job.future.set_result(outcome)
            if stopping:  # (a carried job and the stop are never taken in one batch)
                return


# Exceptions a model raises on input it cannot take (sklearn's and numpy's ValueError, a
# missing column's KeyError, MLflow's schema enforcement): the request's fault, answered 400.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, IndexError)


class BatchPredictor:
    """Runs in the batcher's thread: one batch of jobs -> one outcome per job."""

    def __init__(self, holder: ModelHolder, observer: Observer,
                 on_batch: Callable[[BatchStats], None] = lambda stats: None,
                 on_error: Callable[[str], None] = lambda kind: None) -> None:
        self.holder, self.observer, self.on_batch, self.on_error = holder, observer, on_batch, on_error

    def __call__(self, jobs: list[Job]) -> list[Outcome]:
        model = self.holder.current  # read once: the whole batch runs on one version
        if model is None:
            return [Outcome(error="no model is loaded yet", status=503)] * len(jobs)
        outcomes: list[Outcome | None] = [None] * len(jobs)
        groups: dict[Any, list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            group = job.request.group
            groups[group if group is not None else ("alone", index)].append(index)
        for indexes in groups.values():
            members = [jobs[i] for i in indexes]
            for i, outcome in zip(indexes, self._predict_group(model, members), strict=True):
                outcomes[i] = outcome
        return [o if o is not None else Outcome(error="not predicted", status=500) for o in outcomes]

    def _predict_group(self, model: LoadedModel, jobs: Sequence[Job]) -> list[Outcome]:
        """One predict call for requests of one group; when it fails, each request alone, so
        that the one at fault gets its own error and the others their predictions."""
        requests = [job.request for job in jobs]
        total = sum(r.rows for r in requests)
        try:
            payload = protocol.merge(requests)
            data = protocol.model_input(requests[0].fmt, payload, model.schema)
            problem = protocol.input_problem(data, model.spec)
            if problem is not None:
                raise BadInput(problem)
            if len(jobs) > 1 and protocol.rows_of(data) != total:
                raise BadInput("the merged rows do not add up")  # never shown: each is predicted alone
            started = time.perf_counter()
            predictions = model.predict(protocol.positional(data, model.spec), requests[0].params)
        except Exception as exc:  # noqa: BLE001 - classified below: the input's fault (400) or the model's (500)
            if len(jobs) > 1:
                return [self._predict_group(model, [job])[0] for job in jobs]
            return [self._failure(exc)]
        self.on_batch(BatchStats(rows=total, requests=len(jobs), seconds=time.perf_counter() - started))
        values = protocol.jsonable(predictions)
        if not (isinstance(values, list) and len(values) == total):
            if len(jobs) > 1:  # not one prediction per row: the rows cannot be told apart
                return [self._predict_group(model, [job])[0] for job in jobs]
            ids = self._record(model, protocol.observed_rows(requests[0].fmt, payload, data), [values] * total)
            return [Outcome(predictions=values, ids=ids, version=model.version)]
        ids = self._record(model, protocol.observed_rows(requests[0].fmt, payload, data), values)
        out, start = [], 0
        for job in jobs:
            end = start + job.rows
            out.append(Outcome(predictions=values[start:end], ids=ids[start:end], version=model.version))
            start = end
        return out

    def _record(self, model: LoadedModel, inputs: JsonRows | pandas.DataFrame, values: list[Any]) -> list[str | None]:
        try:
            ids = self.observer.record_predictions(model.version, inputs, values)
            if len(ids) == len(values):
                return list(ids)
            log.error("the observer gave %d ids for %d rows", len(ids), len(values))
        except Exception:  # the answer still goes out; what watches it missed this batch
            log.exception("the observer could not record a batch")
        self.on_error("observer")
        return [None] * len(values)

    def _failure(self, exc: BaseException) -> Outcome:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, BadInput):
            self.on_error("bad_input")
            return Outcome(error=exc.message, status=exc.status)
        reason = _reason(exc)
        if isinstance(exc, INPUT_ERRORS) or (isinstance(exc, MlflowException) and exc.get_http_status_code() < 500):
            self.on_error("bad_input")
            return Outcome(error=f"the model cannot take this input: {reason}", status=400)
        log.error("the model failed: %s", reason)
        self.on_error("model")
        return Outcome(error=f"the model failed: {reason}", status=500)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).strip().splitlines()[:3])[:500]
