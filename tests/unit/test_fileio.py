"""fileio: a file written whole or not at all; the end of a file read without following links."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mlchain import fileio
from mlchain.fileio import atomic_write, last_lines, read_tail_bytes, tail_text


def test_atomic_write_replaces_content_with_its_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "params.json"
    atomic_write(target, "old")
    atomic_write(target, b"new bytes", mode=0o644)
    assert target.read_bytes() == b"new bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["params.json"]


def test_atomic_write_replaces_a_planted_symlink_not_its_target(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("keep me")
    target = tmp_path / "out" / "metrics.json"
    target.parent.mkdir()
    target.symlink_to(host_file)
    atomic_write(target, "{}")
    assert host_file.read_text() == "keep me"
    assert not target.is_symlink() and target.read_text() == "{}"


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "mlchain.properties"
    atomic_write(target, "RUN_ID=a\n")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "RUN_ID=b\n")
    assert target.read_text() == "RUN_ID=a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["mlchain.properties"]


def _writer(path: Path, ready: Any, stop: Any) -> None:
    big = [b"a" * 2_000_000, b"b" * 3_000_000]
    atomic_write(path, big[0])
    ready.set()
    i = 0
    while not stop.is_set():
        i += 1
        atomic_write(path, big[i % 2])


def test_a_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_writer, args=(path, ready, stop))
    proc.start()
    try:
        assert ready.wait(60)
        for _ in range(300):
            data = path.read_bytes()
            assert data in (b"a" * 2_000_000, b"b" * 3_000_000)
    finally:
        stop.set()
        proc.join(60)
    assert proc.exitcode == 0


def test_read_tail_bytes_gives_the_end_and_the_size(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(b"0123456789")
    assert read_tail_bytes(log, 4) == (b"6789", 10)
    assert read_tail_bytes(log, 100) == (b"0123456789", 10)
    assert read_tail_bytes(log, None) == (b"0123456789", 10)
    assert read_tail_bytes(tmp_path / "missing", 4) is None


def test_read_tail_refuses_links_fifos_and_folders(tmp_path: Path) -> None:
    host_file = tmp_path / "host.txt"
    host_file.write_text("host secret\n")
    link = tmp_path / "train.log"
    link.symlink_to(host_file)
    assert read_tail_bytes(link, 100) is None
    assert tail_text(link, 5) == ""
    assert read_tail_bytes(link, 100, follow_symlinks=True) == (b"host secret\n", 12)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_tail_bytes(fifo, 100) is None  # and did not block on a writer that never comes
    assert read_tail_bytes(tmp_path, 100) is None


def test_tail_text_and_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(b"one\ntwo\nthree\nbad \xff byte\n")
    assert tail_text(log, 2) == "three\nbad \ufffd byte"
    assert tail_text(log) == "one\ntwo\nthree\nbad \ufffd byte\n"
    assert tail_text(log, 10, max_bytes=9) == "d \ufffd byte"
    assert last_lines("a\nb\nc", 2) == ["b", "c"]
    assert last_lines("a\nb", 0) == []


def test_the_sdk_with_its_file_helpers_needs_only_the_standard_library() -> None:
    import subprocess
    import sys

    import mlchain

    src = Path(mlchain.__file__).parent.parent
    code = "import sys, mlchain.sdk; print(sorted(m for m in sys.modules if m.startswith('mlchain')))"
    # -S: no site-packages, so any third-party import fails
    done = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": str(src)},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['mlchain', 'mlchain.contract', 'mlchain.fileio', 'mlchain.sdk']"
