"""A repository's own requirements, installed in a layer over its framework image.

``requirements.txt`` at the top of the repository (else ``[project] dependencies`` of its
pyproject.toml) is checked line by line (pure): a requirement is a name, extras, version
specifiers and an environment marker. What could make the build reach somewhere else (``-e``,
``-r``/``-c`` other files, ``--index-url`` and every other option, local paths, URLs and
``name @ url``) is refused with the line and the reason. The normalised requirements and the
framework image's id make the layer's tag, so a second run builds nothing.

The layer is built with network (pip, the configured CA bundle and index, as the framework
images are); training stays offline. Everything the framework image has installed is a pip
constraint at its installed version, so a requirement that would move one fails the build,
and the error names both sides (:func:`conflict_message`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import tomllib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlchain import resources
from mlchain.config import Settings
from mlchain.detect.requirements import normalise_dist
from mlchain.detect.rules import FAMILY
from mlchain.errors import ConfigError, ImageBuildError
from mlchain.images import CA_NAME, DOCKERFILES_DIR, HASH_LEN, ImageRef, _stream_lines, find_local_image

if TYPE_CHECKING:
    import docker

Echo = Callable[[str], None]

REQUIREMENTS_FILE = "requirements.txt"
PYPROJECT_FILE = "pyproject.toml"
LAYER_DOCKERFILE = "repo-layer.Dockerfile"
MAX_REQUIREMENTS_BYTES = 256 * 1024
LOG_LINES = 400
# The keras images carry TensorFlow's CPU build: a requirement of another build is that one.
TENSORFLOW_BUILDS = frozenset({"tensorflow", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos"})
RENAMED = {"sklearn": "scikit-learn"}  # the name people write, and the distribution it means

MARKER_WORDS = frozenset({
    "python_version", "python_full_version", "os_name", "sys_platform", "platform_release", "platform_system",
    "platform_version", "platform_machine", "platform_python_implementation", "implementation_name",
    "implementation_version", "extra", "and", "or", "in", "not",
})
_OP = r"(?:===|==|~=|!=|<=|>=|<|>)"
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*"
    r"(?P<extras>\[\s*[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\s*\])?\s*"
    rf"(?P<spec>\(?\s*{_OP}\s*{_VERSION}(?:\s*,\s*{_OP}\s*{_VERSION})*\s*\)?)?\s*"
    r"(?P<marker>;[A-Za-z0-9_\s.'\"<>=!(),~-]*)?$")


@dataclass(frozen=True)
class RepoRequirements:
    """A repository's requirements, checked and normalised (one line each, sorted)."""

    source: str  # requirements.txt or pyproject.toml
    lines: tuple[str, ...]
    where: dict[str, int]  # distribution -> line in the source (0: unknown)

    @property
    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)


def _refusal(line: str) -> str | None:
    """Why a requirement line is refused, or None when it is a plain requirement."""
    if line.startswith("-"):
        option = line.split()[0].split("=")[0]
        return (f"the option {option} is not allowed (mlchain installs named requirements from its configured "
                "index only: no editable installs, other files, indexes or links)")
    if "://" in line or re.search(r"\s@\s|^\S+@", line) or line.startswith(("git+", "hg+", "svn+", "bzr+")):
        return "a URL is not allowed: name the package and a version, it is installed from the package index"
    if line.startswith((".", "/", "~")) or "/" in line.split(";")[0] or "\\" in line \
            or line.endswith((".whl", ".tar.gz", ".zip")):
        return "a local path is not allowed: name the package and a version, it is installed from the package index"
    match = _REQUIREMENT.match(line)
    if match is None:
        return "not a requirement (write a name, optional [extras], version specifiers and a ; marker)"
    marker = re.sub(r"'[^']*'|\"[^\"]*\"", "", match.group("marker") or "")
    unknown = sorted(set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", marker)) - MARKER_WORDS)
    if unknown:
        return f"not an environment marker: {', '.join(unknown)} (PEP 508 markers name python_version, sys_platform ...)"
    return None


def normalise(line: str, framework: str) -> tuple[str, str]:
    """(distribution, normalised line): the name PEP 503 normalised, spaces dropped outside the marker;
    a TensorFlow build on a keras image becomes the image's CPU build."""
    match = _REQUIREMENT.match(line)
    assert match is not None
    name = normalise_dist(match.group("name"))
    name = RENAMED.get(name, name)
    if FAMILY.get(framework, framework) == "keras" and name in TENSORFLOW_BUILDS:
        name = "tensorflow-cpu"
    extras = re.sub(r"\s+", "", match.group("extras") or "").lower()
    spec = re.sub(r"[\s()]+", "", match.group("spec") or "")
    marker = match.group("marker") or ""
    return name, f"{name}{extras}{spec}" + (f" ; {marker[1:].strip()}" if marker.strip(";").strip() else "")


def parse_requirements(text: str, source: str, framework: str) -> RepoRequirements:
    """Check and normalise a requirements.txt (pure). Raises ConfigError listing every refused line."""
    problems: list[str] = []
    lines: set[str] = set()
    where: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        why = _refusal(line)
        if why is not None:
            problems.append(f"  {source}:{number}: {line[:120]!r}: {why}")
            continue
        name, normalised = normalise(line, framework)
        lines.add(normalised)
        where.setdefault(name, number)
    if problems:
        raise ConfigError(f"{source} has {len(problems)} line(s) mlchain will not install:\n" + "\n".join(problems),
                          hint="keep plain requirements (name, [extras], version, ; marker) in it; "
                               "packages come from the index mlchain is configured with")
    return RepoRequirements(source, tuple(sorted(lines)), where)


def parse_pyproject_dependencies(text: str, source: str, framework: str) -> RepoRequirements | None:
    """``[project] dependencies`` as requirements (pure); None when the file declares none."""
    try:
        project = tomllib.loads(text).get("project") or {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", hint=f"fix {source}, or remove it") from exc
    deps = project.get("dependencies") if isinstance(project, dict) else None
    if not deps:
        return None
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError(f"{source}: [project] dependencies must be a list of strings")
    return parse_requirements("\n".join(deps), f"{source} [project] dependencies", framework)


def read_repo_requirements(repo: Path, framework: str) -> RepoRequirements | None:
    """The repository's requirements (requirements.txt, else pyproject's), or None when it has none."""
    for name, parse in ((REQUIREMENTS_FILE, parse_requirements), (PYPROJECT_FILE, parse_pyproject_dependencies)):
        path = repo / name
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as fh:
            raw = fh.read(MAX_REQUIREMENTS_BYTES + 1)
        if len(raw) > MAX_REQUIREMENTS_BYTES:
            raise ConfigError(f"{name} is over {MAX_REQUIREMENTS_BYTES:,} bytes", hint=f"list requirements only in {name}")
        found = parse(raw.decode("utf-8", "replace"), name, framework)
        return found if found is not None and found.lines else None
    return None


def layer_hash(framework_image_id: str, requirements: RepoRequirements, dockerfile: bytes) -> str:
    digest = hashlib.sha256()
    for name, data in (("framework_image", framework_image_id.encode()), ("Dockerfile", dockerfile),
                       ("requirements", requirements.text.encode())):
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:HASH_LEN]


def unmet(requirements: RepoRequirements, installed: Mapping[str, str]) -> list[str]:
    """The requirements that ``installed`` (distribution -> version) does not satisfy (pure). A
    requirement with extras counts as unmet (what its extras pull in is not known here)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion

    versions = {normalise_dist(name): version for name, version in installed.items()}
    out = []
    for line in requirements.lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.append(line)
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue  # not for this Python or platform
        have = versions.get(normalise_dist(req.name))
        try:
            satisfied = have is not None and not req.extras and req.specifier.contains(have, prereleases=True)
        except InvalidVersion:
            satisfied = False
        if not satisfied:
            out.append(line)
    return out


# Run in a framework image: what it has installed (no network, as the training user).
LIST_INSTALLED = ("import importlib.metadata as m, json; "
                  "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
_INSTALLED: dict[str, dict[str, str]] = {}  # image id -> its distributions (an image never changes)


def installed_in_image(client: docker.DockerClient, image_id: str) -> dict[str, str]:
    if image_id not in _INSTALLED:
        out = client.containers.run(image_id, entrypoint="python", command=["-c", LIST_INSTALLED], remove=True,
                                    network_mode="none", user="10001:10001")
        _INSTALLED[image_id] = json.loads(out)
    return _INSTALLED[image_id]


def installed_here(requirements: RepoRequirements) -> dict[str, str]:
    """The versions, in the environment mlchain runs in (the process runner's), of the
    distributions ``requirements`` name (looked up by name: not every distribution is read)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    found = {}
    for line in requirements.lines:
        try:
            name = Requirement(line).name
        except InvalidRequirement:
            continue  # unmet() reports it
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


# --- what pip said ------------------------------------------------------------------

_REQUESTED = re.compile(r"The user requested (\(constraint\) )?(\S+)")
_DEPENDS = re.compile(r"^\s*(\S+ \S+) depends on (\S+)")
_NO_DIST = re.compile(r"No matching distribution found for (\S+)")


def conflict_message(log: Sequence[str], requirements: RepoRequirements, framework: str,
                     pins: dict[str, str]) -> tuple[str, str] | None:
    """(message, hint) for a build pip refused, from its output (pure); None when it was something else.

    ``pins`` maps a distribution to the framework image's own requirement line for it."""
    text = "\n".join(log)
    asked: list[str] = []
    pinned: list[str] = []
    depends: list[str] = []
    for line in log:
        match = _REQUESTED.search(line)
        if match:
            (pinned if match.group(1) else asked).append(match.group(2))
        match = _DEPENDS.match(line)
        if match:
            depends.append(f"{match.group(1)} needs {match.group(2)}")
    if ("ResolutionImpossible" in text or "conflicting dependencies" in text) and (asked or pinned or depends):
        def theirs(spec: str) -> str:
            name = normalise_dist(re.split(r"[<>=!~\[;]", spec, maxsplit=1)[0])
            line = requirements.where.get(name)
            return f"{requirements.source}:{line} asks for {spec}" if line else f"the repository asks for {spec}"

        def image(spec: str) -> str:
            name = normalise_dist(re.split(r"[<>=!~\[;]", spec, maxsplit=1)[0])
            pin = pins.get(name)
            return (f"the {framework} image has {spec}" + (f" (its pin: {pin} in requirements-{framework}.txt)"
                                                            if pin else ""))

        parts = [theirs(s) for s in asked] + [image(s) for s in pinned] + depends
        return ("the repository's requirements conflict with the " + framework + " image: " + "; ".join(parts),
                (f"change the requirement in {requirements.source} to allow the image's version (or drop it: the "
                 "image provides it), or pick another framework with framework: in mlchain.yaml"))
    match = _NO_DIST.search(text)
    if match:
        return ((f"{requirements.source}: no version of {match.group(1)} on the package index can be installed in "
                 f"the {framework} image (Python 3.11)"),
                f"check the name and the version of {match.group(1)} in {requirements.source}")
    return None


def framework_pins(framework: str) -> dict[str, str]:
    """The framework image's own requirement lines, by distribution."""
    path = resources.shipped(DOCKERFILES_DIR) / f"requirements-{framework}.txt"
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        match = _REQUIREMENT.match(line) if line else None
        if match:
            out[normalise_dist(match.group("name"))] = line
    return out


# --- the build ------------------------------------------------------------------------

def layer_repo(settings: Settings, framework: str) -> str:
    return f"{settings.image_prefix}-{framework}-repo"


def ensure_repo_image(settings: Settings, framework_image: ImageRef, repo: Path, echo: Echo | None = None,
                      client: docker.DockerClient | None = None) -> ImageRef | None:
    """The repository's layer over ``framework_image``: found by its tag, else built; None when the
    repository has no requirements, or the framework image satisfies all of them (training then runs
    in the framework image itself)."""
    requirements = read_repo_requirements(repo, framework_image.framework)
    if requirements is None:
        return None
    from mlchain.images import docker_client

    client = client or docker_client()
    if not unmet(requirements, installed_in_image(client, framework_image.image_id)):
        return None  # the framework image has all of it: no layer to build
    dockerfile = resources.shipped(DOCKERFILES_DIR) / LAYER_DOCKERFILE
    tag = f"{layer_repo(settings, framework_image.framework)}:" \
          f"{layer_hash(framework_image.image_id, requirements, dockerfile.read_bytes())}"
    existing = find_local_image(client, tag)
    if existing is not None:
        return ImageRef(framework_image.framework, tag, str(existing.id), cached=True)
    if echo is not None:
        echo(f"building {tag}: {len(requirements.lines)} requirement(s) of {requirements.source} over "
             f"{framework_image.tag}")
    with tempfile.TemporaryDirectory(prefix="mlchain-repo-layer-") as tmp:
        context = Path(tmp)
        shutil.copyfile(dockerfile, context / "Dockerfile")
        (context / REQUIREMENTS_FILE).write_text(requirements.text)
        ca = settings.build_ca_bundle
        if ca is not None and not ca.is_file():
            raise ImageBuildError(f"the build CA bundle {ca} does not exist",
                                  hint="point MLCHAIN_BUILD_CA_BUNDLE at a PEM file, or unset it")
        (context / CA_NAME).write_bytes(ca.read_bytes() if ca is not None else b"")
        _build(client, context, tag, framework_image, requirements, echo)
    image = find_local_image(client, tag)
    if image is None:
        raise ImageBuildError(f"the build of {tag} ended without an image", hint="rerun; check `docker images`")
    return ImageRef(framework_image.framework, tag, str(image.id), cached=False)


def _build(client: docker.DockerClient, context: Path, tag: str, framework_image: ImageRef,
           requirements: RepoRequirements, echo: Echo | None) -> None:
    import docker

    log: deque[str] = deque(maxlen=LOG_LINES)
    try:
        events: Any = client.api.build(path=str(context), tag=tag, buildargs={"FRAMEWORK_IMAGE": framework_image.tag},
                                       decode=True, rm=True, forcerm=True, pull=False,
                                       labels={"io.mlchain.repo-layer": tag.rsplit(":", 1)[1]})
        errors = list(_stream_lines(events, echo, log))
    except docker.errors.APIError as exc:
        errors = [str(exc.explanation or exc)]
        log.append(errors[0])
    if not errors:
        return
    said = conflict_message(list(log), requirements, framework_image.framework,
                            framework_pins(framework_image.framework))
    if said is not None:
        raise ImageBuildError(said[0], hint=said[1])
    tail = list(log)[-30:]
    raise ImageBuildError(f"building {tag} failed: {errors[-1]}\n  last build lines:\n    " + "\n    ".join(tail),
                          hint="read the build log above; the package index must be reachable at build time")


# --- the process runner: a virtual environment per repository ---------------------------

ENVS_DIR = "envs"
READY = ".mlchain-ready"
OVER_RUNNER = "_mlchain_runner.pth"
PIP_TIMEOUT_S = 1800


def venv_hash(python: str, python_version: str, site_dirs: Sequence[str], requirements: RepoRequirements) -> str:
    """The environment's key: the runner's interpreter and packages' folders, and the requirements (pure)."""
    digest = hashlib.sha256()
    for name, data in (("python", python), ("version", python_version), ("site", "\n".join(site_dirs)),
                       ("requirements", requirements.text)):
        digest.update(f"{name}\0{len(data)}\0{data}".encode())
    return digest.hexdigest()[:HASH_LEN]


def ensure_repo_venv(settings: Settings, repo: Path, framework: str, echo: Echo | None = None) -> Path | None:
    """The process runner's counterpart of the layer: a virtual environment over the runner's own
    packages (a .pth file puts them after the venv's), with the repository's requirements installed
    in it, the runner's installed versions as constraints. Made once per key, then found by it.
    Returns its interpreter, or None when the repository has no requirements the runner's own
    environment does not already satisfy."""
    import site
    import subprocess
    import sys

    requirements = read_repo_requirements(repo, framework)
    if requirements is None or not unmet(requirements, installed_here(requirements)):
        return None  # nothing to add to the runner's own environment
    site_dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    folder = settings.home_abs / ENVS_DIR / venv_hash(sys.executable, sys.version, site_dirs, requirements)
    python = folder / "bin" / "python"
    if (folder / READY).is_file():
        return python
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted earlier attempt
    if echo is not None:
        echo(f"making {folder}: {len(requirements.lines)} requirement(s) of {requirements.source} over this "
             "environment's packages")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    packages = next((folder / "lib").glob("python*/site-packages"))
    # addsitedir, not a bare path line: the runner's own .pth files (an editable install's
    # finder among them) must be processed too
    (packages / OVER_RUNNER).write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in site_dirs))
    frozen = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True).stdout
    (folder / "constraints.txt").write_text(frozen)
    (folder / REQUIREMENTS_FILE).write_text(requirements.text)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
                           "-c", str(folder / "constraints.txt"), "-r", str(folder / REQUIREMENTS_FILE)],
                          capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    if done.returncode != 0:
        log = (done.stdout + done.stderr).splitlines()
        said = conflict_message(log, requirements, framework, framework_pins(framework))
        shutil.rmtree(folder, ignore_errors=True)
        if said is not None:
            raise ImageBuildError(said[0].replace(f"the {framework} image", "this environment"), hint=said[1])
        raise ImageBuildError(f"installing {requirements.source} into {folder} failed:\n    "
                              + "\n    ".join(log[-20:]),
                              hint="read pip's output above; the package index must be reachable")
    (folder / READY).write_text("")
    return python
