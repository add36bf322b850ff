"""The feedback store on PostgreSQL (a team's `serving_db_url`): a throw-away cluster (Debian's
PostgreSQL, initdb/pg_ctl as the `postgres` user when run as root), and the same store and
observer code as on SQLite: predictions, labels, retention, the detectors' state across a
restart, one retraining request per cooldown."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import free_port
from strictness import require

from mlchain.serving.feedback import FeedbackStore

PASSWORD = "feedback-pw"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    bindir = found[-1].parent if found else (Path(p).parent if (p := shutil.which("pg_ctl")) else None)
    require(None if bindir else "PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require("psycopg2 is not installed (pip install psycopg2-binary)")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="mlchain-feedback-pg-"))  # the cluster runs as postgres: not under tmp_path
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = free_port()

    def run(tool: str, *args: str) -> None:
        done = subprocess.run([*as_postgres, str(bindir / tool), *args], capture_output=True, text=True,
                              check=False, timeout=180)
        assert done.returncode == 0, f"{tool}: {done.stderr or done.stdout}"

    def sql(statement: str) -> None:
        run("psql", "-v", "ON_ERROR_STOP=1", "-h", str(root / "sock"), "-p", str(port), "-U", "postgres",
            "-d", "postgres", "-c", statement)

    subprocess.run([*as_postgres, "mkdir", "-p", str(root / "sock")], check=True)
    run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256")
    run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "120",
        "-o", f"-p {port} -k {root / 'sock'} -c listen_addresses=127.0.0.1", "start")
    try:
        sql(f"CREATE ROLE serving LOGIN PASSWORD '{PASSWORD}'")
        sql("CREATE DATABASE feedback OWNER serving")
        yield f"postgresql+psycopg2://serving:{PASSWORD}@127.0.0.1:{port}/feedback"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_the_store_and_the_observer_work_the_same_on_postgresql(postgres_url: str, make_settings: Any) -> None:
    from mlchain.serving.observe import DriftObserver

    store = FeedbackStore(postgres_url, max_rows=100, max_days=30.0, prune_every=50)
    store.add_predictions([{"id": f"{i:032x}", "model_version": "1", "inputs": {"x": float(i)}, "prediction": i % 2}
                           for i in range(150)], now=1000.0)  # a pass after 50 rows or more: the newest 100 stay
    store.add_predictions([{"id": "f" * 32, "model_version": "1", "inputs": {"x": -1.0}, "prediction": 1}],
                          now=2000.0)
    assert store.count() == 101 and store.prune(2000.0) == 1 and store.count() == 100
    assert store.predictions_of(["f" * 32, f"{0:032x}", f"{50:032x}", f"{51:032x}"]) == {
        "f" * 32: (1, "1"), f"{51:032x}": (1, "1")}
    store.add_labels({"f" * 32: (1, True)})
    assert [(r.id, r.inputs, r.label) for r in store.labeled_since(0.0)] == [("f" * 32, {"x": -1.0}, 1)]
    first, _, _ = store.claim_request(5000.0, 3600.0, 2, reason="one")
    second, why, previous = store.claim_request(5001.0, 3600.0, 2, reason="two")
    assert first is not None and second is None and "cooling down" in str(why) and previous == 5000.0
    store.close()

    settings = make_settings(serving_db_url=postgres_url, retrain_via="off")
    rng = np.random.default_rng(5)
    observer = DriftObserver(settings, "tabular")
    observer.record_predictions("1", pd.DataFrame({"x": rng.normal(0, 1, 700)}), [0] * 700)
    observer.close()
    again = DriftObserver(settings, "tabular")
    assert again.detectors.samples() == {"x": 700}  # the detectors' state, kept in PostgreSQL
    again.record_predictions("1", pd.DataFrame({"x": rng.normal(4, 1, 300)}), [0] * 300)
    assert [d["stream"] for d in again.detections()] == ["x"] and again.detections()[0]["sample"] > 700
    again.close()
