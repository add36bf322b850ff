"""Prometheus metrics of the model server (``GET /metrics``), in a registry of its own per app.

=========================================  =========  ==========================================
name                                       type       what
=========================================  =========  ==========================================
mlchain_serve_requests_total               counter    requests by route and HTTP status
mlchain_serve_errors_total                 counter    errors by kind: bad_input, model, observer,
                                                      unavailable, load
mlchain_serve_request_seconds              histogram  latency of /invocations, receipt to answer
mlchain_serve_batch_rows                   histogram  rows per predict call
mlchain_serve_batch_requests               histogram  requests grouped into one predict call
mlchain_serve_predict_seconds              histogram  time of one predict call
mlchain_serve_model_version                gauge      the serving version (number)
mlchain_serve_model_info                   gauge      1, labelled name, version, run_id
mlchain_serve_model_load_failures_total    counter    versions that failed to load
mlchain_serve_model_load_failed            gauge      1 while the alias names a version that
                                                      failed to load (the old one serving)
(the observer's gauges)                    gauge      Observer.state(), under the names it gives
=========================================  =========  ==========================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from mlchain.serving.batching import BatchStats
    from mlchain.serving.model import LoadedModel, LoadFailure
    from mlchain.serving.observer_api import Observer

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str) -> str:
    """A gauge name as Prometheus allows it: other characters become '_', never a leading digit."""
    clean = _INVALID.sub("_", name) or "_"
    return f"_{clean}" if clean[0].isdigit() else clean


class ObserverCollector:
    """The observer's state() as gauges, read at each scrape."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        try:
            state = dict(self.observer.state())
        except Exception:  # noqa: BLE001 - a scrape never fails for the observer's sake
            state = {}
        for name, value in sorted(state.items()):
            family = GaugeMetricFamily(metric_name(name), f"observer state: {name}")
            family.add_metric([], float(value))
            yield family

    def describe(self) -> list[Metric]:
        return []  # not known in advance: collected at each scrape


class ServeMetrics:
    def __init__(self, observer: Observer) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mlchain_serve_requests", "requests by route and status",
                                ["route", "status"], registry=r)
        self.errors = Counter("mlchain_serve_errors", "errors by kind", ["kind"], registry=r)
        self.latency = Histogram("mlchain_serve_request_seconds", "latency of /invocations",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("mlchain_serve_batch_rows", "rows per predict call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("mlchain_serve_batch_requests", "requests per predict call",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.predict_seconds = Histogram("mlchain_serve_predict_seconds", "time of one predict call",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.model_version = Gauge("mlchain_serve_model_version", "the serving model version", registry=r)
        self.model_info = Gauge("mlchain_serve_model_info", "the serving model", ["name", "version", "run_id"],
                                registry=r)
        self.load_failures = Counter("mlchain_serve_model_load_failures", "versions that failed to load",
                                     registry=r)
        self.load_failed = Gauge("mlchain_serve_model_load_failed",
                                 "1 while the wanted version failed to load", registry=r)
        r.register(ObserverCollector(observer))

    def batch(self, stats: BatchStats) -> None:
        self.batch_rows.observe(stats.rows)
        self.batch_requests.observe(stats.requests)
        self.predict_seconds.observe(stats.seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def swapped(self, model: LoadedModel) -> None:
        self.model_info.clear()
        self.model_info.labels(model.name, model.version, model.run_id or "").set(1)
        try:
            self.model_version.set(float(model.version))
        except ValueError:
            self.model_version.set(float("nan"))
        self.load_failed.set(0)

    def load_failure(self, failure: LoadFailure) -> None:
        self.load_failures.inc()
        self.errors.labels("load").inc()
        self.load_failed.set(1)

    def recovered(self) -> None:
        self.load_failed.set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
