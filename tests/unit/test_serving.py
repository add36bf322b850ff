"""The model server's parts on in-memory input: MLflow's protocol parsing (pinned), the input
checks, the swap decision, the micro-batcher, and the app with a real scikit-learn model saved in
MLflow's format (the observer is a recording one, as h18b's store would be)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlchain.serving import protocol
from mlchain.serving.batching import BatchPredictor, Job, MicroBatcher, Outcome, wait_target
from mlchain.serving.metrics import metric_name
from mlchain.serving.model import LoadedModel, ModelHolder, Target, input_spec, next_version_to_load
from mlchain.serving.protocol import BadInput, InputSpec, Request, input_problem, read_request


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# --- MLflow's own parser, pinned -----------------------------------------------------------

def parse(payload: Any, content_type: str | None = None) -> Any:
    request = read_request(payload if isinstance(payload, bytes) else body(payload), content_type)
    return request, protocol.model_input(request.fmt, request.payload)


def test_mlflows_scoring_parser_is_public_and_reads_the_four_formats() -> None:
    from mlflow.pyfunc.scoring_server import infer_and_parse_data  # the function model_input relies on

    frame = infer_and_parse_data({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]}})
    assert list(frame.columns) == ["a", "b"] and frame.to_numpy().tolist() == [[1, 2.5], [3, 4]]
    split, split_data = parse({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]}})
    records, records_data = parse({"dataframe_records": [{"a": 1, "b": 2.5}, {"a": 3, "b": 4}]}, "application/json")
    pd.testing.assert_frame_equal(split_data, records_data, check_dtype=False)
    assert split.rows == records.rows == 2
    assert split.group == ("dataframe_split", ("a", "b")) and records.group == ("dataframe_records", ("a", "b"))
    for key in ("instances", "inputs"):
        request, data = parse({key: [[1, 2], [3, 4], [5, 6]]}, "application/json; charset=utf-8")
        assert isinstance(data, np.ndarray) and data.tolist() == [[1, 2], [3, 4], [5, 6]]
        assert request.rows == 3 and request.params is None and request.group == (key,)
    with_params, _ = parse({"instances": [[1]], "params": {"k": 2}})
    assert with_params.params == {"k": 2} and with_params.group is None  # predicted alone, with its params
    csv, csv_data = parse(b"a,b\n1,2\n3,4\n", "text/csv")
    assert csv.rows == 2 and csv_data.to_numpy().tolist() == [[1, 2], [3, 4]]


def test_requests_of_one_group_merge_into_one_input_that_mlflow_parses() -> None:
    one, _ = parse({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}})
    two, _ = parse({"dataframe_split": {"columns": ["a", "b"], "data": [[3, 4], [5, 6]]}})
    merged = protocol.model_input(one.fmt, protocol.merge([one, two]))
    assert merged.to_numpy().tolist() == [[1, 2], [3, 4], [5, 6]] and list(merged.columns) == ["a", "b"]
    rows = [parse({"instances": [[i, i]]})[0] for i in range(3)]
    assert protocol.model_input("instances", protocol.merge(rows)).tolist() == [[0, 0], [1, 1], [2, 2]]
    mixed, _ = parse({"dataframe_records": [{"a": 1}, {"b": 2}]})
    assert mixed.group is None  # records with different keys would fill gaps with NaN if merged


def test_a_payload_mlflow_cannot_read_says_why() -> None:
    request = read_request(body({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}), None)
    with pytest.raises(BadInput) as caught:
        protocol.model_input(request.fmt, request.payload)
    assert "could not be read" in caught.value.message and "1 columns passed" in caught.value.message


@pytest.mark.parametrize(("raw", "content_type", "status", "fragment"), [
    (b"", None, 400, "empty"),
    (b"{", None, 400, "not valid JSON"),
    (b'{"instances": "\xff"}', None, 400, "UTF-8"),
    (b'"text"', None, 400, "JSON str, not an object"),
    (b'{"instances": [[1]], "extra": 1}', None, 400, "unknown key(s) 'extra'"),
    (b'{"params": {}}', None, 400, "it has none of them"),
    (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, 400, "nested too deeply"),
    (b'{"instances": [[1]], "dataframe_records": []}', None, 400, "both"),
    (b'{"instances": [[1]], "params": 3}', None, 400, "'params' must be"),
    (b'{"dataframe_records": []}', None, 400, "no rows"),
    (b"<xml/>", "application/xml", 415, "unsupported content type"),
])
def test_a_malformed_body_says_what_was_wrong(raw: bytes, content_type: str | None, status: int,
                                              fragment: str) -> None:
    with pytest.raises(BadInput) as caught:
        read_request(raw, content_type)
    assert caught.value.status == status and fragment in caught.value.message


@pytest.mark.parametrize(("data", "spec", "fragment"), [
    (pd.DataFrame({"a": [1], "c": [2]}), InputSpec(columns=("a", "b")), "missing column(s) ['b']; unknown column(s) ['c']"),
    (pd.DataFrame({"a": [1], "b": [2]}), InputSpec(columns=("a", "b")), None),
    (pd.DataFrame({"x": [1]}), InputSpec(n_features=3), "1 column(s), but the model takes 3"),
    (pd.DataFrame({"x": ["s"], "y": [1]}), InputSpec(n_features=2, numeric=True), "column 'x' holds"),
    (np.zeros((2, 3)), InputSpec(n_features=4), "shape (3,)"),
    (np.zeros((2, 4)), InputSpec(n_features=4), None),
    (np.zeros((2, 8, 8, 1)), InputSpec(row_shape=(8, 8, 1)), None),
    (np.zeros((2, 7, 8, 1)), InputSpec(row_shape=(-1, 8, 1)), None),
    (np.zeros((2, 8, 8)), InputSpec(row_shape=(8, 8, 1)), "shape (8, 8)"),
    (np.array([[1], [1, 2]], dtype=object), InputSpec(), "not all of the same length"),
    (np.array([["a"]]), InputSpec(n_features=1, numeric=True), "numbers only"),
])
def test_input_is_checked_against_what_the_model_takes(data: Any, spec: InputSpec, fragment: str | None) -> None:
    problem = input_problem(data, spec)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


def test_predictions_become_json_values() -> None:
    assert protocol.jsonable(np.array([1, 2])) == [1, 2]
    assert protocol.jsonable(np.array([0.5, np.nan])) == [0.5, None]
    assert protocol.jsonable(pd.DataFrame({"p": [np.float32(0.25)], "c": ["x"]})) == [{"p": 0.25, "c": "x"}]
    assert protocol.jsonable(pd.Series([np.int64(3)])) == [3]
    assert json.dumps(protocol.jsonable({"a": np.array([[1.0]])})) == '{"a": [[1.0]]}'


# --- decisions ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("serving", "wanted", "failed", "load"), [
    (None, "1", None, "1"),   # nothing serving yet
    ("1", "1", None, None),   # already serving it
    ("1", "2", None, "2"),    # the alias moved
    ("1", "2", "2", None),    # it failed to load: not again at every poll
    ("1", "3", "2", "3"),     # moved on from the failed one
    ("1", None, None, None),  # the alias is gone: keep serving
])
def test_which_version_to_load(serving: str | None, wanted: str | None, failed: str | None,
                               load: str | None) -> None:
    assert next_version_to_load(serving, wanted, failed) == load


def test_a_batch_waits_only_when_the_last_one_showed_concurrency() -> None:
    assert wait_target(0, 256) == 0 and wait_target(1, 256) == 0  # one client never waits
    assert wait_target(32, 256) == 32 and wait_target(500, 256) == 256


def test_observer_gauge_names_are_made_valid_for_prometheus() -> None:
    assert metric_name("drift.pixel mean") == "drift_pixel_mean"
    assert metric_name("9lives") == "_9lives" and metric_name("ok_name:x") == "ok_name:x"


# --- the micro-batcher --------------------------------------------------------------------------

def row(value: int) -> Request:
    return Request("instances", value, None, 1, ("instances",))


def test_requests_arriving_during_a_predict_are_grouped_into_the_next_one() -> None:
    release, started = threading.Event(), threading.Event()
    batches: list[list[Any]] = []

    def run_batch(jobs: list[Job]) -> list[Outcome]:
        batches.append([job.request.payload for job in jobs])
        started.set()
        if len(batches) == 1:
            release.wait(10)  # the first predict is slow: the others queue meanwhile
        return [Outcome(predictions=[job.request.payload]) for job in jobs]

    async def scenario() -> list[Outcome]:
        batcher = MicroBatcher(run_batch, max_rows=256, max_wait_s=0.002)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(row(0)))
        assert await asyncio.to_thread(started.wait, 10)  # the worker is predicting the first request
        rest = [asyncio.create_task(batcher.submit(row(i))) for i in range(1, 20)]
        while batcher._queue.qsize() < 19:  # each submit queues its request when it first runs
            await asyncio.sleep(0)
        release.set()
        outcomes = await asyncio.gather(first, *rest)
        await batcher.stop()
        return list(outcomes)

    outcomes = asyncio.run(scenario())
    assert [o.predictions for o in outcomes] == [[i] for i in range(20)]  # each request its own answer
    assert batches == [[0], list(range(1, 20))]  # two predict calls for twenty requests


def test_a_batch_stops_at_the_row_limit() -> None:
    batches: list[int] = []
    gate, started = threading.Event(), threading.Event()

    def run_batch(jobs: list[Job]) -> list[Outcome]:
        batches.append(sum(job.rows for job in jobs))
        started.set()
        gate.wait(10)
        return [Outcome(predictions=[]) for _ in jobs]

    async def scenario() -> None:
        batcher = MicroBatcher(run_batch, max_rows=10, max_wait_s=0.0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(Request("inputs", [i] * 4, None, 4, ("inputs",)))) for i in range(6)]
        assert await asyncio.to_thread(started.wait, 10)
        gate.set()
        await asyncio.gather(*tasks)
        await batcher.stop()

    asyncio.run(scenario())
    assert batches == [8, 8, 8]  # a third request of 4 rows would pass the limit of 10: it opens the next batch


# --- a real model ----------------------------------------------------------------------------

class RecordingObserver:
    """Keeps what the server hands it, as a real store would; ids are row numbers."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, pd.DataFrame, list[Any]]] = []
        self.labels: dict[str, Any] = {}

    def record_predictions(self, model_version: str, inputs: pd.DataFrame, predictions: Sequence[Any]) -> list[str]:
        start = sum(len(b[2]) for b in self.batches)
        self.batches.append((model_version, inputs, list(predictions)))
        return [f"p{start + i}" for i in range(len(predictions))]

    def record_feedback(self, labels: Mapping[str, Any]) -> int:
        known = {k: v for k, v in labels.items() if k.startswith("p")}
        self.labels.update(known)
        return len(known)

    def state(self) -> Mapping[str, float]:
        return {"drift_detections": 2.0, "feedback labels": float(len(self.labels))}

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(LogisticRegression(max_iter=200).fit(x[:300], y[:300]), str(path))
    pyfunc = mlflow.pyfunc.load_model(str(path))
    return LoadedModel(name="m", version="7", run_id="r", tags={"mlchain.commit": "c" * 40}, pyfunc=pyfunc,
                       spec=input_spec(pyfunc), loaded_at=time.time())


def test_the_input_spec_comes_from_the_raw_model(sklearn_model: LoadedModel) -> None:
    assert sklearn_model.spec == InputSpec(n_features=64, numeric=True)


def test_a_bad_request_fails_alone_and_its_batch_mates_are_answered(sklearn_model: LoadedModel) -> None:
    from sklearn.datasets import load_digits

    x = load_digits().data[:5]
    expected = sklearn_model.pyfunc.predict(x).tolist()
    observer = RecordingObserver()
    errors: list[str] = []
    predictor = BatchPredictor(ModelHolder(Target("m"), current=sklearn_model), observer, on_error=errors.append)
    bad = x[:1].tolist()
    bad[0][0] = float("nan")  # same shape, so it joins the batch; the model refuses it
    loop = asyncio.new_event_loop()
    jobs = [Job(Request("instances", part, None, len(part), ("instances",)), loop.create_future())
            for part in (x[:2].tolist(), bad, x[2:5].tolist())]
    outcomes = predictor(jobs)
    good = predictor([Job(Request("instances", part, None, len(part), ("instances",)), loop.create_future())
                      for part in (x[:2].tolist(), x[2:5].tolist())])
    loop.close()
    assert [o.predictions for o in good] == [expected[:2], expected[2:5]]
    assert [o.status for o in outcomes] == [200, 400, 200]
    assert outcomes[0].predictions == expected[:2] and outcomes[2].predictions == expected[2:5]
    assert outcomes[1].error is not None and "NaN" in outcomes[1].error
    assert errors == ["bad_input"]
    assert outcomes[0].ids == ["p0", "p1"] and outcomes[2].ids == ["p2", "p3", "p4"]
    assert [(v, len(frame), preds) for v, frame, preds in observer.batches] == \
           [("7", 2, expected[:2]), ("7", 3, expected[2:5]), ("7", 5, expected)]  # the good batch: one call


def test_the_app_answers_predictions_with_ids_and_exports_the_observers_state(sklearn_model: LoadedModel) -> None:
    from starlette.testclient import TestClient

    from mlchain.serving.app import ServeOptions, create_app

    observer = RecordingObserver()
    holder = ModelHolder(Target("m"), current=sklearn_model)
    row = [float(v) for v in range(64)]
    with TestClient(create_app(holder, observer, ServeOptions())) as http:
        answer = http.post("/invocations", json={"instances": [row, row]})
        assert answer.status_code == 200 and answer.headers["mlchain-model-version"] == "7"
        assert answer.json()["ids"] == ["p0", "p1"]
        assert answer.json()["predictions"] == sklearn_model.pyfunc.predict(np.array([row, row])).tolist()
        feedback = http.post("/feedback", json={"labels": {"p0": 4, "unknown": 1}})
        assert feedback.json() == {"accepted": 1} and observer.labels == {"p0": 4}
        too_big = http.post("/invocations", content=b"x" * 10, headers={"content-length": str(10**9)})
        assert too_big.status_code == 413
        about = http.get("/version").json()
        assert about["version"] == "7" and about["commit"] == "c" * 40 and about["load_error"] is None
        metrics = http.get("/metrics").text
    assert "drift_detections 2.0" in metrics and "feedback_labels 1.0" in metrics
    assert 'mlchain_serve_requests_total{route="/invocations",status="200"} 1.0' in metrics
    assert "mlchain_serve_batch_rows_sum 2.0" in metrics and "mlchain_serve_model_version 7.0" in metrics


def test_with_no_model_yet_the_server_says_so(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from mlchain.serving.app import ServeOptions, create_app

    with TestClient(create_app(ModelHolder(Target("m")), RecordingObserver(), ServeOptions())) as http:
        assert http.get("/ping").status_code == 503
        answer = http.post("/invocations", json={"instances": [[1]]})
        assert answer.status_code == 503 and "models:/m@champion" in answer.json()["message"]


@pytest.mark.slow
def test_a_keras_model_is_batched_by_its_row_shape(tmp_path: Path) -> None:
    import keras
    import mlflow.keras
    import mlflow.pyfunc

    from mlchain.serving.observer_api import NullObserver

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    mlflow.keras.save_model(model, str(tmp_path / "model"))
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    loaded = LoadedModel(name="k", version="1", run_id=None, tags={}, pyfunc=pyfunc, spec=input_spec(pyfunc),
                         loaded_at=time.time())
    assert loaded.spec == InputSpec(row_shape=(8, 8, 1), numeric=True)
    x = np.random.default_rng(0).random((3, 8, 8, 1))
    loop = asyncio.new_event_loop()
    predictor = BatchPredictor(ModelHolder(Target("k"), current=loaded), NullObserver())
    outcomes = predictor([Job(read_request(body({"instances": x[i:i + 1].tolist()}), None), loop.create_future())
                          for i in range(3)] +
                         [Job(read_request(body({"instances": [[1, 2, 3]]}), None), loop.create_future())])
    loop.close()
    assert [o.status for o in outcomes] == [200, 200, 200, 400]
    np.testing.assert_allclose([o.predictions[0] for o in outcomes[:3]], pyfunc.predict(x), rtol=1e-5)
    assert outcomes[3].error is not None and "rows of shape (8, 8, 1)" in outcomes[3].error


def test_rows_sent_with_column_names_are_kept_as_sent_and_watched(sklearn_model: LoadedModel,
                                                                   make_settings: Any) -> None:
    from starlette.testclient import TestClient

    from mlchain.serving.app import ServeOptions, create_app
    from mlchain.serving.drift import ERROR_STREAM, SUMMARY_STREAMS
    from mlchain.serving.observe import DriftObserver

    observer = DriftObserver(make_settings(retrain_via="off"), "m")
    columns = [f"pixel_{i}" for i in range(64)]
    row = [i / 3 for i in range(64)]  # every digit counts: 1/3 is not 0.333333333333333
    with TestClient(create_app(ModelHolder(Target("m"), current=sklearn_model), observer, ServeOptions())) as http:
        answers = [http.post("/invocations", json=payload).json() for payload in (
            {"dataframe_split": {"columns": columns, "data": [row]}},
            {"dataframe_records": [dict(zip(columns, row, strict=True))]},
            {"instances": [row]})]
        ids = [i for answer in answers for i in answer["ids"]]
        assert http.post("/feedback", json={"labels": dict.fromkeys(ids, 1)}).json() == {"accepted": 3}
        kept = {r.id: r.inputs for r in observer.store.labeled_since(0.0)}
        seen = observer.detectors.samples()
    assert kept[ids[0]] == dict(zip(columns, row, strict=True)) == kept[ids[1]]
    assert kept[ids[2]] == {str(i): v for i, v in enumerate(row)}  # a tensor's rows: named by position
    assert seen == {**dict.fromkeys(SUMMARY_STREAMS, 3), ERROR_STREAM: 3}
