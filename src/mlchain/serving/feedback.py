"""The feedback store: every prediction row served (its id, inputs, prediction, model version,
time), the true labels sent back for them, the drift detectors' state, the detections and the
retraining requests.

One SQLAlchemy URL holds it: by default SQLite under MLCHAIN_HOME (``serving.db``, opened
through :mod:`mlchain.sqlitefile`: WAL, busy timeout), for a team any URL SQLAlchemy takes
(PostgreSQL). Retention: at most ``max_rows`` predictions and none older than ``max_days``,
enforced on insert every ``prune_every`` rows (and when the store opens), oldest first.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from mlchain import sqlitefile
from mlchain.errors import ConfigError

PRUNE_EVERY = 1000
DELETE_BATCH = 5000

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),         # JSON object: column -> value
    sa.Column("prediction", sa.Text, nullable=False),     # JSON
    sa.Column("label", sa.Text),                          # JSON, once feedback came
    sa.Column("correct", sa.Integer),                     # 1 / 0, once feedback came
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("labeled_at", sa.Float, index=True),
)
detector_state = sa.Table(
    "detector_state", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
detections = sa.Table(
    "detections", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream", sa.String(200), nullable=False),
    sa.Column("sample", sa.Integer, nullable=False),
    sa.Column("before", sa.Float, nullable=False),
    sa.Column("after", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(64)),
    sa.Column("at", sa.Float, nullable=False),
)
retrain_requests = sa.Table(
    "retrain_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("model_version", sa.String(64)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="waiting"),  # waiting | asked | failed
    sa.Column("detection", sa.Text),          # JSON: the detection that asked for it
    sa.Column("repo_url", sa.Text),
    sa.Column("commit_sha", sa.String(64)),
    sa.Column("dataset", sa.Text),            # the dataset version's folder
    sa.Column("via", sa.String(16)),          # queue | jenkins
    sa.Column("run_ref", sa.Text),            # the queued run's id, or Jenkins' answer
    sa.Column("error", sa.Text),              # why the request could not be made
)


class Encoded(NamedTuple):
    """A prediction row as stored: its inputs and prediction as JSON text."""

    id: str
    model_version: str
    inputs: str
    prediction: str
    created_at: float


@dataclass(frozen=True)
class Labeled:
    """A prediction row with its true label: what a new dataset version takes from feedback."""

    id: str
    inputs: dict[str, Any]
    label: Any
    created_at: float


def open_engine(url: str) -> sa.Engine:
    """An engine for ``url``; a SQLite file is opened the project's way (WAL, busy timeout)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"serving_db_url {url!r} is not a database URL: {exc}",
                          hint="write sqlite:///PATH or postgresql://USER@HOST/DB") from None
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if not parsed.database or parsed.database == ":memory:":
        raise ConfigError("serving_db_url names an in-memory SQLite database, which loses everything",
                          hint="name a file: sqlite:///PATH/serving.db")
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine("sqlite://", creator=lambda: sqlitefile.connect(path, check_same_thread=False))

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # sqlitefile's connections are in autocommit; SQLAlchemy's transaction must really begin
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def plain(value: Any) -> Any:
    """A prediction or label as JSON can hold it (numpy scalars and arrays become Python's)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def same_label(prediction: Any, label: Any) -> bool:
    """Pure: whether a prediction equals the true label (3, 3.0 and "3" are the same class)."""
    if prediction == label:
        return True
    try:
        return float(prediction) == float(label)
    except (TypeError, ValueError):
        return str(prediction) == str(label)


class FeedbackStore:
    def __init__(self, url: str, *, max_rows: int, max_days: float, prune_every: int = PRUNE_EVERY) -> None:
        self.engine = open_engine(url)
        self.max_rows = max_rows
        self.max_days = max_days
        self.prune_every = prune_every
        self._since_prune = 0
        self._lock = threading.Lock()
        insert = predictions.insert().compile(dialect=self.engine.dialect, column_keys=list(Encoded._fields))
        self._insert_sql = str(insert)
        self._sqlite = self.engine.dialect.name == "sqlite"
        if insert.positional:
            order = [Encoded._fields.index(name) for name in insert.positiontup or ()]
            self._insert_params: Callable[[Encoded], Any] = lambda row: tuple(row[i] for i in order)
        else:
            self._insert_params = Encoded._asdict
        metadata.create_all(self.engine)
        self.prune()

    def close(self) -> None:
        self.engine.dispose()

    # predictions and feedback -----------------------------------------------------------
    def add_predictions(self, rows: Sequence[Mapping[str, Any]], now: float | None = None) -> None:
        """Rows with id, model_version, inputs (a dict), prediction, and created_at (else ``now``)."""
        at = time.time() if now is None else now
        self.add_encoded([Encoded(r["id"], r["model_version"], json.dumps(r["inputs"]), json.dumps(plain(r["prediction"])),
                                  r.get("created_at", at)) for r in rows], now=at)

    def add_encoded(self, rows: Sequence[Encoded], now: float | None = None) -> None:
        """Rows whose inputs and prediction are JSON text already, in one transaction."""
        if not rows:
            return
        # The statement compiled once and run as the driver's own executemany: the observer stores
        # every row served, on a thread that shares the interpreter with the request path, and
        # SQLAlchemy's connection and transaction layer cost several times the insert itself.
        params = [self._insert_params(r) for r in rows]
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if self._sqlite:  # its connections are in autocommit: one transaction for all the rows
                    cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(self._insert_sql, params)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()
        finally:
            raw.close()  # back to the pool
        with self._lock:
            self._since_prune += len(rows)
            due = self._since_prune >= self.prune_every
            if due:
                self._since_prune = 0
        if due:
            self.prune(time.time() if now is None else now)

    def predictions_of(self, ids: Iterable[str]) -> dict[str, tuple[Any, str]]:
        """id -> (prediction, model version), for the ids known (and still kept)."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, tuple[Any, str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                rows = conn.execute(sa.select(predictions.c.id, predictions.c.prediction, predictions.c.model_version)
                                    .where(predictions.c.id.in_(chunk)))
                found.update({r.id: (json.loads(r.prediction), r.model_version) for r in rows})
        return found

    def add_labels(self, labels: Mapping[str, tuple[Any, bool]], now: float | None = None) -> None:
        """id -> (true label, whether the prediction was right), for known ids."""
        at = time.time() if now is None else now
        if not labels:
            return
        stmt = (predictions.update().where(predictions.c.id == sa.bindparam("row_id"))
                .values(label=sa.bindparam("label"), correct=sa.bindparam("correct"), labeled_at=at))
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"row_id": k, "label": json.dumps(plain(v)), "correct": int(ok)}
                                for k, (v, ok) in labels.items()])

    def labeled_since(self, since: float) -> list[Labeled]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(predictions).where(predictions.c.label.is_not(None),
                                                             predictions.c.created_at >= since)
                                .order_by(predictions.c.created_at, predictions.c.id))
            return [Labeled(r.id, json.loads(r.inputs), json.loads(r.label), r.created_at) for r in rows]

    def labeled_count_since(self, since: float) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)
                                    .where(predictions.c.label.is_not(None), predictions.c.created_at >= since))
                       .scalar_one())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())

    def prune(self, now: float | None = None) -> int:
        """Enforce the retention bound; returns how many rows went."""
        now = time.time() if now is None else now
        removed = 0
        cutoff = now - self.max_days * 86400.0
        with self.engine.begin() as conn:
            removed += conn.execute(predictions.delete().where(predictions.c.created_at < cutoff)).rowcount or 0
            excess = int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()) \
                - self.max_rows
            while excess > 0:
                oldest = (sa.select(predictions.c.id).order_by(predictions.c.created_at, predictions.c.id)
                          .limit(min(excess, DELETE_BATCH)))
                gone = conn.execute(predictions.delete().where(predictions.c.id.in_(oldest.scalar_subquery())))
                removed += gone.rowcount or 0
                excess -= min(excess, DELETE_BATCH)
        return removed

    # detectors, detections, retraining requests ----------------------------------------
    def load_state(self, name: str) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(detector_state.c.state).where(detector_state.c.name == name)).first()
        return None if row is None else bytes(row.state)

    def save_state(self, name: str, blob: bytes, now: float | None = None) -> None:
        at = time.time() if now is None else now
        with self.engine.begin() as conn:
            done = conn.execute(detector_state.update().where(detector_state.c.name == name)
                                .values(state=blob, updated_at=at))
            if not done.rowcount:
                conn.execute(detector_state.insert().values(name=name, state=blob, updated_at=at))

    def add_detection(self, stream: str, sample: int, before: float, after: float, at: float,
                      model_version: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(detections.insert().values(stream=stream, sample=sample, before=before, after=after,
                                                    at=at, model_version=model_version))

    def detections(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(detections).order_by(detections.c.id))]

    def claim_request(self, now: float, cooldown_s: float, max_per_day: int,
                      **values: Any) -> tuple[int | None, str | None, float | None]:
        """Record a retraining request when the cooldown and the cap allow one, in one transaction
        (two servers on one store ask once between them). Returns (its id or None, why not, the
        time of the request before it)."""
        from mlchain.serving.retrain import DAY_S, refusal

        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE serialises; PostgreSQL needs the lock
                conn.exec_driver_sql("LOCK TABLE retrain_requests IN SHARE ROW EXCLUSIVE MODE")
            recent = [float(t) for t in conn.execute(
                sa.select(retrain_requests.c.at).where(retrain_requests.c.at > now - max(DAY_S, cooldown_s)))
                .scalars()]
            last = conn.execute(sa.select(sa.func.max(retrain_requests.c.at))).scalar_one_or_none()
            why = refusal(recent, now, cooldown_s, max_per_day)
            if why is not None:
                return None, why, last
            key = conn.execute(retrain_requests.insert().values(at=now, **values)).inserted_primary_key
        return (int(key[0]) if key else None), None, (float(last) if last is not None else None)

    def add_request(self, **values: Any) -> int:
        with self.engine.begin() as conn:
            key = conn.execute(retrain_requests.insert().values(**values)).inserted_primary_key
        return int(key[0]) if key else 0

    def update_request(self, request_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(retrain_requests.update().where(retrain_requests.c.id == request_id).values(**values))

    def waiting_request(self) -> dict[str, Any] | None:
        """The request waiting for feedback after its drift (at most one: the cooldown sees to it)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(retrain_requests).where(retrain_requests.c.status == "waiting")
                               .order_by(retrain_requests.c.id.desc())).first()
        return None if row is None else dict(row._mapping)

    def requests(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in
                    conn.execute(sa.select(retrain_requests).order_by(retrain_requests.c.id))]
