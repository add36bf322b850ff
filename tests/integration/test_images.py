"""The framework images, built for real: cached by content, non-root, labelled, and free of the build CA."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from docker_support import (
    ROOT,
    NoBuildClient,
    built_image,
    ca_bundle,
    docker_settings,
    make_spec,
    read_json,
)

from mlchain.errors import ImageBuildError
from mlchain.images import ImageRef, build_image, build_images, build_inputs, content_hash, image_tag
from mlchain.runners.docker import DockerRunner

pytestmark = pytest.mark.docker


OCI_LABELS = ("org.opencontainers.image.title", "org.opencontainers.image.description",
              "org.opencontainers.image.version", "org.opencontainers.image.source",
              "org.opencontainers.image.licenses", "io.mlchain.framework")
# Walks the image's filesystem for the build's CA file or the folder it was copied to.
FIND_CA = ("import os; print([os.path.join(r, n) for r, ds, fs in os.walk('/') "
           "if not r.startswith(('/proc', '/sys', '/dev')) for n in ds + fs "
           "if n in ('build-ca.pem', 'build') and r in ('/', '/tmp') or n == 'build-ca.pem'])")
PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?\n-----END CERTIFICATE-----", re.DOTALL)


def run_in_image(client: Any, image: str, *command: str) -> str:
    """Run a command in the image (entrypoint replaced), no network; its output."""
    out = client.containers.run(image, list(command[1:]), entrypoint=command[0], remove=True,
                                network_mode="none", stdout=True, stderr=True)
    return bytes(out).decode()


def test_second_build_with_nothing_changed_builds_nothing(docker_client: Any, tmp_path: Path) -> None:
    settings = docker_settings(tmp_path)
    first = build_images(settings, ["sklearn"], client=docker_client)   # built or found: now present
    guarded = NoBuildClient(docker_client)
    started = time.monotonic()
    refs = build_images(settings, ["sklearn"], client=guarded)
    elapsed = time.monotonic() - started
    assert guarded.api.build_calls == 0
    assert [(r.tag, r.image_id, r.cached) for r in refs] == [(first[0].tag, first[0].image_id, True)]
    assert elapsed < 10, f"a cached build took {elapsed:.1f} s"
    assert docker_client.images.get("mlchain-sklearn:latest").id == first[0].image_id


def test_image_is_non_root_labelled_and_starts_training(sklearn_image: ImageRef, docker_client: Any) -> None:
    attrs = docker_client.images.get(sklearn_image.tag).attrs
    config = attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mlchain-train"]
    labels = config["Labels"]
    for label in OCI_LABELS:
        assert labels.get(label), f"missing label {label}"
    assert labels["io.mlchain.framework"] == "sklearn"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert run_in_image(docker_client, sklearn_image.tag, "id", "-u").strip() == "10001"
    versions = run_in_image(docker_client, sklearn_image.tag, "python", "-c",
                            "import sklearn, joblib, mlflow, mlchain.sdk; print(mlchain.__version__)")
    assert versions.strip() == labels["org.opencontainers.image.version"]


def test_final_image_holds_no_build_ca_nor_pip_settings(sklearn_image: ImageRef, docker_client: Any) -> None:
    image = docker_client.images.get(sklearn_image.tag)
    env = image.attrs["Config"]["Env"]
    assert not [e for e in env if e.startswith(("PIP_", "MLCHAIN_PIP_", "REQUESTS_CA", "SSL_CERT"))], env
    history = "\n".join(str(layer.get("CreatedBy", "")) for layer in image.history())
    for needle in ("build-ca.pem", "PIP_CERT", "MLCHAIN_PIP_INDEX_URL", "/tmp/build"):
        assert needle not in history, f"{needle!r} is in the final image's history"
    bundle = ca_bundle()
    if bundle is not None:
        assert str(bundle) not in history
    leftovers = run_in_image(docker_client, sklearn_image.tag, "python", "-c", FIND_CA)
    assert leftovers.strip() == "[]", f"a CA file was left in the image: {leftovers}"
    if bundle is None:
        return
    # The certificates only the build CA bundle has (the proxy's): no file of the image holds them.
    system = run_in_image(docker_client, sklearn_image.tag, "cat", "/etc/ssl/certs/ca-certificates.crt")
    extra = [pem for pem in PEM.findall(bundle.read_text()) if pem not in system]
    needles = [max(pem.splitlines()[1:-1], key=len).encode() for pem in extra]
    found = filesystem_holds(docker_client, sklearn_image.tag, needles)
    assert not found, f"the build CA is in the image ({found})"


def filesystem_holds(client: Any, image: str, needles: list[bytes]) -> list[str]:
    """Which needles some file of the image holds: one scan of the exported filesystem (a tar stream)."""
    if not needles:
        return []
    container = client.containers.create(image, entrypoint=["true"])
    keep = max(len(n) for n in needles)
    found: set[bytes] = set()
    try:
        tail = b""
        for chunk in container.export(chunk_size=1 << 20):
            window = tail + chunk
            found.update(n for n in needles if n in window)
            tail = window[-keep:]
    finally:
        container.remove(force=True)
    return sorted(n.decode() for n in found)


def _copy_project(dest: Path) -> Path:
    for name in ("pyproject.toml", "dockerfiles", "src/mlchain", "models"):
        source = ROOT / name
        target = dest / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return dest


def test_tag_follows_what_goes_into_the_image_not_the_training_code(tmp_path: Path) -> None:
    root = _copy_project(tmp_path / "project")
    settings = docker_settings(tmp_path)

    def tag() -> str:
        return content_hash(build_inputs(settings, "sklearn", root))

    before = tag()
    assert image_tag(settings, "sklearn") == f"mlchain-sklearn:{content_hash(build_inputs(settings, 'sklearn'))}"
    # Training code, in a repository or among the examples, is mounted at run time: no rebuild.
    (root / "models" / "digits_sklearn" / "train.py").write_text("print('changed')\n")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "train.py").write_text("print('a pushed repository')\n")
    assert tag() == before
    # A cache folder is not source either.
    (root / "src" / "mlchain" / "__pycache__").mkdir(exist_ok=True)
    (root / "src" / "mlchain" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert tag() == before
    # mlchain's own source, the requirements, the Dockerfile and the base image are inputs.
    changes = [
        lambda: (root / "src" / "mlchain" / "sdk.py").write_text("# changed\n", encoding="utf-8"),
        lambda: (root / "dockerfiles" / "requirements-sklearn.txt").write_text("scikit-learn\n"),
        lambda: (root / "dockerfiles" / "sklearn.Dockerfile").write_text("FROM scratch\n"),
    ]
    seen = {before}
    for change in changes:
        change()
        seen.add(tag())
    assert len(seen) == 1 + len(changes)
    other_base = content_hash(build_inputs(docker_settings(tmp_path, base_image="debian:bookworm"), "sklearn", root))
    assert other_base not in seen
    seen.add(other_base)
    # A base rebuilt under the same name (build-base-image.sh --force) is a different input too.
    rebuilt = build_inputs(settings, "sklearn", root)
    assert content_hash(replace(rebuilt, base_image_id="sha256:another")) not in seen


def test_missing_base_image_fails_with_what_to_do(tmp_path: Path, docker_client: Any) -> None:
    settings = docker_settings(tmp_path, base_image="mlchain-no-such-base:nope", image_prefix="mlchain-failtest")
    with pytest.raises(ImageBuildError, match="build-base-image.sh") as failure:
        build_image(settings, "sklearn", client=docker_client)
    assert failure.value.exit_code == 12
    assert "Step 2/" in str(failure.value)  # the last build lines are part of the message


@pytest.mark.slow
def test_keras_image_trains_the_digits_cnn(docker_client: Any, tmp_path: Path, run_id: str) -> None:
    """The keras image, built for real (minutes the first time), trains the example CNN and saves it."""
    ref = built_image("keras")
    labels = docker_client.images.get(ref.tag).attrs["Config"]["Labels"]
    assert labels["io.mlchain.framework"] == "keras"
    assert run_in_image(docker_client, ref.tag, "id", "-u").strip() == "10001"
    repo = ROOT / "models" / "digits_cnn"
    if not (repo / "train.py").is_file():
        pytest.skip("models/digits_cnn is not there yet")
    import yaml

    params = dict(yaml.safe_load((repo / "mlchain.yaml").read_text()).get("params", {}))
    params["epochs"] = 2
    spec = make_spec(tmp_path, run_id, repo, ref.tag, framework="keras", params=params)
    handle = DockerRunner(docker_settings(tmp_path)).start(spec)
    info = handle.wait(600)
    assert info.exit_code == 0, "\n".join(info.last_lines)
    assert "accuracy" in read_json(spec.output_dir / "metrics.json")
    assert (spec.output_dir / "model" / "MLmodel").is_file()
    assert handle.image == ref.tag and handle.image_id == ref.image_id
