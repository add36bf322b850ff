"""What a training writes for the chain is read by another user outside the container (a
Jenkins agent runs mlchain as `jenkins`, the training as uid 10001): those files are
readable by all whatever the training's umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlchain import contract, sdk


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_metrics_and_data_files_are_readable_by_the_agents_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 strict_umask: None) -> None:
    monkeypatch.setenv(contract.ENV_OUTPUT_DIR, str(tmp_path / "out"))
    metrics = sdk.report({"accuracy": 0.9})
    sdk.record_data([1, 2, 3], source="digits")
    assert _mode(metrics) == 0o644
    assert _mode(tmp_path / "out" / "data.json") == 0o644


def test_a_checkpoints_metadata_is_readable_by_the_monitor(tmp_path: Path, strict_umask: None) -> None:
    def save(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"w")

    info = sdk.CheckpointFolder(tmp_path / "ckpt").write(1, {"params_hash": "abc"}, save)
    assert _mode(info.path / sdk.CHECKPOINT_META) == 0o644
