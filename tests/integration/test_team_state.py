"""The team state, for real: PostgreSQL (Debian's), `mlflow server` on it with served artifacts,
Optuna's storage on it, and two chain runs at once from two MLCHAIN_HOMEs (two agents).

The test setup starts a throw-away PostgreSQL cluster (initdb/pg_ctl, as the `postgres` user
when run as root), creates the databases as the compose stack does (the same
jenkins/postgres/init-optuna.sql), and points each "agent" at the team URLs exactly as casc.yaml
points Jenkins builds (MLFLOW_TRACKING_URI, MLCHAIN_OPTUNA_STORAGE). The runs use the process
runner: what is shared is the state, not the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import free_port, make_git_repo, wait_for
from strictness import require

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "team-state-pw"
# The tuned baseline: one run of it beats the stock (weak on purpose) baseline of models/digits_sklearn.
TUNED = {"hidden_layers": 1, "hidden_units": 64, "alpha": 0.0001, "learning_rate": 0.005, "batch_size": 32,
         "epochs": 12, "seed": 0}


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class Postgres:
    def __init__(self, bindir: Path, root: Path, port: int, as_postgres: list[str]) -> None:
        self.bindir, self.root, self.port, self.as_postgres = bindir, root, port, as_postgres

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.as_postgres, str(self.bindir / tool), *args], capture_output=True, text=True,
                              check=False, timeout=180)
        assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stderr or done.stdout}"
        return done

    def sql(self, statement: str, database: str = "postgres") -> None:
        self.run("psql", "-v", "ON_ERROR_STOP=1", "-h", str(self.root / "sock"), "-p", str(self.port),
                 "-U", "postgres", "-d", database, "-c", statement)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://mlchain:{PASSWORD}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bindir = _postgres_bin()
    require(None if bindir else "PostgreSQL is not installed (apt-get install postgresql)")
    assert bindir is not None
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require("psycopg2 is not installed (pip install 'mlchain[team]')")
    # Not under pytest's tmp folder: its parents are private to root, and the cluster runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mlchain-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    cluster = Postgres(bindir, root, free_port(), as_postgres)
    subprocess.run([*as_postgres, "mkdir", "-p", str(root / "sock")], check=True)
    cluster.run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8")
    cluster.run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "120",
                "-o", f"-p {cluster.port} -k {root / 'sock'} -c listen_addresses=127.0.0.1", "start")
    try:
        # What the compose stack's postgres service does on its first start: the POSTGRES_USER
        # owning POSTGRES_DB (mlflow), then jenkins/postgres/init-optuna.sql.
        cluster.sql(f"CREATE ROLE mlchain LOGIN PASSWORD '{PASSWORD}'")
        cluster.sql("CREATE DATABASE mlflow OWNER mlchain")
        cluster.sql((ROOT / "jenkins" / "postgres" / "init-optuna.sql").read_text(encoding="utf-8"))
        yield cluster
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w",
                        "stop"], capture_output=True, check=False, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"mlflow server exited ({server.returncode}): {log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` as the compose stack's mlflow service runs it: PostgreSQL backend store,
    artifacts served by the server from its own folder (agents never see that folder)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCHAIN_", "MLFLOW_"))}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres.url("mlflow"),
             "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url, server, log), timeout=300, what="mlflow server on PostgreSQL", poll_s=0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _repo(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """models/digits_sklearn as its own git repository; ``params`` replaces its baseline."""
    repo = make_git_repo(dest, example="digits_sklearn")
    if params is not None:
        config = yaml.safe_load((repo / "mlchain.yaml").read_text())
        config["params"] = params
        (repo / "mlchain.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(["git", "-C", str(repo), "commit", "-qam", "tuned baseline"], check=True)
    return repo


def _node_variables() -> set[str]:
    casc = yaml.safe_load((ROOT / "jenkins" / "casc.yaml").read_text(encoding="utf-8"))
    [properties] = casc["jenkins"]["globalNodeProperties"]
    return {entry["key"] for entry in properties["envVars"]["env"]}


def _agent_env(home: Path, mlflow_url: str, postgres: Postgres) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCHAIN_", "MLFLOW_"))}
    # What casc.yaml gives every build (globalNodeProperties): the team's tracking and search.
    team = {"MLFLOW_TRACKING_URI": mlflow_url, "MLCHAIN_OPTUNA_STORAGE": postgres.url("optuna")}
    assert set(team) <= _node_variables(), "casc.yaml no longer points builds at the team's stores this way"
    env.update({"MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process", **team})
    return env


def _files_naming(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def run_two_agents_at_once(runs: list[tuple[Path, Path, list[str]]], mlflow_url: str,
                           postgres: Postgres) -> list[dict[str, Any]]:
    """Start `mlchain run` for each (home, repo, flags) at the same time; their JSON summaries."""
    started = []
    for home, repo, flags in runs:
        log = home.parent / f"{home.name}.log"
        home.mkdir(parents=True)
        with log.open("wb") as err:
            started.append((subprocess.Popen(
                [sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json", *flags],
                env=_agent_env(home, mlflow_url, postgres), stdout=subprocess.PIPE, stderr=err), log))
    summaries = []
    for (home, _, _), (process, log) in zip(runs, started, strict=True):
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, (f"agent run failed ({process.returncode}): {log.read_text()[-4000:]}\n"
                                         f"its summary: {out.decode(errors='replace')[-6000:]}")
        summaries.append(json.loads(out))
        # The database password is in the storage URL every build gets: it must not be written
        # anywhere an agent keeps (logs, state, emails) nor printed.
        assert PASSWORD not in out.decode() and PASSWORD not in log.read_text()
        assert _files_naming(home, PASSWORD) == []
    return summaries


def _client(mlflow_url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_url)


def _champion_is_the_best_version(mlflow_url: str, name: str) -> tuple[Any, list[Any]]:
    client = _client(mlflow_url)
    versions = client.search_model_versions(f"name='{name}'")
    champion = client.get_model_version_by_alias(name, "champion")
    return champion, versions


def test_two_repositories_of_one_name_trained_at_once_share_the_registry_and_the_better_is_champion(
        postgres: Postgres, mlflow_server: str, tmp_path: Path) -> None:
    # Two agents, two repositories (a fork and its upstream, say: one name), at the same time.
    tuned = _repo(tmp_path / "agent-a-src" / "digits_pair", TUNED)
    weak = _repo(tmp_path / "agent-b-src" / "digits_pair")
    flags = ["--threshold", "0.05", "--max-trials", "1"]
    a, b = run_two_agents_at_once([(tmp_path / "agent-a", tuned, flags), (tmp_path / "agent-b", weak, flags)],
                                  mlflow_server, postgres)
    assert a["status"] == b["status"] == "passed"
    metric_a, metric_b = a["best"]["metric"], b["best"]["metric"]
    assert metric_a > metric_b, "the tuned baseline should beat the weak one"
    champion, versions = _champion_is_the_best_version(mlflow_server, "digits_pair")
    assert len(versions) == 2, "both agents registered into the one registry"
    assert float(champion.tags["mlchain.metric_value"]) == pytest.approx(metric_a)
    assert champion.run_id == a["best"]["mlflow_run_id"]
    # The model went to the server's artifact store (served artifacts), where any agent finds it.
    model_files = [f.path for f in _client(mlflow_server).list_artifacts(champion.run_id, "model")]
    assert "model/MLmodel" in model_files, model_files


def test_one_repository_trained_by_two_agents_at_once_shares_the_study_and_the_registry(
        postgres: Postgres, mlflow_server: str, tmp_path: Path) -> None:
    import optuna

    # The same repository (one URL), two agents: the baseline fails the gate, each run asks the
    # one study on PostgreSQL for its next trial, which passes.
    repo = _repo(tmp_path / "upstream" / "digits_team")
    flags = ["--threshold", "0.5", "--max-trials", "3"]
    a, b = run_two_agents_at_once([(tmp_path / "agent-a", repo, flags), (tmp_path / "agent-b", repo, flags)],
                                  mlflow_server, postgres)
    assert a["status"] == b["status"] == "passed", (a.get("stop_reason"), b.get("stop_reason"))
    study = optuna.load_study(study_name="mlchain:digits_team@main", storage=postgres.url("optuna"))
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    asked_by_runs = len(a["trials"]) - 1 + len(b["trials"]) - 1
    assert asked_by_runs >= 2 and len(told) >= asked_by_runs, "both agents' trials are in the one study"
    champion, versions = _champion_is_the_best_version(mlflow_server, "digits_team")
    assert len(versions) == 2
    best = max(float(v.tags["mlchain.metric_value"]) for v in versions)
    assert float(champion.tags["mlchain.metric_value"]) == best


def _open_storage_after(barrier: Any, url: str) -> str:
    """In a fresh process: wait for the others, then open Optuna's storage; the error, if any."""
    from mlchain import tweak

    barrier.wait(timeout=120)
    try:
        tweak.open_storage(url)
    except Exception as exc:  # noqa: BLE001 - reported by the test
        return f"{type(exc).__name__}: {exc}"
    return ""


def test_agents_opening_a_new_optuna_database_at_once_all_get_the_one_schema(postgres: Postgres) -> None:
    """The first builds against a new team database each create Optuna's schema; PostgreSQL lets
    one win (the others' CREATE TYPE fail): every agent must still get its storage."""
    import multiprocessing

    import optuna

    context = multiprocessing.get_context("spawn")  # fresh processes, as agents are
    agents = 4
    for round_ in range(3):
        database = f"optuna_race_{round_}"
        postgres.sql(f"CREATE DATABASE {database} OWNER mlchain")
        barrier = context.Manager().Barrier(agents)
        with context.Pool(agents) as pool:
            errors = pool.starmap(_open_storage_after, [(barrier, postgres.url(database))] * agents)
        assert errors == [""] * agents, errors
        study = optuna.create_study(study_name="after-the-race", storage=postgres.url(database))
        assert study.study_name == "after-the-race"


# --- agents registering at once (no server needed: the rule is the registry's) -------------------

def test_a_version_registered_while_another_agent_moves_the_alias_cannot_take_the_champion(
        make_settings: Any) -> None:
    """Agent A has created its version (0.9) and not yet moved the alias when agent B registers
    a worse one (0.5): B must not become champion (it would stay, were A's move lost or B last)."""
    from mlchain import tracking

    settings = make_settings()
    c = tracking.client(settings)
    experiment = tracking.experiment_id(c, settings, "digits_race")
    runs = [c.create_run(experiment).info.run_id for _ in range(3)]
    c.create_registered_model("digits_race")
    first = c.create_model_version("digits_race", f"{c.get_run(runs[0]).info.artifact_uri}/model", run_id=runs[0],
                                   tags={"mlchain.metric": "accuracy", tracking.METRIC_VALUE_TAG: "0.9"})
    worse = tracking.register_best(settings, "digits_race", runs[1], "accuracy", 0.5)
    assert worse["champion"] is False
    assert c.get_model_version_by_alias("digits_race", "champion").version == first.version
    better = tracking.register_best(settings, "digits_race", runs[2], "accuracy", 0.95)
    assert better["champion"] is True and better["previous_champion_metric"] == pytest.approx(0.9)
    assert int(c.get_model_version_by_alias("digits_race", "champion").version) == better["version"] == 3
