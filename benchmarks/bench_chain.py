"""The chain's overhead and the search's efficiency.

1. Overhead: `mlchain run` on a repository whose first trial passes the gate, over running
   that trial's train.py directly with the same params (side by side, alternating, median).
   Target: ratio <= 1.15.
2. Search: the number of trials the search needs to pass the gate on digits_cnn from its weak
   baseline, over 5 seeds (fresh stores each); target: median <= 4.

    .venv/bin/python benchmarks/bench_chain.py [--example digits_cnn] [--rounds 3] [--seeds 5]
    .venv/bin/python benchmarks/bench_chain.py --skip-search      # overhead only
    .venv/bin/python benchmarks/bench_chain.py --skip-search --cold   # and without the warm server

The overhead is measured as a user meets it: the first `mlchain run` starts the warm server
(mlchain.warm), the measured ones are served by it. --cold adds the same measurement with
every command importing MLflow, Optuna and matplotlib itself (MLCHAIN_WARM_SERVER=0).
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
PASSING = {
    "digits_cnn": {"conv_blocks": 1, "filters": 16, "kernel_size": 3, "dense_units": 64, "dropout": 0.1,
                   "learning_rate": 0.005, "epochs": 10, "batch_size": 32},
    "digits_sklearn": {"hidden_units": 64, "learning_rate": 0.005, "epochs": 15},
}


def git_repo(src: Path, dest: Path, params: dict[str, object] | None = None) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("mlchain-output", "__pycache__"))
    if params:
        cfg = yaml.safe_load((dest / "mlchain.yaml").read_text())
        cfg["params"].update(params)
        (dest / "mlchain.yaml").write_text(yaml.safe_dump(cfg))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True)
    return dest


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def overhead(example: str, rounds: int, work: Path, warm: bool) -> None:
    mode = "warm" if warm else "cold"
    repo = git_repo(ROOT / "models" / example, work / f"{example}-{mode}", PASSING[example])
    cfg = yaml.safe_load((repo / "mlchain.yaml").read_text())
    params_file = work / "params.json"
    params_file.write_text(json.dumps(cfg["params"]))
    home = work / f"home-{mode}"
    env = {**os.environ, "MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process",
           "MLCHAIN_WARM_SERVER": "1" if warm else "0"}
    direct_env = {**env, "MLCHAIN_PARAMS_FILE": str(params_file), "MLCHAIN_OUTPUT_DIR": str(work / "direct")}
    run_cmd = [sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json", "--no-resume"]
    _, out = timed(run_cmd, env, work)  # warm-up: stores created, OS cache filled (and the warm server started)
    assert json.loads(out)["status"] == "passed", "the first trial must pass for this measurement"
    if warm:
        wait_for_warm_server(home)
    direct, chain = [], []
    for _ in range(rounds):
        # A fresh output folder each time: left over, its checkpoints would let the next direct run
        # resume a finished training instead of doing the work the chain's trial does.
        shutil.rmtree(work / "direct", ignore_errors=True)
        direct.append(timed([sys.executable, "train.py"], direct_env, repo)[0])
        seconds, out = timed(run_cmd, env, work)
        assert len(json.loads(out)["trials"]) == 1
        chain.append(seconds)
    d, c = statistics.median(direct), statistics.median(chain)
    how = "commands served by the warm server" if warm else "every command cold (MLCHAIN_WARM_SERVER=0)"
    print(f"chain overhead on {example} ({rounds} rounds, median; {how})")
    print(f"  train.py directly        : {d:7.2f} s  {[round(x, 2) for x in direct]}")
    print(f"  mlchain run (1 trial)    : {c:7.2f} s  {[round(x, 2) for x in chain]}")
    print(f"  ratio                    : {c / d:7.3f}   (target <= 1.15)")
    if warm:
        log = home / "warm.log"
        served = sum(": mlchain run " in line for line in log.read_text().splitlines()) if log.exists() else 0
        print(f"  served by the warm server: {served} of {rounds} runs")


def wait_for_warm_server(home: Path, timeout_s: float = 120.0) -> None:
    """The server imports once the command that started it has ended: wait until it serves,
    so that its imports do not slow the direct runs measured next."""
    deadline = time.monotonic() + timeout_s
    while not (home / "warm.sock").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the warm server did not start; see {home / 'warm.log'}")
        time.sleep(0.2)


def search(seeds: int, work: Path) -> None:
    counts = []
    for seed in range(seeds):
        repo = git_repo(ROOT / "models" / "digits_cnn", work / f"cnn-seed{seed}")
        env = {**os.environ, "MLCHAIN_HOME": str(work / f"home-seed{seed}"), "MLCHAIN_RUNNER": "process",
               "MLCHAIN_SEARCH_SEED": str(seed)}
        seconds, out = timed([sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json",
                              "--max-trials", "10", "--patience", "10"], env, work)
        summary = json.loads(out)
        passed_at = next((t["number"] for t in summary["trials"]
                          if t["metric"] is not None and t["metric"] >= summary["threshold"]), None)
        counts.append(passed_at if passed_at is not None else float("inf"))
        metrics = [round(t["metric"], 3) if t["metric"] is not None else None for t in summary["trials"]]
        print(f"  seed {seed}: passed at trial {passed_at} ({seconds:.0f} s) metrics {metrics}")
    print(f"trials to pass the gate on digits_cnn from its baseline: median {statistics.median(counts)}"
          f" over {seeds} seeds {counts}   (target <= 4)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", default="digits_cnn", choices=sorted(PASSING))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--cold", action="store_true", help="measure without the warm server as well")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    try:
        if not args.skip_overhead:
            overhead(args.example, args.rounds, work, warm=True)
            if args.cold:
                overhead(args.example, args.rounds, work, warm=False)
        if not args.skip_search:
            search(args.seeds, work)
    finally:
        from mlchain.warm import stop_server

        for home in work.glob("home*"):
            stop_server(home)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
