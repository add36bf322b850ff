"""Drift detectors: ADWIN (``river``) on each watched stream of numbers.

What is watched of an input row (:func:`watched_values`, pure): each numeric column, when
there are at most ``summary_above`` of them (tabular data); above that the row is an image
or something like it (digits have 64 pixel columns, MNIST 784), where one detector per
pixel would be slow and each pixel alone says little, so three summary statistics of the
row are watched instead: ``pixel mean``, ``pixel std`` and ``pixel zero fraction``. The
error stream from feedback (1 when the prediction was wrong, else 0) is watched as
``error rate``.

A detection records the stream, the sample index (1-based, counted per stream since the
detector was made, across restarts) and the means of the two windows ADWIN split: the
older part it dropped and the newer part it kept.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from river.drift import ADWIN

from mlchain.serving.rows import Rows, read_rows

if TYPE_CHECKING:
    import pandas

ERROR_STREAM = "error rate"
SUMMARY_STREAMS = ("pixel mean", "pixel std", "pixel zero fraction")


@dataclass(frozen=True)
class Detection:
    stream: str          # the feature (a column name, a pixel statistic, or "error rate")
    sample: int          # the sample index of this stream at which ADWIN detected the change
    before: float        # mean of the older window ADWIN dropped
    after: float         # mean of the newer window it kept
    at: float            # wall-clock time

    def describe(self) -> str:
        """'drift in pixel mean at sample 4,120: 0.31 -> 0.52'"""
        return f"drift in {self.stream} at sample {self.sample:,}: {self.before:.2f} -> {self.after:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "sample": self.sample, "before": self.before, "after": self.after,
                "at": self.at, "description": self.describe()}


def summarised(n_numeric: int, summary_above: int) -> bool:
    """Pure: whether rows with this many numeric columns are watched through summary statistics."""
    return n_numeric > summary_above


def watched_values(frame: pandas.DataFrame, summary_above: int) -> list[dict[str, float]]:
    """Pure: for each row of ``frame``, the value of each watched stream (see the module's doc)."""
    return watched_rows(read_rows(frame), summary_above)


def watched_rows(rows: Rows, summary_above: int) -> list[dict[str, float]]:
    """Pure: :func:`watched_values` of rows already read, in one numpy pass over the batch."""
    if len(rows) == 0:
        return []
    names, values = rows.numeric()
    if not names:
        return [{} for _ in range(len(rows))]
    if not summarised(len(names), summary_above):
        return [dict(zip(names, row, strict=True)) for row in values.tolist()]
    n = values.shape[1]
    mean = values.sum(axis=1) / n  # numpy's mean, std and zero fraction, without their per-call overhead
    centered = values - mean[:, None]
    std = np.sqrt((centered * centered).sum(axis=1) / n)
    zeros = np.count_nonzero(values == 0.0, axis=1) / n
    return [dict(zip(SUMMARY_STREAMS, row, strict=True)) for row in zip(mean.tolist(), std.tolist(), zeros.tolist())]


@dataclass
class Stream:
    """One ADWIN and how many samples it has seen."""

    detector: ADWIN
    samples: int = 0


@dataclass
class Detectors:
    """An ADWIN per stream, made on first sight of the stream. Not thread-safe: the observer
    holds its lock around it. Its whole state pickles (:meth:`dumps`), so detection goes on
    after a restart where it stopped."""

    delta: float = 0.002
    streams: dict[str, Stream] = field(default_factory=dict)

    def update(self, values: Mapping[str, float], now: float | None = None) -> list[Detection]:
        found = []
        for name, value in values.items():
            detection = self.update_one(name, value, now)
            if detection is not None:
                found.append(detection)
        return found

    def update_one(self, name: str, value: float, now: float | None = None) -> Detection | None:
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(ADWIN(delta=self.delta))
        adwin = stream.detector
        width_before, mean_before = adwin.width, adwin.estimation
        adwin.update(value)
        stream.samples += 1
        if not adwin.drift_detected:
            return None
        kept, mean_kept = adwin.width, adwin.estimation
        dropped = width_before + 1 - kept
        total = mean_before * width_before + value
        mean_dropped = (total - mean_kept * kept) / dropped if dropped > 0 else mean_before
        return Detection(name, stream.samples, mean_dropped, mean_kept, time.time() if now is None else now)

    def feed(self, rows: Iterable[Mapping[str, float]], now: float | None = None) -> list[Detection]:
        found = []
        for values in rows:
            found.extend(self.update(values, now))
        return found

    def estimations(self) -> dict[str, float]:
        return {name: float(s.detector.estimation) for name, s in self.streams.items()}

    def samples(self) -> dict[str, int]:
        return {name: s.samples for name, s in self.streams.items()}

    def dumps(self) -> bytes:
        return pickle.dumps({"delta": self.delta, "streams": self.streams}, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, blob: bytes | None, delta: float) -> Detectors:
        """The detectors saved by :meth:`dumps` (only ever read from the observer's own store,
        which it alone writes); new ones when there is nothing saved or the delta changed."""
        if not blob:
            return cls(delta)
        state = pickle.loads(blob)  # written by dumps, into the store only this observer writes
        if not isinstance(state, dict) or state.get("delta") != delta:
            return cls(delta)
        return cls(delta, dict(state["streams"]))
