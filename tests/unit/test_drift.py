"""Drift on streams made from scikit-learn's digits (ADWIN from river), the feedback store
(real SQLite), the retraining rules and the dataset versions."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlchain.serving import retrain
from mlchain.serving.drift import ERROR_STREAM, SUMMARY_STREAMS, Detectors, watched_rows, watched_values
from mlchain.serving.feedback import Encoded, FeedbackStore, Labeled, same_label
from mlchain.serving.rows import JsonRows, read_rows

STREAM = 20_000
SHIFT_AT = 5_000
SEEDS = range(5)
# Measured here (benchmarks/bench_drift.py): the summary streams see these shifts 23 to 55
# samples after they begin; the bound leaves room for another delta or a milder seed.
DELAY_BOUND = 300


@pytest.fixture(scope="module")
def digits() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return pd.DataFrame(data.data, columns=[f"p{i}" for i in range(64)]), data.target


def stream(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Rows drawn at random, with replacement: a stationary stream."""
    rng = np.random.default_rng(seed)
    return frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)


def brighter(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The shift: brighter pixels with sensor noise, clipped to the digits' 0..16 range."""
    rng = np.random.default_rng(1000 + seed)
    values = frame.to_numpy(dtype=float) + 2.0 + rng.normal(0.0, 1.5, frame.shape)
    return pd.DataFrame(np.clip(values, 0.0, 16.0), columns=frame.columns)


def first_detection_after(detectors: Detectors, rows: list[dict[str, float]], start: int) -> Any:
    for i, values in enumerate(rows):
        for detection in detectors.update(values):
            if i >= start:
                return i - start, detection
    return None, None


# --- what is watched -----------------------------------------------------------------------

def test_pixels_are_watched_through_three_summary_statistics(digits: Any) -> None:
    frame, _ = digits
    rows = watched_values(frame.iloc[:2], summary_above=32)
    first = frame.iloc[0].to_numpy(dtype=float)
    assert list(rows[0]) == list(SUMMARY_STREAMS)
    assert rows[0]["pixel mean"] == pytest.approx(first.mean())
    assert rows[0]["pixel std"] == pytest.approx(first.std())
    assert rows[0]["pixel zero fraction"] == pytest.approx((first == 0).mean())


def test_a_few_columns_are_watched_one_by_one_and_text_is_left_out() -> None:
    frame = pd.DataFrame({"age": [31, 40], "income": [1.5, 2.5], "city": ["x", "y"]})
    assert watched_values(frame, summary_above=32) == [{"age": 31.0, "income": 1.5}, {"age": 40.0, "income": 2.5}]
    # the bound decides: 2 numeric columns above a bound of 1 are summarised
    assert list(watched_values(frame, summary_above=1)[0]) == list(SUMMARY_STREAMS)


# --- ADWIN on the digits ---------------------------------------------------------------------

def test_a_stationary_stream_of_20000_digits_raises_no_alarm(digits: Any) -> None:
    frame, _ = digits
    alarms = 0
    for seed in SEEDS:
        detectors = Detectors(delta=0.002)
        alarms += len(detectors.feed(watched_values(stream(frame, STREAM, seed), 32)))
        assert detectors.samples() == dict.fromkeys(SUMMARY_STREAMS, STREAM)
    assert alarms == 0


def test_brighter_noisier_pixels_are_detected_within_the_bound(digits: Any) -> None:
    frame, _ = digits
    delays = []
    for seed in SEEDS:
        rows = stream(frame, 2 * SHIFT_AT, seed)
        rows.iloc[SHIFT_AT:] = brighter(rows.iloc[SHIFT_AT:], seed).to_numpy()
        values = watched_values(rows, 32)
        delay, detection = first_detection_after(Detectors(delta=0.002), values, SHIFT_AT)
        assert delay is not None, f"seed {seed}: the shift was never detected"
        delays.append(delay)
        old = np.mean([v[detection.stream] for v in values[:SHIFT_AT]])
        # what the detection records: the stream, the sample index, the mean before it and after
        assert detection.sample == SHIFT_AT + delay + 1
        assert detection.before == pytest.approx(old, abs=0.02 * max(abs(old), 1.0))
        assert abs(detection.after - old) > abs(detection.before - old)
        assert detection.describe().startswith(f"drift in {detection.stream} at sample {detection.sample:,}: ")
    assert max(delays) <= DELAY_BOUND, delays


def error_stream(digits: Any, seed: int, n: int, flip_from: int | None) -> list[float]:
    """1 where a real model's prediction is wrong; from ``flip_from`` on, the labels change."""
    from sklearn.linear_model import LogisticRegression

    frame, target = digits
    model = LogisticRegression(max_iter=2000).fit(frame.iloc[::2], target[::2])
    held_x, held_y = frame.iloc[1::2], target[1::2]
    predicted = model.predict(held_x)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(held_y), n)
    truth = held_y[pick].copy()
    if flip_from is not None:
        truth[flip_from:] = (truth[flip_from:] + 1) % 10  # the world relabels its digits
    return [float(p != t) for p, t in zip(predicted[pick], truth, strict=True)]


def test_the_error_stream_is_quiet_when_stationary_and_detects_a_label_change(digits: Any) -> None:
    false_alarms = sum(len(Detectors().feed({ERROR_STREAM: e} for e in error_stream(digits, seed, STREAM, None)))
                       for seed in SEEDS)
    assert false_alarms == 0
    for seed in SEEDS:
        errors = error_stream(digits, seed, 2 * SHIFT_AT, SHIFT_AT)
        delay, detection = first_detection_after(Detectors(), [{ERROR_STREAM: e} for e in errors], SHIFT_AT)
        assert delay is not None and delay <= DELAY_BOUND, (seed, delay)
        # a few errors before; after, the kept window (cut at ADWIN's bucket edges) is mostly the new errors
        assert detection.before < 0.1 and detection.after > 0.3


def test_saved_detectors_go_on_exactly_where_they_stopped(digits: Any) -> None:
    frame, _ = digits
    rows = stream(frame, 2 * SHIFT_AT, 7)
    rows.iloc[SHIFT_AT:] = brighter(rows.iloc[SHIFT_AT:], 7).to_numpy()
    values = watched_values(rows, 32)
    whole = Detectors()
    expected = whole.feed(values)
    first = Detectors()
    found = first.feed(values[:3000])
    restarted = Detectors.loads(first.dumps(), 0.002)
    found += restarted.feed(values[3000:])
    assert [(d.stream, d.sample, d.before, d.after) for d in found] == \
        [(d.stream, d.sample, d.before, d.after) for d in expected]
    assert expected  # there was something to detect
    # another delta is another detector: saved state is not reused for it
    assert Detectors.loads(first.dumps(), 0.01).streams == {}


# --- the feedback store ----------------------------------------------------------------------

def store_at(tmp_path: Path, **kw: Any) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path / 'serving.db'}", **{"max_rows": 1000, "max_days": 30.0, **kw})


def test_the_store_keeps_predictions_and_the_labels_of_known_ids(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.add_predictions([{"id": "a" * 32, "model_version": "3", "inputs": {"x": 1.5}, "prediction": np.int64(4)},
                           {"id": "b" * 32, "model_version": "3", "inputs": {"x": 2.5}, "prediction": 7}], now=100.0)
    assert store.predictions_of(["a" * 32, "c" * 32]) == {"a" * 32: (4, "3")}
    store.add_labels({"a" * 32: (4, True)}, now=101.0)
    assert store.labeled_since(0.0) == [Labeled("a" * 32, {"x": 1.5}, 4, 100.0)]
    assert store.labeled_since(100.5) == []
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_retention_keeps_the_newest_rows_within_the_bounds(tmp_path: Path) -> None:
    store = store_at(tmp_path, max_rows=50, max_days=1.0, prune_every=20)
    now = time.time()
    for batch in range(6):  # 120 rows; the pass after each 20 keeps the newest 50
        store.add_predictions([{"id": f"{batch:02d}{i:030d}", "model_version": "1", "inputs": {}, "prediction": 0}
                               for i in range(20)], now=now + batch)
    assert store.count() == 50
    assert min(store.predictions_of(f"{b:02d}{i:030d}" for b in range(6) for i in range(20))) == f"03{10:030d}"
    # rows older than max_days go when the store opens (and at each pass)
    store.add_predictions([{"id": "o" * 32, "model_version": "1", "inputs": {}, "prediction": 0}], now=now - 2 * 86400)
    store.close()
    assert store_at(tmp_path, max_rows=50, max_days=1.0).predictions_of(["o" * 32]) == {}


def test_a_failing_batch_of_rows_stores_none_of_them_and_the_store_goes_on(tmp_path: Path) -> None:
    store, now = store_at(tmp_path), time.time()
    store.add_encoded([Encoded("a" * 32, "1", '{"x":1}', "0", now)])
    twice = [Encoded("b" * 32, "1", '{"x":2}', "1", now), Encoded("a" * 32, "1", '{"x":3}', "1", now)]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_encoded(twice)  # the second row's id is taken: the first row goes back with it
    assert store.predictions_of(["a" * 32, "b" * 32]) == {"a" * 32: (0, "1")}
    store.add_encoded([Encoded("c" * 32, "2", '{"x":4}', '"cat"', now)])
    assert store.predictions_of(["c" * 32]) == {"c" * 32: ("cat", "2")}
    other = store_at(tmp_path)  # what was committed is on the file, for another connection
    assert other.count() == 2
    other.close()
    store.close()


# --- what is kept of a predicted batch's rows --------------------------------------------------

def test_numeric_rows_are_kept_exactly_as_json_objects() -> None:
    floats = pd.DataFrame({"a": [0.1 + 0.2, 1e-300], "b": [16.0, -2.5]})
    assert [json.loads(t) for t in read_rows(floats).json_objects()] == \
        [{"a": 0.30000000000000004, "b": 16.0}, {"a": 1e-300, "b": -2.5}]  # every digit, not 15
    ints = pd.DataFrame(np.array([[1, 2**40]], dtype=np.int64), columns=[0, 1])  # a tensor's rows
    assert read_rows(ints).json_objects() == ['{"0":1,"1":1099511627776}']


def test_rows_of_other_kinds_keep_each_column_s_type_and_null_for_missing() -> None:
    frame = pd.DataFrame({"n": [31, 40], "x": [1.5, float("nan")], "inf": [float("inf"), 0.5],
                          "city": ["x", "y"], "ok": [True, False]})
    assert [json.loads(t) for t in read_rows(frame).json_objects()] == [
        {"n": 31, "x": 1.5, "inf": None, "city": "x", "ok": True},
        {"n": 40, "x": None, "inf": 0.5, "city": "y", "ok": False}]
    mixed = pd.DataFrame({"n": [3], "x": [0.25]})  # integers beside floats stay integers
    assert [json.loads(t) for t in read_rows(mixed).json_objects()] == [{"n": 3, "x": 0.25}]
    # drift watches the numbers finite in every row of the batch
    assert watched_values(frame, summary_above=32) == [{"n": 31.0}, {"n": 40.0}]
    assert watched_values(pd.DataFrame({"c": pd.Categorical([1.0, 2.0])}), 32) == [{}, {}]


def test_json_rows_are_kept_as_sent_and_watched_as_pandas_would_read_them() -> None:
    names = ["n", "x", "city", "gap", "ok"]
    sent = [[31, 1.5, "x", None, True], [40, 2, "y", None, False]]
    frame = pd.DataFrame(sent, columns=names)
    rows = JsonRows(names, sent, frame)
    assert rows.json_objects() == ['{"n":31,"x":1.5,"city":"x","gap":null,"ok":true}',
                                   '{"n":40,"x":2,"city":"y","gap":null,"ok":false}']
    assert watched_rows(rows, 32) == watched_values(frame, 32) == [{"n": 31.0, "x": 1.5}, {"n": 40.0, "x": 2.0}]
    records = JsonRows(names, [dict(zip(names, r, strict=True)) for r in sent], frame)
    assert records.json_objects() == rows.json_objects()
    numbers = JsonRows(["a", "b"], [[0.1 + 0.2, float("nan")], [1, float("inf")]], pd.DataFrame())
    assert numbers.json_objects() == ['{"a":0.30000000000000004,"b":null}', '{"a":1,"b":null}']
    assert watched_rows(numbers, 32) == [{"a": 0.30000000000000004}, {"a": 1.0}]
    pixels = [[float(v) for v in range(64)]]
    assert watched_rows(JsonRows([f"p{i}" for i in range(64)], pixels, pd.DataFrame()), 32) == \
        watched_values(pd.DataFrame(pixels), 32)


def test_json_rows_the_cheap_way_cannot_take_are_read_from_the_frame() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, float("nan")]})
    ragged = JsonRows(["a", "b"], [[1.0, 3.0], [2.0]], frame)
    assert ragged.json_objects() == ['{"a":1.0,"b":3.0}', '{"a":2.0,"b":null}']
    assert watched_rows(ragged, 32) == [{"a": 1.0}, {"a": 2.0}]
    twice = JsonRows(["a", "a"], [[1.0, 3.0]], pd.DataFrame([[1.0, 3.0]], columns=["a", "b"]))
    assert twice.json_objects() == ['{"a":1.0,"b":3.0}']


def test_the_observer_reads_rows_sent_with_names_from_the_request_and_others_from_the_frame() -> None:
    from mlchain.serving.protocol import model_input, observed_rows

    split = {"columns": ["a", "b"], "data": [[1, 2.5]]}
    records = [{"a": 1, "b": 2.5}]
    assert isinstance(observed_rows("dataframe_split", split, model_input("dataframe_split", split)), JsonRows)
    assert isinstance(observed_rows("dataframe_records", records, model_input("dataframe_records", records)),
                      JsonRows)
    unnamed = {"data": [[1, 2.5]]}
    assert isinstance(observed_rows("dataframe_split", unnamed, model_input("dataframe_split", unnamed)),
                      pd.DataFrame)
    mixed = [{"a": 1}, {"b": 2}]
    assert isinstance(observed_rows("dataframe_records", mixed, model_input("dataframe_records", mixed)),
                      pd.DataFrame)
    assert isinstance(observed_rows("instances", [[1, 2]], model_input("instances", [[1, 2]])), pd.DataFrame)


def test_text_that_the_model_s_schema_reads_as_numbers_is_kept_as_sent_and_watched_as_numbers() -> None:
    from mlflow.types import ColSpec, Schema

    from mlchain.serving.protocol import model_input, observed_rows

    split = {"columns": ["a", "b"], "data": [["5", 1.5]]}
    frame = model_input("dataframe_split", split, Schema([ColSpec("double", "a"), ColSpec("double", "b")]))
    rows = observed_rows("dataframe_split", split, frame)
    assert isinstance(rows, JsonRows) and rows.json_objects() == ['{"a":"5","b":1.5}']
    assert watched_rows(rows, 32) == [{"a": 5.0, "b": 1.5}]


def test_labels_compare_as_classes() -> None:
    assert same_label(3, "3") and same_label(3.0, 3) and same_label("cat", "cat")
    assert not same_label(3, 4) and not same_label("cat", "dog")


# --- the retraining rules ---------------------------------------------------------------------

def test_retraining_waits_out_the_cooldown_and_stops_at_the_daily_cap() -> None:
    assert retrain.refusal([], 1000.0, 3600.0, 2) is None
    assert "cooling down" in str(retrain.refusal([0.0], 1000.0, 3600.0, 2))
    assert retrain.refusal([0.0], 4000.0, 3600.0, 2) is None
    assert "cap of 2" in str(retrain.refusal([0.0, 5000.0], 9000.0, 60.0, 2))
    assert retrain.refusal([0.0, 5000.0], 0.0 + 86400.0 + 1, 60.0, 2) is None  # a day later
    assert "capped at 0" in str(retrain.refusal([], 0.0, 0.0, 0))


def test_the_store_grants_one_request_in_a_cooldown(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    first, why, previous = store.claim_request(1000.0, 3600.0, 5, reason="drift in x at sample 9: 0.10 -> 0.90")
    assert first is not None and why is None and previous is None
    second, why, previous = store.claim_request(1100.0, 3600.0, 5, reason="again")
    assert second is None and why is not None and "cooling down" in why and previous == 1000.0
    third, _, previous = store.claim_request(5000.0, 3600.0, 5, reason="later")
    assert third is not None and previous == 1000.0
    assert [r["reason"] for r in store.requests()] == ["drift in x at sample 9: 0.10 -> 0.90", "later"]


# --- dataset versions ----------------------------------------------------------------------------

def test_a_dataset_version_is_named_by_its_content(tmp_path: Path) -> None:
    base = tmp_path / "data"
    base.mkdir()
    (base / "train.csv").write_text("x,label\n1,0\n")
    feedback = [Labeled("a" * 32, {"x": 2.0}, 1, 10.0), Labeled("b" * 32, {"x": 3.0, "label": 9}, 0, 11.0)]
    made = retrain.write_dataset(tmp_path / "datasets", "team/../digits", base, feedback, {"reason": "r"})
    assert made.path.parent == tmp_path / "datasets" / "team-..-digits"  # one folder: no separator left
    assert made.path.name == made.version == retrain.content_hash(made.path)[:12]
    assert (made.path / "train.csv").read_text() == "x,label\n1,0\n"
    # an input column named label: the true label gets another name
    assert (made.path / "feedback.csv").read_text() == "x,label,true_label\n2.0,,1\n3.0,9,0\n"
    manifest = json.loads((made.path / "manifest.json").read_text())
    assert manifest["feedback_rows"] == 2 and manifest["label_column"] == "true_label"
    assert manifest["sha256"].startswith(made.version) and manifest["reason"] == "r"
    again = retrain.write_dataset(tmp_path / "datasets", "team/../digits", base, feedback)
    assert again.path == made.path  # the same content is the same version
    other = retrain.write_dataset(tmp_path / "datasets", "team/../digits", base, feedback[:1])
    assert other.version != made.version
    assert sorted(p.name for p in made.path.parent.iterdir()) == sorted({made.version, other.version})


def test_a_link_in_the_data_folder_is_refused(tmp_path: Path) -> None:
    from mlchain.outputs import UnsafeOutput

    base = tmp_path / "data"
    base.mkdir()
    os.symlink("/etc/passwd", base / "passwd.csv")
    with pytest.raises(UnsafeOutput):
        retrain.write_dataset(tmp_path / "datasets", "digits", base, [])
    assert list((tmp_path / "datasets" / "digits").iterdir()) == []  # nothing half-written stays


# --- the observer, and what `mlchain drift status` shows of it ---------------------------------

def test_the_observer_keeps_rows_and_labels_and_goes_on_after_a_restart(make_settings: Any, capsys: Any) -> None:
    from mlchain.cli import main
    from mlchain.serving.observe import DriftObserver

    settings = make_settings(retrain_via="off")
    rng = np.random.default_rng(3)

    def rows(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame({"age": rng.normal(40 + shift, 5, n), "income": rng.normal(2.0, 0.5, n),
                             "city": ["x"] * n})

    observer = DriftObserver(settings, "tabular")
    stationary = rows(600, 0.0)
    ids = observer.record_predictions("7", stationary, [1, 0] * 300)
    assert len(set(ids)) == 600 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert observer.record_feedback({ids[0]: 1, ids[1]: 1, "nope": 0}) == 2  # the second one was wrong
    assert observer.state()["mlchain_feedback_unknown_total"] == 1.0
    assert observer.state()["mlchain_drift_samples_error_rate"] == 2.0
    assert observer.detections() == []
    labeled = {row.id: row for row in observer.store.labeled_since(0.0)}
    assert sorted(labeled) == sorted(ids[:2]) and labeled[ids[1]].label == 1
    assert labeled[ids[0]].inputs == {"age": pytest.approx(stationary["age"][0], rel=1e-12),
                                      "income": pytest.approx(stationary["income"][0], rel=1e-12), "city": "x"}
    observer.close()

    again = DriftObserver(settings, "tabular")
    assert again.detectors.samples() == {"age": 600, "income": 600, "error rate": 2}
    again.record_predictions("7", rows(600, 15.0), [0] * 600)  # the ages move on
    (found,) = again.detections()
    assert found["stream"] == "age" and 600 < found["sample"] <= 600 + 300  # counted across the restart
    # the kept window starts at a bucket edge, with some older rows: its mean is between the two
    assert found["before"] == pytest.approx(40, abs=1.5) and found["after"] > found["before"] + 2
    assert again.requests() == []  # retraining is off
    again.close()

    capsys.readouterr()
    assert main(["--home", str(settings.home), "drift", "status"]) == 0
    text = capsys.readouterr().out
    assert f"drift in age at sample {found['sample']:,}: {found['before']:.2f} -> {found['after']:.2f}" in text
    assert "1,200 predictions kept" in text
    assert main(["--home", str(settings.home), "drift", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [d["sample"] for d in report["detections"]] == [found["sample"]] and report["requests"] == []


def test_every_batch_handed_over_is_stored_by_close_in_order(make_settings: Any) -> None:
    """Recording is off the request path (a recorder thread); closing the observer stores all
    that was handed over, and the detectors saw the rows in the order they were predicted."""
    from mlchain.serving.observe import DriftObserver

    settings = make_settings(retrain_via="off")
    observer = DriftObserver(settings, "tabular")
    handed: list[str] = []
    for n in range(300):
        handed += observer.record_predictions("3", pd.DataFrame({"x": [float(n)] * 4}), [n % 2] * 4)
    observer.close()
    store = FeedbackStore(settings.resolved_serving_db_url, max_rows=10_000, max_days=1)
    kept = store.predictions_of(handed)
    assert len(kept) == 1200 and kept[handed[-1]] == (1, "3") and kept[handed[0]] == (0, "3")
    again = DriftObserver(settings, "tabular")
    assert again.detectors.samples() == {"x": 1200}
    again.close()


def test_drift_status_names_a_bad_database_url(make_settings: Any, capsys: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mlchain.cli import main

    settings = make_settings()
    monkeypatch.setenv("MLCHAIN_SERVING_DB_URL", "not a url")
    code = main(["--home", str(settings.home), "drift", "status"])
    err = capsys.readouterr().err
    assert code == 3 and "serving_db_url 'not a url' is not a database URL" in err and "Traceback" not in err


def test_job1_takes_a_retraining_s_reason_and_dataset_from_its_parameters(make_settings: Any) -> None:
    from mlchain.engine.jobs import BuildEnv, retrain_facts
    from mlchain.errors import ConfigError
    from mlchain.state import StateStore

    settings = make_settings()
    store = StateStore(settings.state_db)
    store.create_run("r1", "https://github.com/acme/digits.git", "digits", "main", None)
    run = store.get_run("r1")
    version = retrain.write_dataset(settings.datasets_dir, "digits", None, [Labeled("a" * 32, {"x": 1}, 0, 1.0)])
    reason = "drift in pixel mean at sample 4,120: 0.31 -> 0.52"
    assert retrain_facts(settings, run, BuildEnv({"REASON": reason, "DATASET": str(version.path)})) == \
        (reason, str(version.path))
    assert retrain_facts(settings, run, BuildEnv({})) == (None, None)  # a push
    with pytest.raises(ConfigError, match="is not a dataset version: it is not inside"):
        retrain_facts(settings, run, BuildEnv({"DATASET": str(settings.home_abs)}))
    with pytest.raises(ConfigError, match="--reason must be one line"):
        retrain_facts(settings, run, BuildEnv({"REASON": "two\nlines"}))
    # what `mlchain run` recorded wins
    store.update_run("r1", reason="recorded", dataset=str(version.path))
    assert retrain_facts(settings, store.get_run("r1"), BuildEnv({"REASON": "other"}))[0] == "recorded"


def test_an_older_queue_file_gets_the_new_columns_and_a_retraining_runs_with_its_reason(tmp_path: Path) -> None:
    import sqlite3

    from mlchain.webhook.queue import SCHEMA, WebhookQueue, chain_argv

    path = tmp_path / "webhook.db"
    with sqlite3.connect(path) as db:  # the queue as the first release made it
        db.executescript(SCHEMA)
    queue = WebhookQueue(path)
    reason = "drift in pixel mean at sample 4,120: 0.31 -> 0.52"
    commit = "b" * 40
    run_id = queue.enqueue_retrain(repo_url="https://github.com/acme/digits.git", repo_name="digits", commit=commit,
                                   reason=reason, dataset="/home/x/datasets/digits/0123456789ab")
    assert run_id.startswith("drift-")
    (claim, _), = queue.claim("me", 1)
    assert (claim.run_id, claim.commit, claim.reason) == (run_id, commit, reason)
    argv = chain_argv(["mlchain"], claim)
    assert argv[-2:] == ["--", "https://github.com/acme/digits.git"]
    assert f"--ref={commit}" in argv and f"--reason={reason}" in argv
    assert "--dataset=/home/x/datasets/digits/0123456789ab" in argv


def test_an_older_state_file_gets_the_run_columns(tmp_path: Path) -> None:
    import sqlite3

    from mlchain.state import SCHEMA, StateStore

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
    store = StateStore(path)
    store.create_run("r1", "file:///x", "x", None, None)
    assert (store.get_run("r1").reason, store.get_run("r1").dataset) == (None, None)
    store.update_run("r1", reason="why", dataset="/d")
    assert (store.get_run("r1").reason, store.get_run("r1").dataset) == ("why", "/d")
    assert StateStore(path).get_run("r1").reason == "why"  # opening it again changes nothing


def test_a_request_waits_for_feedback_across_a_restart_and_keeps_its_error(make_settings: Any) -> None:
    from mlchain.serving.observe import DriftObserver

    settings = make_settings(retrain_via="queue", retrain_min_feedback=100, retrain_cooldown_s=3600.0)
    rng = np.random.default_rng(11)
    observer = DriftObserver(settings, "no-such-model")
    observer.record_predictions("1", pd.DataFrame({"x": rng.normal(0, 1, 500)}), [0] * 500)
    shifted = observer.record_predictions("1", pd.DataFrame({"x": rng.normal(5, 1, 500)}), [0] * 500)
    (waiting,) = observer.requests()
    assert waiting["status"] == "waiting" and waiting["reason"].startswith("drift in x at sample ")
    observer.close()

    again = DriftObserver(settings, "no-such-model")
    again.record_feedback(dict.fromkeys(shifted[:99], 0))
    assert again.requests()[0]["status"] == "waiting"  # 99 labeled rows since the drift: not yet
    again.record_feedback({shifted[99]: 0})
    again.wait_idle()
    (failed,) = again.requests()
    # the model was never registered: the request is kept with why it could not be made
    assert failed["status"] == "failed" and "no-such-model" in failed["error"] and failed["run_ref"] is None
    assert again.state()["mlchain_retrain_errors_total"] == 1.0
    assert not (settings.home_abs / "webhook.db").exists()  # nothing was queued
    again.close()
