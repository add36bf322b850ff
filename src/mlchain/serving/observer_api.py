"""What the server tells whoever watches its traffic (feedback storage, drift detectors).

The server calls an :class:`Observer` once per predicted batch and once per feedback request;
the observer gives each predicted row an id that the response carries, takes true labels for
those ids, and reports gauges that ``/metrics`` exports. :class:`NullObserver` keeps nothing:
the server's default when nothing watches.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas

    from mlchain.serving.rows import Rows


class Observer(Protocol):
    def record_predictions(self, model_version: str, inputs: pandas.DataFrame | Rows,
                           predictions: Sequence[Any]) -> list[str]:
        """Keep a batch's inputs (a frame, or rows as a request's JSON held them: serving/rows.py)
        and predictions; one id per row, in order."""
        ...

    def record_feedback(self, labels: Mapping[str, Any]) -> int:
        """Take true labels (prediction id -> label); the number accepted."""
        ...

    def state(self) -> Mapping[str, float]:
        """Gauges for /metrics: name -> value (names as Prometheus allows: [a-zA-Z_:][a-zA-Z0-9_:]*)."""
        ...

    def close(self) -> None:
        ...


class NullObserver:
    """Keeps nothing: ids are fresh and unknown to feedback, which accepts none."""

    def record_predictions(self, model_version: str, inputs: pandas.DataFrame | Rows,
                           predictions: Sequence[Any]) -> list[str]:
        return [uuid.uuid4().hex for _ in range(len(predictions))]

    def record_feedback(self, labels: Mapping[str, Any]) -> int:
        return 0

    def state(self) -> Mapping[str, float]:
        return {}

    def close(self) -> None:
        return None
