"""A trial's log past its size limit (CappedLog, the docker runner's copy of a container's output):
the head is kept up to the limit, then only the last lines, written with a note when the output ends."""

from __future__ import annotations

import os
from pathlib import Path

from mlchain.runners.docker import CappedLog


def lines(first: int, last: int) -> list[bytes]:
    return [f"line {i:05d} {'x' * 20}\n".encode() for i in range(first, last)]


LINE = len(lines(0, 1)[0])  # every line of lines() is this long


def test_output_under_the_limit_is_written_as_it_comes(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    with path.open("ab") as out:
        log = CappedLog(out, max_bytes=10_000, tail_lines=5)
        assert all(log.write(line) for line in lines(0, 100))
        assert path.read_bytes() == b"".join(lines(0, 100))  # on disk before the end: job3 follows it
        log.close()
    assert path.read_bytes() == b"".join(lines(0, 100))


def test_past_the_limit_the_head_and_the_last_lines_are_kept_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    every = lines(0, 1000)
    with path.open("ab") as out:
        log = CappedLog(out, max_bytes=100 * LINE, tail_lines=5)
        kept = [log.write(line) for line in every]
        assert kept == [True] * 100 + [False] * 900
        assert path.stat().st_size == 100 * LINE  # nothing past the limit until the output ends
        log.close()
    written = path.read_bytes().split(b"\n")
    assert written[:100] == [line.rstrip(b"\n") for line in every[:100]]
    assert written[100] == (f"mlchain: 895 lines ({895 * LINE:,} bytes) of the training's output are not kept "
                            f"here: a trial's log is limited to {100 * LINE:,} bytes (MLCHAIN_TRAIN_LOG_MAX_BYTES); "
                            "its last lines follow").encode()
    assert written[101:] == [line.rstrip(b"\n") for line in every[-5:]] + [b""]


def test_what_an_earlier_attempt_wrote_counts_toward_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    path.write_bytes(b"".join(lines(0, 90)))  # the attempt before a restart
    with path.open("ab") as out:
        log = CappedLog(out, max_bytes=100 * LINE, tail_lines=3)
        assert [log.write(line) for line in lines(90, 95)] == [True] * 5
        assert [log.write(line) for line in lines(95, 120)] == [True] * 5 + [False] * 20
        log.close()
    assert path.read_bytes().endswith(b"".join(lines(117, 120)))


def test_a_held_back_line_still_moves_the_logs_mtime(tmp_path: Path) -> None:
    # The log's mtime is the heartbeat of a training that writes no progress lines: holding
    # lines back must not make the monitor take a chatty training for a hung one.
    path = tmp_path / "train.log"
    with path.open("ab") as out:
        log = CappedLog(out, max_bytes=64, tail_lines=2)
        for line in lines(0, 2):
            log.write(line)
        os.utime(path, (1_000_000, 1_000_000))
        assert log.write(b"held back\n") is False
        assert path.stat().st_mtime > 1_000_000 + 10**8
