"""`mlchain model serve` end to end: a model trained and registered by the chain in this module
(process runner, real MLflow SQLite store), served by the real CLI in a subprocess, spoken to over
real HTTP: the four input formats, malformed input, the swap to a new champion under a steady
stream of concurrent requests, and a version that fails to load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import pytest
from helpers import free_port, make_git_repo, wait_for

pytestmark = pytest.mark.slow

NAME = "digits"  # the registered model takes the repository's name
ROWS = 12


@dataclass
class Served:
    url: str
    settings: Any
    client: Any  # MlflowClient
    good_runs: list[str]  # the chain's trial runs, best first
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def version(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/version", timeout=10).json()

    def move_alias(self, version: str) -> None:
        self.client.set_registered_model_alias(NAME, "champion", version)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from mlflow.tracking import MlflowClient

    from mlchain.config import load_settings
    from mlchain.engine.chain import run_chain

    root = tmp_path_factory.mktemp("serve")
    settings = load_settings({"home": root / "home", "runner": "process"}, env={})
    repo = make_git_repo(root / NAME, example="digits_sklearn")
    summary = run_chain(settings, str(repo), ref="main", live=False)
    assert summary.registered is not None and summary.registered["champion"], summary.explain()
    client = MlflowClient(tracking_uri=settings.resolved_tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    best = summary.best.mlflow_run_id if summary.best else None
    runs = [best] + [t.mlflow_run_id for t in summary.trials if t.mlflow_run_id != best]

    port = free_port()
    log = root / "serve.log"
    env = {**os.environ, "MLCHAIN_SERVE_POLL_S": "0.2"}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "--home", str(settings.home), "model",
                                    "serve", NAME, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/ping", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 120, "the model server to answer /ping")
        yield Served(url, settings, client, [r for r in runs if r], log, process)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


def digits(rows: int = ROWS) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:rows].astype("float64")


def local_predictions(served: Served, version: str, x: np.ndarray) -> list[Any]:
    import mlflow.pyfunc

    uri = served.client.get_model_version_download_uri(NAME, version)
    return mlflow.pyfunc.load_model(uri).predict(x).tolist()


def invoke(url: str, body: Any, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{url}/invocations", content=content, headers={"content-type": content_type}, timeout=30)


def test_the_four_formats_predict_as_mlflow_itself_does(served: Served) -> None:
    x = digits()
    version = served.version()["version"]
    expected = local_predictions(served, version, x)
    columns = [f"pixel_{i}" for i in range(x.shape[1])]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": x.tolist()}},
        "dataframe_records": {"dataframe_records": [dict(zip(columns, row, strict=True)) for row in x.tolist()]},
        "instances": {"instances": x.tolist()},
        "inputs": {"inputs": x.tolist()},
    }
    seen_ids: set[str] = set()
    for fmt, body in bodies.items():
        response = invoke(served.url, body)
        assert response.status_code == 200, (fmt, response.text)
        answer = response.json()
        assert answer["predictions"] == expected, fmt
        assert response.headers["mlchain-model-version"] == version
        assert len(answer["ids"]) == ROWS and len(set(answer["ids"]) | seen_ids) == len(seen_ids) + ROWS
        seen_ids |= set(answer["ids"])
    csv = ",".join(columns) + "\n" + "\n".join(",".join(map(str, row)) for row in x.tolist())
    response = invoke(served.url, csv, content_type="text/csv")
    assert response.status_code == 200 and response.json()["predictions"] == expected


def test_version_names_the_run_repository_and_commit(served: Served) -> None:
    about = served.version()
    record = served.client.get_model_version(NAME, about["version"])
    run = served.client.get_run(record.run_id)
    assert about["run_id"] == record.run_id
    assert about["commit"] == run.data.tags["mlchain.commit"] and len(about["commit"]) == 40
    assert about["repository"] == run.data.tags["mlchain.remote"] and about["repository"].endswith(f"/{NAME}")
    assert about["target"] == f"models:/{NAME}@champion" and about["load_error"] is None


ROW = [0.0] * 64
MALFORMED = [
    ("not json", b"{rows: 1", "application/json", 400, "not valid JSON"),
    ("a list", b"[[1, 2]]", "application/json", 400, "not an object"),
    ("unknown format key", {"rows": [ROW]}, "application/json", 400, "unknown key(s) 'rows'"),
    ("two format keys", {"instances": [ROW], "inputs": [ROW]}, "application/json", 400, "exactly one"),
    ("wrong shape", {"instances": [[1, 2, 3]]}, "application/json", 400, "shape (3,)"),
    ("ragged rows", {"inputs": [ROW, [1]]}, "application/json", 400, "inhomogeneous"),
    ("wrong columns", {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}, "application/json", 400,
     "2 column(s), but the model takes 64"),
    ("columns and data disagree", {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}},
     "application/json", 400, "1 columns passed"),
    ("text values", {"dataframe_records": [{f"c{i}": "x" for i in range(64)}]}, "application/json", 400,
     "takes numbers only"),
    ("no rows", {"instances": []}, "application/json", 400, "no rows"),
    ("bad params", {"instances": [ROW], "params": [1]}, "application/json", 400, "'params' must be"),
    ("not utf-8", b'{"instances": "\xff"}', "application/json", 400, "UTF-8"),
    ("form body", b"a=1", "application/x-www-form-urlencoded", 415, "application/json"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "fragment"),
                         [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_input_gets_a_4xx_saying_what_was_wrong(served: Served, body: Any, content_type: str,
                                                         status: int, fragment: str) -> None:
    response = invoke(served.url, body, content_type)
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"]
    assert invoke(served.url, {"instances": [ROW]}).status_code == 200  # and the server goes on


def test_feedback_route_answers_how_many_labels_were_accepted(served: Served) -> None:
    ids = invoke(served.url, {"instances": [ROW]}).json()["ids"]
    response = httpx.post(f"{served.url}/feedback", json={"labels": {ids[0]: 3}}, timeout=10)
    assert response.status_code == 200 and response.json() == {"accepted": 1}  # the server keeps its rows
    unknown = httpx.post(f"{served.url}/feedback", json={"labels": {"0" * 32: 3}}, timeout=10)
    assert unknown.status_code == 200 and unknown.json() == {"accepted": 0}  # never served: not accepted
    bad = httpx.post(f"{served.url}/feedback", json={"ids": ids}, timeout=10)
    assert bad.status_code == 400 and "labels" in bad.json()["message"]


class Load:
    """Clients that each send one-row requests back to back until stopped, keeping every answer."""

    def __init__(self, url: str, clients: int, x: np.ndarray) -> None:
        self.url, self.x = url, x
        self.answers: list[list[tuple[int, str | None, Any]]] = [[] for _ in range(clients)]
        self.sent = [0] * clients
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                row = self.x[n % len(self.x)]
                self.sent[index] += 1
                try:
                    r = http.post(f"{self.url}/invocations", json={"instances": [row.tolist()]})
                    body = r.json()
                    self.answers[index].append((r.status_code, r.headers.get("mlchain-model-version"),
                                                (n % len(self.x), body.get("predictions"))))
                except httpx.HTTPError as exc:  # a dropped connection is a lost request
                    self.answers[index].append((-1, None, repr(exc)))
                n += 1

    def count(self, version: str) -> int:
        return min(sum(1 for _, v, _ in answers if v == version) for answers in self.answers)

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_a_new_champion_is_swapped_in_under_load_losing_no_request(served: Served) -> None:
    x = digits(32)
    old = served.version()["version"]
    # the new champion: another trial's model, whose predictions differ from the old one's
    new = str(served.client.create_model_version(
        NAME, f"{served.client.get_run(served.good_runs[-1]).info.artifact_uri}/model",
        run_id=served.good_runs[-1]).version)
    expected = {old: local_predictions(served, old, x), new: local_predictions(served, new, x)}
    assert expected[old] != expected[new]
    with Load(served.url, clients=8, x=x) as load:
        wait_for(lambda: load.count(old) >= 10, 60, "every client to be answered by the old version")
        served.move_alias(new)
        wait_for(lambda: served.version()["version"] == new, 60, "/version to name the new champion")
        wait_for(lambda: load.count(new) >= 10, 60, "every client to be answered by the new version")
    for index, answers in enumerate(load.answers):
        assert len(answers) == load.sent[index]  # every request sent was answered
        assert all(status == 200 for status, _, _ in answers), [a for a in answers if a[0] != 200][:3]
        versions = [v for _, v, _ in answers]
        first_new = versions.index(new)
        assert set(versions[:first_new]) == {old} and set(versions[first_new:]) == {new}  # one switch, for good
        for _, version, (row, predictions) in answers:
            assert predictions == [expected[str(version)][row]]  # each answer is that version's own
    metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert f'mlchain_serve_model_version {float(new)}' in metrics
    assert 'mlchain_serve_requests_total{route="/invocations",status="500"}' not in metrics


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(served: Served, tmp_path: Path) -> None:
    serving = served.version()["version"]
    source = served.client.get_model_version_download_uri(NAME, serving).removeprefix("file://")
    broken = tmp_path / "broken-model"
    shutil.copytree(source, broken)
    for path in broken.iterdir():  # the MLmodel file names the serialized model, which is gone
        if path.name != "MLmodel" and path.is_file():
            path.unlink()
    bad = str(served.client.create_model_version(NAME, broken.as_uri(), run_id=served.good_runs[0]).version)
    served.move_alias(bad)
    about = wait_for(lambda: (v := served.version())["load_error"] and v, 60, "/version to report the failure")
    assert about["version"] == serving and about["load_error"]["version"] == bad
    assert f"models:/{NAME}/{bad} could not be loaded" in about["load_error"]["reason"]
    response = invoke(served.url, {"instances": [ROW]})
    assert response.status_code == 200 and response.headers["mlchain-model-version"] == serving
    metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert "mlchain_serve_model_load_failed 1.0" in metrics
    assert "mlchain_serve_model_load_failures_total 1.0" in metrics
    assert f"could not load {NAME} version {bad}" in served.log.read_text()
    served.move_alias(serving)  # the alias moves back: the failure is cleared
    wait_for(lambda: served.version()["load_error"] is None, 60, "the failure to clear")
    assert "mlchain_serve_model_load_failed 0.0" in httpx.get(f"{served.url}/metrics", timeout=10).text


def test_with_wait_the_server_starts_before_the_model_exists_and_loads_it_when_it_appears(served: Served) -> None:
    later = "digits-later"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = served.log.with_name("serve-wait.log")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "--home", str(served.settings.home), "model",
                                    "serve", later, "--port", str(port), "--poll-s", "0.2", "--wait"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        def status() -> int:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/ping", timeout=2).status_code
            except httpx.TransportError:
                return 0

        assert wait_for(status, 120, "the waiting server to answer") == 503
        answer = invoke(url, {"instances": [ROW]})
        assert answer.status_code == 503 and f"models:/{later}@champion" in answer.json()["message"]
        source = f"{served.client.get_run(served.good_runs[0]).info.artifact_uri}/model"
        served.client.create_registered_model(later)
        version = str(served.client.create_model_version(later, source, run_id=served.good_runs[0]).version)
        served.client.set_registered_model_alias(later, "champion", version)
        wait_for(lambda: status() == 200, 60, "the server to load the new model")
        answer = invoke(url, {"instances": [ROW]})
        assert answer.status_code == 200 and answer.headers["mlchain-model-version"] == version
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def test_a_model_that_does_not_exist_ends_the_command_with_its_reason(served: Served) -> None:
    done = subprocess.run([sys.executable, "-m", "mlchain.cli", "--home", str(served.settings.home), "model",
                           "serve", "no-such-model", "--port", str(free_port())],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    assert "models:/no-such-model@champion does not exist" in done.stderr and "fix:" in done.stderr
    assert "Traceback" not in done.stderr
    both = subprocess.run([sys.executable, "-m", "mlchain.cli", "--home", str(served.settings.home), "model",
                           "serve", NAME, "--alias", "champion", "--version", "1"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert both.returncode == 3 and "--alias and --version" in both.stderr


def test_a_champion_on_an_mlflow_server_is_served_as_the_compose_service_does(tmp_path: Path) -> None:
    """The team stack's path: the registry and the artifacts behind `mlflow server --serve-artifacts`
    (mlflow-artifacts:/ URIs), reached through MLFLOW_TRACKING_URI alone."""
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    mlflow_port, port = free_port(), free_port()
    tracking = f"http://127.0.0.1:{mlflow_port}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with (tmp_path / "mlflow.log").open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                   f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                                   str(tmp_path / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
                                   "--port", str(mlflow_port), "--workers", "1"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env)
    serving: subprocess.Popen[bytes] | None = None
    try:
        def mlflow_up() -> bool:
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()
            try:
                return httpx.get(f"{tracking}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(mlflow_up, 180, "the MLflow server")
        x, y = load_digits(return_X_y=True)
        mlflow.sklearn.save_model(LogisticRegression(max_iter=300).fit(x, y), str(tmp_path / "model"))
        client = MlflowClient(tracking_uri=tracking)
        run = client.create_run(client.create_experiment("team"), tags={"mlchain.commit": "a" * 40,
                                                                         "mlchain.remote": "https://git/team/digits"})
        client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        client.create_registered_model("team-digits")
        version = client.create_model_version("team-digits", f"{run.info.artifact_uri}/model",
                                              run_id=run.info.run_id).version
        client.set_registered_model_alias("team-digits", "champion", str(version))
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            serving = subprocess.Popen([sys.executable, "-m", "mlchain.cli", "--home", str(tmp_path / "home"),
                                        "model", "serve", "team-digits", "--port", str(port), "--wait"],
                                       stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
        url = f"http://127.0.0.1:{port}"

        def model_up() -> bool:
            assert serving is not None and serving.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/ping", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(model_up, 180, "the model server to load the champion from the MLflow server")
        about = httpx.get(f"{url}/version", timeout=10).json()
        assert about["version"] == str(version) and about["commit"] == "a" * 40
        assert about["repository"] == "https://git/team/digits"
        answer = invoke(url, {"instances": x[:5].tolist()})
        expected = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(x[:5]).tolist()
        assert answer.status_code == 200 and answer.json()["predictions"] == expected
    finally:
        for process in (serving, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
