"""`data:` (and every path a repository names) stays inside the repository: a hostile
mlchain.yaml or symlink must not bind a host folder into the training container, copy host
files into the run, or create a folder on the host.

The container tests use the real Docker sandbox: the training lists what it was given as
its data folder and reads the host's secret file when it can."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_support import built_image, docker_settings, fresh_run_id, read_json, require_docker
from helpers import make_git_repo

from mlchain import trial as trials
from mlchain.config import load_settings
from mlchain.engine.jobs import BuildEnv, job_pull
from mlchain.errors import ConfigError
from mlchain.images import ImageRef
from mlchain.repo_config import load_repo_config, parse_repo_config
from mlchain.runners.docker import DockerRunner
from mlchain.state import StateStore

SECRET = "host-secret-7f3a"

LIST_DATA = """
import json, os
data = os.environ["MLCHAIN_DATA_DIR"]
seen = {"files": sorted(os.listdir(data)), "secret": None, "rows": None}
for name in ("secret.txt", "rows.csv"):
    path = os.path.join(data, name)
    if os.path.isfile(path):
        seen["secret" if name == "secret.txt" else "rows"] = open(path).read()
json.dump(seen, open(os.path.join(os.environ["MLCHAIN_OUTPUT_DIR"], "seen.json"), "w"))
"""


@pytest.fixture(scope="module")
def sklearn_image() -> ImageRef:
    require_docker()
    return built_image("sklearn")


@pytest.fixture()
def run_id() -> Iterator[str]:
    with fresh_run_id(require_docker()) as rid:
        yield rid


@pytest.fixture()
def host(tmp_path: Path) -> Path:
    """A host folder outside the repository, holding a secret."""
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


def hostile_repo(tmp_path: Path, host: Path, case: str) -> Path:
    """A repository whose data: points out of it (``case`` names how)."""
    repo = tmp_path / "host" / "repos" / "r"  # `..` twice from here is the host folder
    repo.mkdir(parents=True)
    (repo / "train.py").write_text(LIST_DATA)
    data = {
        "absolute": str(host),
        "climb": "../..",
        "climb-inside-path": "sub/../../../",
        "symlink": "data",
        "symlink-in-path": "inner/host",
        "missing": "not/there/yet",
    }[case]
    if case == "symlink":
        (repo / "data").symlink_to(host)
    if case == "symlink-in-path":
        (repo / "inner").symlink_to(host.parent)  # inner/host is the host folder
    (repo / "mlchain.yaml").write_text(f"data: {data!r}\n")
    return repo


CASES = ["absolute", "climb", "climb-inside-path", "symlink", "symlink-in-path", "missing"]


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES)
def test_data_outside_the_repository_never_reaches_the_container(tmp_path: Path, host: Path, case: str,
                                                                  run_id: str, sklearn_image: ImageRef) -> None:
    repo = hostile_repo(tmp_path, host, case)
    settings = docker_settings(tmp_path / "home")
    try:
        cfg = load_repo_config(repo)
        spec = trials.make_spec(settings, run_id=run_id, trial=1, framework="sklearn", repo_dir=repo, cfg=cfg,
                                params={}, image=sklearn_image.tag)
    except ConfigError as exc:
        refused, seen = str(exc), None
    else:  # the old behaviour: the folder is bind-mounted and the training reads it
        handle = DockerRunner(settings).start(spec)
        handle.wait(timeout=120)
        refused, seen = "", read_json(spec.output_dir / "seen.json")
    assert seen is None or seen["secret"] != SECRET, f"the container read the host's secret: {seen}"
    assert "data:" in refused and ("outside the repository" in refused or "inside the repository" in refused
                                   or "is not a folder in the repository" in refused), refused
    assert not (repo / "not").exists(), "a missing data: path was created on the host"


@pytest.mark.docker
def test_data_inside_the_repository_is_mounted_through_an_inner_symlink(tmp_path: Path, run_id: str,
                                                                        sklearn_image: ImageRef) -> None:
    repo = make_git_repo(tmp_path / "repo", files={"train.py": LIST_DATA, "mlchain.yaml": "data: datasets/current\n",
                                                    "datasets/v2/rows.csv": "x,y\n1,2\n"})
    (repo / "datasets" / "current").symlink_to("v2")
    settings = docker_settings(tmp_path / "home")
    cfg = load_repo_config(repo)
    spec = trials.make_spec(settings, run_id=run_id, trial=1, framework="sklearn", repo_dir=repo, cfg=cfg,
                            params={}, image=sklearn_image.tag)
    assert spec.data_dir == (repo / "datasets" / "v2").resolve()
    handle = DockerRunner(settings).start(spec)
    handle.wait(timeout=120)  # it reports no metric: only what it saw matters here
    assert read_json(spec.output_dir / "seen.json") == {"files": ["rows.csv"], "secret": None, "rows": "x,y\n1,2\n"}


@pytest.mark.parametrize("data", ["/etc", "../../..", "a/../../b", "..", "/", "~root", "x\x00y"])
def test_data_must_be_a_relative_path_inside(data: str) -> None:
    text = f"data: {data!r}\n".replace("'x\\x00y'", '"x\\0y"')
    if data == "~root":  # not a climb: a folder literally named ~root, which must then exist
        assert parse_repo_config(text).data == "~root"
        return
    with pytest.raises(ConfigError, match="data"):
        parse_repo_config(text)


def test_job1_keeps_repository_symlinks_as_links_and_refuses_data_through_one(tmp_path: Path, host: Path) -> None:
    """job1 copies the checkout into the run: a symlink to a host folder must not become a copy
    of that folder (it would be mounted into the container), and data: through it is refused."""
    repo = make_git_repo(tmp_path / "repo", files={"train.py": "print(1)\n", "mlchain.yaml": "data: data\n"})
    (repo / "data").symlink_to(host)
    (repo / "notes").symlink_to(host)
    settings = load_settings({"home": tmp_path / "home", "runner": "process"}, env={})
    env = BuildEnv({"WORKSPACE": str(repo), "RUN_ID": "r1", "REPO_URL": repo.as_uri(), "JOB_NAME": "job1-pull"})
    with pytest.raises(ConfigError, match="outside the repository"):
        job_pull(settings, env, lambda _l: None)
    copies = [p for p in settings.runs_dir.rglob("secret.txt") if not any(q.is_symlink() for q in p.parents)]
    assert copies == [], "host files were copied into the run"
    src = settings.runs_dir / "r1" / "src"
    assert os.readlink(src / "notes") == str(host)
    run = StateStore(settings.state_db).get_run("r1")
    assert run.status == "failed" and "outside the repository" in run.stop_reason


def test_a_symlinked_mlchain_yaml_pointing_out_is_not_read(tmp_path: Path, host: Path) -> None:
    (host / "config.toml").write_text(f"smtp_password = '{SECRET}'\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "mlchain.yaml").symlink_to(host / "config.toml")
    with pytest.raises(ConfigError) as caught:
        load_repo_config(repo)
    assert "outside the repository" in str(caught.value) and SECRET not in str(caught.value)


def test_missing_data_is_refused_before_anything_is_created(tmp_path: Path, make_settings: Any) -> None:
    repo = make_git_repo(tmp_path / "repo", files={"train.py": "print(1)\n", "mlchain.yaml": "data: a/b\n"})
    with pytest.raises(ConfigError, match="is not a folder in the repository"):
        cfg = parse_repo_config("data: a/b\n")
        trials.make_spec(make_settings(), run_id="r", trial=1, framework="sklearn", repo_dir=repo, cfg=cfg,
                         params={})
    assert not (repo / "a").exists()
