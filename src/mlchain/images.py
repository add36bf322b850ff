"""The framework images training runs in: build them with the Docker SDK, cached by content.

An image is tagged ``{image_prefix}-{framework}:{hash}``, the hash a sha256 over
everything that goes into it (Dockerfile, requirements, mlchain's version and
source, the base image's name). An image with that tag already present is reused
and nothing is built, so a second ``mlchain images build`` with nothing changed
builds nothing. The training code is not part of the image (it is mounted at run
time), so pushing new training code never changes the tag.

The build context is assembled in a temporary folder. The CA bundle that lets pip
reach the package index through an intercepting proxy goes into the context but only
into the Dockerfiles' builder stages: the final stage copies installed files from
them, never the layer holding the CA, so no image layer, ENV or history entry of the
final image carries it (the classic builder of Docker 20.10, which the SDK drives,
has no BuildKit secrets).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlchain
from mlchain import resources
from mlchain.config import Settings
from mlchain.contract import FRAMEWORKS
from mlchain.errors import ImageBuildError

if TYPE_CHECKING:
    import docker

Echo = Callable[[str], None]

DOCKERFILES_DIR = "dockerfiles"
CA_NAME = "build-ca.pem"
MLCHAIN_REQUIREMENTS = "requirements-mlchain.txt"
HASH_LEN = 12
LOG_TAIL = 30
# Source files that are part of the image; caches and build leftovers are not.
IGNORED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", resources.SHIPPED_DIR.name}
IGNORED_SUFFIXES = {".pyc", ".pyo"}
DEFAULT_SOURCE_URL = "https://github.com/mlchain/mlchain"
DOCKER_TIMEOUT_S = 600  # pulling or building a cold TensorFlow layer outlasts the SDK's default


@dataclass(frozen=True)
class ImageRef:
    framework: str
    tag: str
    image_id: str
    cached: bool


@dataclass(frozen=True)
class BuildInputs:
    """What goes into one framework's image, as files and names."""

    framework: str
    dockerfile: Path
    requirements: Path
    pyproject: Path           # mlchain's, as the image installs it
    package_dir: Path         # the mlchain package's source folder
    base_image: str
    # The base's local image id when known: a rebuilt base (build-base-image.sh --force, a newer
    # python:3.11-slim) changes the tag even though its name did not change.
    base_image_id: str = ""

    @property
    def readme(self) -> Path:
        return self.pyproject.parent / "README.md"


# --- locating the inputs ------------------------------------------------------------

def build_inputs(settings: Settings, framework: str, root: Path | None = None,
                 client: docker.DockerClient | None = None) -> BuildInputs:
    """The inputs of one framework's image: from ``root`` (a checkout) when given, else from
    wherever mlchain runs (its checkout, or the copies an installed wheel carries)."""
    if framework not in FRAMEWORKS:
        raise ImageBuildError(f"unknown framework {framework!r}", hint=f"use one of: {', '.join(FRAMEWORKS)}")
    if root is not None:
        dockerfiles, pyproject, package_dir = root / DOCKERFILES_DIR, root / "pyproject.toml", root / "src" / "mlchain"
    else:
        dockerfiles, pyproject = resources.shipped(DOCKERFILES_DIR), resources.shipped("pyproject.toml")
        package_dir = resources.PACKAGE_DIR
    return BuildInputs(
        framework=framework,
        dockerfile=dockerfiles / f"{framework}.Dockerfile",
        requirements=dockerfiles / f"requirements-{framework}.txt",
        pyproject=pyproject,
        package_dir=package_dir,
        base_image=(base := resolve_base_image(settings, client)),
        base_image_id=_local_image_id(client, base) if client is not None else "",
    )


DEFAULT_BASE_IMAGE = "python:3.11-slim"
OFFLINE_BASE_IMAGE = "mlchain-base:bookworm"  # what scripts/build-base-image.sh tags


def resolve_base_image(settings: Settings, client: docker.DockerClient | None) -> str:
    """The configured base, except that the default one, when it is not on the engine (no
    registry reachable), gives way to the offline base built by scripts/build-base-image.sh."""
    if settings.base_image != DEFAULT_BASE_IMAGE or client is None:
        return settings.base_image
    if _local_image_id(client, DEFAULT_BASE_IMAGE) or not _local_image_id(client, OFFLINE_BASE_IMAGE):
        return settings.base_image
    return OFFLINE_BASE_IMAGE


def source_files(package_dir: Path) -> list[Path]:
    """mlchain's own files that go into the image, in a stable order."""
    files = []
    for path in sorted(package_dir.rglob("*")):
        rel = path.relative_to(package_dir)
        if path.is_file() and not IGNORED_PARTS & set(rel.parts) and path.suffix not in IGNORED_SUFFIXES:
            files.append(path)
    return files


def _pyproject(inputs: BuildInputs) -> dict[str, Any]:
    return tomllib.loads(inputs.pyproject.read_text())


def mlchain_requirements(inputs: BuildInputs) -> str:
    """mlchain's runtime dependencies, from pyproject: installed with the framework layer."""
    deps = _pyproject(inputs).get("project", {}).get("dependencies", [])
    return "".join(f"{dep}\n" for dep in deps)


def source_url(inputs: BuildInputs) -> str:
    urls = _pyproject(inputs).get("project", {}).get("urls", {})
    for key in ("Source", "Repository", "Homepage"):
        if key in urls:
            return str(urls[key])
    return DEFAULT_SOURCE_URL


# --- the tag -----------------------------------------------------------------------

def content_hash(inputs: BuildInputs) -> str:
    """sha256 over what goes into the image; each part is named so parts cannot run together."""
    digest = hashlib.sha256()

    def part(name: str, data: bytes) -> None:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)

    part("base_image", inputs.base_image.encode())
    part("base_image_id", inputs.base_image_id.encode())
    part("mlchain_version", mlchain.__version__.encode())
    part("Dockerfile", inputs.dockerfile.read_bytes())
    part("requirements", inputs.requirements.read_bytes())
    part("pyproject.toml", inputs.pyproject.read_bytes())
    for path in source_files(inputs.package_dir):
        part(f"src/{path.relative_to(inputs.package_dir.parent).as_posix()}", path.read_bytes())
    return digest.hexdigest()[:HASH_LEN]


def image_repo(settings: Settings, framework: str) -> str:
    return f"{settings.image_prefix}-{framework}"


def image_tag(settings: Settings, framework: str, root: Path | None = None,
              client: docker.DockerClient | None = None) -> str:
    inputs = build_inputs(settings, framework, root, client)
    return f"{image_repo(settings, framework)}:{content_hash(inputs)}"


# --- the build context ---------------------------------------------------------------

def assemble_context(inputs: BuildInputs, dest: Path, ca_bundle: Path | None) -> None:
    """Lay out the context the Dockerfiles expect (see the comment at their top)."""
    shutil.copyfile(inputs.dockerfile, dest / "Dockerfile")
    shutil.copyfile(inputs.requirements, dest / "requirements.txt")
    (dest / MLCHAIN_REQUIREMENTS).write_text(mlchain_requirements(inputs))
    # Always present (the Dockerfile COPYs it); empty means "no extra CA".
    ca_target = dest / CA_NAME
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise ImageBuildError(f"the build CA bundle {ca_bundle} does not exist",
                                  hint="point MLCHAIN_BUILD_CA_BUNDLE at a PEM file, or unset it")
        shutil.copyfile(ca_bundle, ca_target)
    else:
        ca_target.write_bytes(b"")
    pkg = dest / "mlchain"
    pkg.mkdir()
    shutil.copyfile(inputs.pyproject, pkg / "pyproject.toml")
    # pyproject names a readme; setuptools refuses to build without the file.
    (pkg / "README.md").write_bytes(inputs.readme.read_bytes() if inputs.readme.is_file() else b"mlchain\n")
    for path in source_files(inputs.package_dir):
        target = pkg / "src" / path.relative_to(inputs.package_dir.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def build_args(settings: Settings, inputs: BuildInputs) -> dict[str, str]:
    """Build arguments: names only, never the CA or a host path (those would show in history)."""
    return {
        "BASE_IMAGE": inputs.base_image,
        "MLCHAIN_VERSION": mlchain.__version__,
        "MLCHAIN_SOURCE": source_url(inputs),
    }


# --- docker -------------------------------------------------------------------------

def docker_client(timeout: int = DOCKER_TIMEOUT_S) -> docker.DockerClient:
    """A client whose timeout lets a cold framework layer build (RunnerUnavailable if none answers)."""
    from mlchain.dockerclient import docker_client as engine_client

    return engine_client(timeout=timeout)


def _local_image_id(client: docker.DockerClient, name: str) -> str:
    image = find_local_image(client, name)
    return str(image.id) if image is not None else ""


def find_local_image(client: docker.DockerClient, tag: str) -> Any | None:
    import docker

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _stream_lines(events: Iterable[dict[str, Any]], echo: Echo | None,
                  tail: deque[str]) -> Iterator[str]:
    """Echo the build's progress; yield each error the engine reports."""
    for event in events:
        text = event.get("stream") or event.get("status") or ""
        for line in str(text).splitlines():
            if line.strip():
                tail.append(line)
                if echo is not None:
                    echo(line)
        if "error" in event:
            message = str(event.get("errorDetail", {}).get("message") or event["error"]).strip()
            tail.append(message)
            yield message


def _failure_hint(inputs: BuildInputs, lines: Iterable[str]) -> str:
    text = "\n".join(lines).lower()
    # Table of symptom -> remedy; the first match wins.
    remedies = (
        (("certificate", "ssl"), ("pip could not verify the package index's certificate: set "
                                 "MLCHAIN_BUILD_CA_BUNDLE to the CA bundle your proxy uses (e.g. $PIP_CERT)")),
        (("pull access denied", "manifest unknown", "no such host", "repository does not exist"),
         (f"the base image {inputs.base_image} is not available locally and cannot be pulled: build one "
         "offline with `bash scripts/build-base-image.sh` and set MLCHAIN_BASE_IMAGE=mlchain-base:bookworm")),
        (("could not find a version", "no matching distribution", "resolutionimpossible"),
         f"a requirement in {inputs.requirements.name} cannot be installed for this base image's Python"),
        (("could not find bridge",),
         ("the Docker engine's bridge interface is gone (a second dockerd started with --bridge none "
         "deletes docker0): run `bash scripts/setup-docker.sh`, which recreates it")),
        (("temporary failure in name resolution", "connection refused", "max retries"),
         "the build cannot reach the package index: check the network of the Docker engine"),
    )
    for needles, remedy in remedies:
        if any(needle in text for needle in needles):
            return remedy
    return f"read the build log above; rebuild with `mlchain images build --framework {inputs.framework}`"


def _run_build(client: docker.DockerClient, context: Path, tag: str, args: dict[str, str],
               inputs: BuildInputs, echo: Echo | None) -> None:
    import docker

    tail: deque[str] = deque(maxlen=LOG_TAIL)
    try:
        events = client.api.build(path=str(context), tag=tag, buildargs=args, decode=True, rm=True,
                                  forcerm=True, pull=False, labels={"io.mlchain.hash": tag.rsplit(":", 1)[1]})
        errors = list(_stream_lines(events, echo, tail))
    except docker.errors.APIError as exc:
        errors = [str(exc.explanation or exc)]
        tail.append(errors[0])
    if errors:
        raise ImageBuildError(
            f"building {tag} failed: {errors[-1]}\n  last build lines:\n    " + "\n    ".join(tail),
            hint=_failure_hint(inputs, tail))


def build_image(settings: Settings, framework: str, echo: Echo | None = None,
                client: docker.DockerClient | None = None, force: bool = False) -> ImageRef:
    """Build one framework's image, or return the one already tagged with the same content hash."""
    client = client or docker_client()
    inputs = build_inputs(settings, framework, client=client)
    tag = f"{image_repo(settings, framework)}:{content_hash(inputs)}"
    existing = None if force else find_local_image(client, tag)
    if existing is not None:
        _tag_latest(existing, settings, framework)
        return ImageRef(framework, tag, str(existing.id), cached=True)
    if echo is not None:
        echo(f"building {tag} from {inputs.base_image}")
    with tempfile.TemporaryDirectory(prefix=f"mlchain-build-{framework}-") as tmp:
        context = Path(tmp)
        assemble_context(inputs, context, settings.build_ca_bundle)
        _run_build(client, context, tag, build_args(settings, inputs), inputs, echo)
    image = find_local_image(client, tag)
    if image is None:
        raise ImageBuildError(f"the build of {tag} ended without an image",
                              hint="rerun `mlchain images build`; check `docker images` and the engine's log")
    _tag_latest(image, settings, framework)
    return ImageRef(framework, tag, str(image.id), cached=False)


def _tag_latest(image: Any, settings: Settings, framework: str) -> None:
    image.tag(image_repo(settings, framework), "latest")


def build_images(settings: Settings, frameworks: list[str] | None = None, echo: Echo | None = None,
                 client: docker.DockerClient | None = None) -> list[ImageRef]:
    """Build (or find in cache) each framework's image; all frameworks when none are named."""
    client = client or docker_client()
    return [build_image(settings, fw, echo=echo, client=client) for fw in (frameworks or list(FRAMEWORKS))]


def ensure_image(settings: Settings, framework: str, echo: Echo | None = None,
                 client: docker.DockerClient | None = None) -> ImageRef:
    """The image job2 launches: built on first use, then found by its tag."""
    return build_image(settings, framework, echo=echo, client=client)
