"""The serving endpoint's observer: it keeps what was predicted and the labels sent back (the
feedback store), watches the inputs and the error stream for drift (ADWIN), and on a
detection asks for a retraining run on a new dataset version.

The server (``mlchain model serve``) calls it through the ``Observer`` interface of
``serving/observer_api.py``: ``record_predictions``, ``record_feedback``, ``state``, ``close``.
It is thread-safe. Recording is off the request path: ``record_predictions`` mints the rows'
ids and hands the batch to one recorder thread, which stores whatever has queued up in one
transaction and feeds the detectors in order (what it keeps and watches of the rows is read once,
the cheapest way the rows allow: serving/rows.py); reads that must see every row handed over
(feedback, detections, requests, close) wait for it first. The detectors' state is saved in the store (every ``SAVE_EVERY_S`` while
predictions stream in, at once on a detection and on close), so a new observer on the same
store goes on detecting where the last one stopped.

A detection records a request when the cooldown and the daily cap allow one; the request
waits until ``retrain_min_feedback`` labeled rows predicted since the drift have come back
(a run on data without the new world would learn nothing new), then one worker thread, off
the request path, writes the dataset version (a checkout of the champion's commit plus the
feedback) and asks for the run.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any

from mlchain.serving import retrain
from mlchain.serving.drift import ERROR_STREAM, Detection, Detectors, watched_rows
from mlchain.serving.feedback import Encoded, FeedbackStore, plain, same_label
from mlchain.serving.rows import Rows, read_rows

if TYPE_CHECKING:
    import pandas

    from mlchain.config import Settings

log = logging.getLogger("mlchain.serving")

STATE_KEY = "detectors"
SAVE_EVERY_S = 1.0
RECORD_QUEUE = 1_000  # batches handed over and not yet stored; a full queue holds the predict thread back
MAX_MERGED = 256      # batches stored in one transaction at most
_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_]+")

# (settings, model name, model version) -> where that version was trained from
SourceOf = Callable[["Settings", str, str], retrain.Source]
# (settings, source, reason, dataset) -> what names the requested run
Requester = Callable[["Settings", retrain.Source, str, retrain.DatasetVersion], str]


def metric_suffix(stream: str) -> str:
    """Pure: a stream's name as a Prometheus metric name's tail ('pixel mean' -> 'pixel_mean')."""
    return _METRIC_CHARS.sub("_", stream).strip("_").lower() or "unnamed"


@dataclass(frozen=True)
class _Batch:
    """One predicted batch, handed over to the recorder thread."""

    model_version: str
    inputs: pandas.DataFrame | Rows  # read on the recorder thread
    predictions: list[Any]
    ids: list[str]
    at: float


class DriftObserver:
    def __init__(self, settings: Settings, model_name: str, *, store: FeedbackStore | None = None,
                 source_of: SourceOf = retrain.source_of, requester: Requester = retrain.request_run) -> None:
        self.settings = settings
        self.model_name = model_name
        self.store = store or FeedbackStore(settings.resolved_serving_db_url, max_rows=settings.feedback_max_rows,
                                            max_days=settings.feedback_max_days)
        self.detectors = Detectors.loads(self.store.load_state(STATE_KEY), settings.drift_delta)
        self._source_of = source_of
        self._requester = requester
        self._lock = threading.Lock()
        self._saved_at = time.monotonic()
        self._dirty = False
        self._version: str | None = None
        self._worker = ThreadPoolExecutor(1, "drift-retrain")
        self._pending: list[Future[None]] = []
        self._waiting = self.store.waiting_request()  # a request that waits for feedback after its drift
        self.counts = {"predictions": 0, "feedback_accepted": 0, "feedback_unknown": 0, "detections": 0,
                       "retrain_requests": 0, "retrain_refused": 0, "retrain_errors": 0, "record_errors": 0}
        self._handed: Queue[_Batch | None] = Queue(maxsize=RECORD_QUEUE)
        self._recorder = threading.Thread(target=self._record_loop, name="drift-record", daemon=True)
        self._recorder.start()

    # the Observer interface ------------------------------------------------------------
    def record_predictions(self, model_version: str, inputs: pandas.DataFrame | Rows,
                           predictions: Sequence[Any]) -> list[str]:
        """The rows' ids (a new one each); the rows are stored and watched by the recorder thread."""
        if len(predictions) != len(inputs):
            raise ValueError(f"{len(inputs)} input rows but {len(predictions)} predictions")
        ids = [uuid.uuid4().hex for _ in range(len(inputs))]
        # the rows' time, and a detection's among them: its rows count as after the drift
        self._handed.put(_Batch(model_version, inputs, list(predictions), ids, time.time()))
        return ids

    def flush(self) -> None:
        """Wait until every batch handed over so far is stored and watched."""
        self._handed.join()

    def record_feedback(self, labels: Mapping[str, Any]) -> int:
        """Store the true labels of known prediction ids and feed the error stream (1: the
        prediction was wrong); unknown ids are not accepted, only counted. Returns how many were."""
        self.flush()  # an id answered a moment ago is known
        known = self.store.predictions_of(str(k) for k in labels)
        judged = {i: (labels[i], same_label(known[i][0], labels[i])) for i in labels if i in known}
        self.store.add_labels(judged)
        versions = [known[i][1] for i in judged]
        with self._lock:
            self.counts["feedback_accepted"] += len(judged)
            self.counts["feedback_unknown"] += len(labels) - len(judged)
            found: list[Detection] = []
            for _, right in judged.values():
                detection = self.detectors.update_one(ERROR_STREAM, 0.0 if right else 1.0)
                if detection is not None:
                    found.append(detection)
            self._after_update(found, versions[-1] if versions else self._version)
            self._maybe_ask()
        return len(judged)

    def state(self) -> Mapping[str, float]:
        """Gauges for /metrics: counters, and each stream's samples and current window mean."""
        with self._lock:
            gauges = {f"mlchain_{name}_total": float(value) for name, value in self.counts.items()}
            for stream, mean in self.detectors.estimations().items():
                gauges[f"mlchain_drift_window_mean_{metric_suffix(stream)}"] = mean
            for stream, n in self.detectors.samples().items():
                gauges[f"mlchain_drift_samples_{metric_suffix(stream)}"] = float(n)
        return gauges

    def close(self) -> None:
        self._handed.put(None)  # after every batch handed over: stored before the recorder stops
        self._recorder.join()
        self.wait_idle()
        self._worker.shutdown(wait=True)
        with self._lock:
            self._save()
        self.store.close()

    # reading ----------------------------------------------------------------------------
    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait for the rows handed over, then the retraining requests under way (building a
        dataset, asking for a run)."""
        if self._recorder.is_alive():
            self.flush()
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result(timeout=timeout)

    def detections(self) -> list[dict[str, Any]]:
        if self._recorder.is_alive():
            self.flush()
        return self.store.detections()

    def requests(self) -> list[dict[str, Any]]:
        if self._recorder.is_alive():
            self.flush()
        return self.store.requests()

    # on the recorder thread -------------------------------------------------------------
    def _record_loop(self) -> None:
        stopping = False
        while not stopping:
            handed = [self._handed.get()]
            while len(handed) < MAX_MERGED and handed[-1] is not None:
                try:
                    handed.append(self._handed.get_nowait())
                except Empty:
                    break
            stopping = handed[-1] is None  # close() hands None over last
            batches = [b for b in handed if b is not None]
            try:
                if batches:
                    self._record(batches)
            except Exception:  # the answers went out; what watches them missed these rows
                with self._lock:
                    self.counts["record_errors"] += 1
                log.exception("could not record %d predicted batches", len(batches))
            finally:
                for _ in handed:
                    self._handed.task_done()

    def _record(self, batches: list[_Batch]) -> None:
        read = [read_rows(b.inputs) for b in batches]
        rows: list[Encoded] = []
        for b, inputs in zip(batches, read, strict=True):
            rows += [Encoded(i, b.model_version, text, json.dumps(plain(p), separators=(",", ":")), b.at)
                     for i, text, p in zip(b.ids, inputs.json_objects(), b.predictions, strict=True)]
        self.store.add_encoded(rows)  # one transaction for all of them
        watched = [watched_rows(inputs, self.settings.drift_summary_above) for inputs in read]
        with self._lock:
            for b, values in zip(batches, watched, strict=True):
                self._version = b.model_version
                self.counts["predictions"] += len(b.ids)
                found = self.detectors.feed(values, now=b.at)
                self._after_update(found, b.model_version)

    # inside the lock ----------------------------------------------------------------------
    def _after_update(self, found: list[Detection], model_version: str | None) -> None:
        self._dirty = True
        if found or time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self._save()
        for detection in found:
            self.counts["detections"] += 1
            log.warning("%s (model %s version %s)", detection.describe(), self.model_name, model_version)
            self.store.add_detection(detection.stream, detection.sample, detection.before, detection.after,
                                     detection.at, model_version)
        if found and model_version is not None and self.settings.retrain_via != "off":
            self._ask_retrain(found[0], model_version)

    def _save(self) -> None:
        if self._dirty:
            self.store.save_state(STATE_KEY, self.detectors.dumps())
            self._dirty = False
        self._saved_at = time.monotonic()

    def _ask_retrain(self, detection: Detection, model_version: str) -> None:
        """Record a retraining request, if the cooldown and the cap allow one. It is asked once
        ``retrain_min_feedback`` labeled rows predicted since the drift have come back: a run on
        a dataset with none of the new data would learn nothing new."""
        s = self.settings
        reason = detection.describe()
        request_id, why_not, previous = self.store.claim_request(
            detection.at, s.retrain_cooldown_s, s.retrain_max_per_day, model_version=model_version, reason=reason,
            via=s.retrain_via, status="waiting")
        if request_id is None:
            self.counts["retrain_refused"] += 1
            log.info("no retraining for %s: %s", reason, why_not)
            return
        self.counts["retrain_requests"] += 1
        facts = {**detection.to_dict(), "feedback_since": previous_or_zero(previous)}
        self.store.update_request(request_id, detection=json.dumps(facts))
        self._waiting = {"id": request_id, "at": detection.at, "model_version": model_version, "reason": reason,
                         "detection": json.dumps(facts)}
        self._maybe_ask()

    def _maybe_ask(self) -> None:
        waiting = self._waiting
        if waiting is None:
            return
        if self.store.labeled_count_since(float(waiting["at"])) < self.settings.retrain_min_feedback:
            return
        self._waiting = None
        self.store.update_request(int(waiting["id"]), status="asked")
        facts = json.loads(waiting["detection"] or "{}")
        self._pending.append(self._worker.submit(self._retrain, int(waiting["id"]), str(waiting["reason"]),
                                                 str(waiting["model_version"]), facts))

    # on the worker thread ---------------------------------------------------------------
    def _retrain(self, request_id: int, reason: str, model_version: str, facts: dict[str, Any]) -> None:
        try:
            source = self._source_of(self.settings, self.model_name, model_version)
            self.store.update_request(request_id, repo_url=source.repo_url, commit_sha=source.commit)
            feedback = self.store.labeled_since(float(facts.get("feedback_since") or 0.0))
            dataset = retrain.new_dataset(self.settings, source, feedback, {"reason": reason, "detection": facts})
            self.store.update_request(request_id, dataset=str(dataset.path))
            ref = self._requester(self.settings, source, reason, dataset)
            self.store.update_request(request_id, run_ref=ref)
            log.warning("retraining %s at %s on dataset %s (%d feedback rows): %s", source.repo_name,
                        source.commit[:12], dataset.version, dataset.feedback_rows, ref)
        except Exception as exc:  # the request is kept with its error; the server goes on serving
            with self._lock:
                self.counts["retrain_errors"] += 1
            log.exception("retraining for %s could not be asked", reason)
            self.store.update_request(request_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])


def previous_or_zero(previous: float | None) -> float:
    """The feedback a dataset takes: what came since the previous request (all of it, at first)."""
    return previous or 0.0
