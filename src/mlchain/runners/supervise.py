"""Supervisor of one training process: runs mlchain-train and records how it ended.

Usage (by the process runner only): python -m mlchain.runners.supervise EXIT_FILE
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlchain.fileio import atomic_write


def main() -> int:
    exit_file = Path(sys.argv[1])
    child = subprocess.Popen([sys.executable, "-m", "mlchain.train_entry"])

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    returncode = child.wait()
    record = {"returncode": returncode, "pid": child.pid, "ended_at": time.time()}
    atomic_write(exit_file, json.dumps(record), mode=0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
