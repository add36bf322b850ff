"""tracking.open_stores on a fresh home: both MLflow stores are built (their tables created)
through public client calls."""

from __future__ import annotations

import sqlite3
from typing import Any

from mlchain import tracking


def test_open_stores_creates_the_tracking_and_registry_tables(make_settings: Any) -> None:
    settings = make_settings()
    tracking.open_stores(settings)
    db = settings.resolved_tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"experiments", "runs", "registered_models", "model_versions"} <= tables
