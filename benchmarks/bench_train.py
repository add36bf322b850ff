"""Overhead of `mlchain train` over running the example's train.py directly, same params.

Side by side in one run, alternating, median of N rounds. Target: ratio <= 1.10.

    .venv/bin/python benchmarks/bench_train.py [--example digits_sklearn|digits_cnn] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLCHAIN = [sys.executable, "-m", "mlchain.cli"]


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default="digits_sklearn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", default='{"hidden_units": 64, "learning_rate": 0.005, "epochs": 15}')
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    repo = work / args.example
    shutil.copytree(ROOT / "models" / args.example, repo, ignore=shutil.ignore_patterns("mlchain-output"))
    params_file = work / "params.json"
    config_params = __import__("yaml").safe_load((repo / "mlchain.yaml").read_text())["params"]
    params = {**config_params, **json.loads(args.params)}
    params_file.write_text(json.dumps(params))
    home = work / "home"
    env = {**os.environ, "MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process"}
    direct_env = {**env, "MLCHAIN_PARAMS_FILE": str(params_file), "MLCHAIN_OUTPUT_DIR": str(work / "direct-out")}
    train_cmd = [*MLCHAIN, "train", str(repo), "--params", json.dumps(params), "--runner", "process"]
    timed(train_cmd, env, work)  # warm-up: creates the MLflow store, fills the OS cache
    direct, chain = [], []
    for _ in range(args.rounds):
        # A fresh output folder each time: left over, its checkpoints would let the next direct run
        # resume a finished training instead of doing the work the measured trial does.
        shutil.rmtree(work / "direct-out", ignore_errors=True)
        direct.append(timed([sys.executable, "train.py"], direct_env, repo))
        chain.append(timed(train_cmd, env, work))
    d, c = statistics.median(direct), statistics.median(chain)
    print(f"example {args.example}, {args.rounds} rounds, median seconds")
    print(f"  python train.py directly : {d:7.2f} s  {[round(x, 2) for x in direct]}")
    print(f"  mlchain train            : {c:7.2f} s  {[round(x, 2) for x in chain]}")
    print(f"  overhead ratio           : {c / d:7.3f}   (target <= 1.10)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
