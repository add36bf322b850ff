"""Plain helpers the tests import (fixtures live in the conftest files)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(cwd), "-c", "user.name=Test", "-c", "user.email=test@example.com",
                           *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_git_repo(dest: Path, files: dict[str, str] | None = None, example: str | None = None,
                  branch: str = "main") -> Path:
    """A real git repository: an example from models/ and/or files, committed on ``branch``."""
    dest.mkdir(parents=True, exist_ok=True)
    if example:
        shutil.copytree(MODELS / example, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("mlchain-output", "__pycache__"))
    for name, text in (files or {}).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text)
    git(dest, "init", "-q", "-b", branch)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "training code")
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy (returned) or ``timeout`` seconds pass (fails, naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll_s)
