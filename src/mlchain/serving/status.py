"""`mlchain drift status`: the feedback store's record, read only (no detector is made)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlchain.config import Settings


def drift_report(settings: Settings, limit: int) -> dict[str, Any]:
    from mlchain.notify.build import redact_uri
    from mlchain.serving.feedback import FeedbackStore

    store = FeedbackStore(settings.resolved_serving_db_url, max_rows=settings.feedback_max_rows,
                          max_days=settings.feedback_max_days)
    try:
        detections = store.detections()[-limit:]
        requests = store.requests()[-limit:]
        rows = store.count()
    finally:
        store.close()
    lines = [f"feedback store {redact_uri(settings.resolved_serving_db_url)}: {rows:,} predictions kept",
             f"detections ({len(detections)} shown):"]
    lines += [f"  {_when(d['at'])}  drift in {d['stream']} at sample {d['sample']:,}: "
              f"{d['before']:.2f} -> {d['after']:.2f} (model version {d['model_version'] or '?'})"
              for d in detections] or ["  none"]
    lines.append(f"retraining requests ({len(requests)} shown):")
    lines += [f"  {_when(r['at'])}  {r['status']:<7} {r['reason']}"
              + (f"; run {r['run_ref']}" if r["run_ref"] else "")
              + (f"; dataset {r['dataset']}" if r["dataset"] else "")
              + (f"; error: {r['error']}" if r["error"] else "") for r in requests] or ["  none"]
    return {"predictions": rows, "detections": detections, "requests": requests, "lines": lines}


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
