"""mlchain installed from its wheel, not run from a checkout: it finds jobs/ and dockerfiles/
inside the package, and without the `server` extra it says which extra to install.

The wheel is built the way a user builds it (pip, with build isolation) and installed into a
new virtual environment with its own dependencies only (no extra). For the commands that need the server extra, that
environment borrows the test environment's third-party packages through a path file that is
appended after its own site-packages: the mlchain it imports is the installed wheel's
(asserted), so nothing comes from this checkout, and no package index is needed for mlflow & co.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from helpers import MODELS, ROOT

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)], ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("mlchain-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> dict[str, Path]:
    """A new virtual environment with only the wheel, and a copy that borrows the server extra."""
    base = tmp_path_factory.mktemp("venvs")
    envs = {}
    for name in ("bare", "server"):
        target = base / name
        venv.EnvBuilder(with_pip=False).create(target)
        site = Path(_run([str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         base).stdout.strip())
        # pip of the test environment installs into the new one: no pip needed inside it. The bare
        # one gets mlchain's own dependencies (click, pydantic, pyyaml) and nothing else.
        deps = [] if name == "bare" else ["--no-deps"]
        done = _run([sys.executable, "-m", "pip", "install", "-q", *deps, "--target", str(site), str(wheel)], base)
        assert done.returncode == 0, done.stderr[-3000:]
        envs[name] = target
    borrowed = sysconfig.get_path("purelib")
    server_site = next((envs["server"] / "lib").glob("python3*/site-packages"))
    (server_site / "zz_borrowed_server_extra.pth").write_text(borrowed + "\n")
    return envs


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCHAIN_", "PYTHONPATH"))}
    env["MLCHAIN_HOME"] = str(home)
    return env


def _mlchain(venv_dir: Path, *args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(venv_dir / "bin" / "python"), "-m", "mlchain.cli", *args], cwd, _env(home))


def test_the_wheel_carries_jobs_and_dockerfiles(installed: dict[str, Path], tmp_path: Path) -> None:
    code = ("import mlchain, mlchain.resources as r; "
            "print(mlchain.__file__); print(r.shipped('jobs')); print(r.shipped('dockerfiles'))")
    done = _run([str(installed["bare"] / "bin" / "python"), "-c", code], tmp_path, _env(tmp_path / "home"))
    assert done.returncode == 0, done.stderr
    module, jobs, dockerfiles = (Path(line) for line in done.stdout.split())
    assert module.is_relative_to(installed["bare"]), "mlchain must be the installed wheel, not the checkout"
    assert jobs == module.parent / "_shipped" / "jobs"
    assert sorted(p.name for p in jobs.glob("*.yaml")) == sorted(p.name for p in (ROOT / "jobs").glob("*.yaml"))
    assert (dockerfiles / "sklearn.Dockerfile").read_bytes() == (ROOT / "dockerfiles" / "sklearn.Dockerfile").read_bytes()


@pytest.mark.parametrize("args", [["run", "repo"], ["train", "repo"], ["serve"], ["images", "build"],
                                  ["jenkins", "render"]])
def test_without_the_server_extra_a_command_names_the_extra(installed: dict[str, Path], tmp_path: Path,
                                                             args: list[str]) -> None:
    shutil.copytree(MODELS / "digits_sklearn", tmp_path / "repo", ignore=shutil.ignore_patterns("mlchain-output"))
    done = _mlchain(installed["bare"], *args, cwd=tmp_path, home=tmp_path / "home")
    assert done.returncode == 16, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "pip install 'mlchain[server]'" in done.stderr


def test_the_installed_wheel_runs_the_chain(installed: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "digits_sklearn"
    shutil.copytree(MODELS / "digits_sklearn", repo, ignore=shutil.ignore_patterns("mlchain-output", "__pycache__"))
    home = tmp_path / "home"
    done = _mlchain(installed["server"], "run", str(repo), "--runner", "process", "--json", cwd=tmp_path, home=home)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "passed"
    assert summary["best"]["metric"] >= 0.8
    assert list((home / "outbox").glob("*.eml")), "the success email is in the outbox"


def test_the_installed_wheel_renders_the_jobs_the_checkout_renders(installed: dict[str, Path], tmp_path: Path) -> None:
    """From a folder that is no checkout, the wheel's own jobs/ give the same config.xml files."""
    rendered = {}
    for name, python in (("wheel", installed["server"] / "bin" / "python"), ("checkout", Path(sys.executable))):
        out = tmp_path / name
        env = _env(tmp_path / "home")
        if name == "checkout":
            env["PYTHONPATH"] = str(ROOT / "src")
        done = _run([str(python), "-m", "mlchain.cli", "jenkins", "render", "-o", str(out)], tmp_path, env)
        assert done.returncode == 0, done.stderr[-3000:]
        rendered[name] = {p.parent.name: p.read_bytes() for p in sorted(out.glob("*/config.xml"))}
    assert {"job1-pull", "job5-notify", "mlchain"} <= set(rendered["wheel"])
    assert rendered["wheel"] == rendered["checkout"]


@pytest.mark.docker
def test_the_installed_wheel_builds_the_images_the_checkout_builds(installed: dict[str, Path], tmp_path: Path) -> None:
    from docker_support import base_image, ca_bundle, require_docker

    require_docker()
    env_vars = {"MLCHAIN_BASE_IMAGE": base_image()}
    if (bundle := ca_bundle()) is not None:
        env_vars["MLCHAIN_BUILD_CA_BUNDLE"] = str(bundle)
    home = tmp_path / "home"
    tags = {}
    for name, python in (("wheel", installed["server"] / "bin" / "python"), ("checkout", Path(sys.executable))):
        env = {**_env(home), **env_vars}
        if name == "checkout":
            env["PYTHONPATH"] = str(ROOT / "src")
        done = _run([str(python), "-m", "mlchain.cli", "images", "build", "--framework", "sklearn"], tmp_path, env,
                    timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        tags[name] = done.stdout.strip().splitlines()[-1].split()[1]
    # Same inputs found from the wheel as from the checkout: the same content hash, one image.
    assert tags["wheel"] == tags["checkout"]
