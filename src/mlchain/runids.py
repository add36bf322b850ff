"""Run ids: one format for the engine's runs, the webhook's and `mlchain train`'s."""

from __future__ import annotations

import time
import uuid


def new_run_id(prefix: str = "", now: float | None = None) -> str:
    """``PREFIX`` + UTC time + random: sortable by start, unique without coordination, and
    safe as a folder name and a Docker label (letters, digits, '-')."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{prefix}{stamp}-{uuid.uuid4().hex[:8]}"
