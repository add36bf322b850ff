"""procs.end_process: a fast exit that keeps what a normal exit keeps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import atexit, sys, threading
    from pathlib import Path
    from mlchain.procs import end_process

    out = Path(sys.argv[1])
    left_open = open(out / "left-open.txt", "w")  # never closed: only a flush saves it
    left_open.write("buffered, not yet written")
    atexit.register(lambda: (out / "atexit.txt").write_text("ran"))
    started = threading.Event()
    def worker():
        started.set()
        threading.Event().wait(0.3)  # still working when the main thread ends
        (out / "thread.txt").write_text("finished")
    threading.Thread(target=worker).start()
    started.wait()
    print("on stdout, no newline", end="")
    end_process(7)
''')


def test_end_process_keeps_exit_code_files_atexit_threads_and_output(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "on stdout, no newline"
    assert (tmp_path / "left-open.txt").read_text() == "buffered, not yet written"
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "thread.txt").read_text() == "finished"
