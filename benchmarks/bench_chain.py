"""The chain's overhead and the search's efficiency.

1. Overhead: `mlchain run` on a repository whose first trial passes the gate, over running
   that trial's train.py directly with the same params (side by side, alternating, median),
   on both examples in one run. Every command is cold: each `mlchain` process imports what
   it needs itself. Target: ratio <= 1.15 on each. Beside them, the floor any tracked chain
   has here: train.py with, at the same time, a cold process that only imports MLflow and
   logs one run to a SQLite store (what job2/job3 must do at the least); the chain's ratio
   minus the floor's is the overhead that is mlchain's own. Of that, the time from the printed
   summary to the process's exit is shown apart: the interpreter's teardown (its final garbage
   collections over what MLflow's client loaded), which no mlchain code runs in.
2. Search: the number of trials the search needs to pass the gate on digits_cnn from its weak
   baseline, over 5 seeds (fresh stores each); target: median <= 4.

    .venv/bin/python benchmarks/bench_chain.py [--example digits_cnn ...] [--rounds 3] [--seeds 5]
    .venv/bin/python benchmarks/bench_chain.py --skip-search      # overhead only, both examples
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
    seconds, out, _ = timed_to_output(cmd, env, cwd)
    return seconds, out


def timed_to_output(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, float]:
    """``cmd``'s wall time, its stdout, and the seconds from its first line of output (`mlchain run
    --json` prints the summary when the chain is done) to its exit: the interpreter's teardown."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    printed = time.perf_counter()
    out = first + process.stdout.read()
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {process.returncode}")
    end = time.perf_counter()
    return end - start, out, end - printed


TRACKING_FLOOR = """
import sys, mlflow
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.get_experiment_by_name("floor") or client.get_experiment(client.create_experiment("floor"))
run = client.create_run(experiment.experiment_id)
client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric("accuracy", 0.9, 0, 0)])
client.set_terminated(run.info.run_id)
"""


def timed_with_tracking(cmd: list[str], env: dict[str, str], cwd: Path, store: Path) -> float:
    """``cmd`` and, started at the same moment, a cold process that only logs one MLflow run:
    the wall time until both are done."""
    start = time.perf_counter()
    tracker = subprocess.Popen([sys.executable, "-c", TRACKING_FLOOR, f"sqlite:///{store}"], env=env, cwd=cwd,
                               stdout=subprocess.DEVNULL)
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    if tracker.wait() != 0:
        raise SystemExit("the tracking-floor process failed")
    return time.perf_counter() - start


def overhead(example: str, rounds: int, work: Path) -> float:
    """The median ratio of `mlchain run` over train.py on ``example``; prints the details."""
    repo = git_repo(ROOT / "models" / example, work / example, PASSING[example])
    cfg = yaml.safe_load((repo / "mlchain.yaml").read_text())
    params_file = work / f"params-{example}.json"
    params_file.write_text(json.dumps(cfg["params"]))
    env = {**os.environ, "MLCHAIN_HOME": str(work / f"home-{example}"), "MLCHAIN_RUNNER": "process"}
    direct_env = {**env, "MLCHAIN_PARAMS_FILE": str(params_file), "MLCHAIN_OUTPUT_DIR": str(work / "direct")}
    run_cmd = [sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json", "--no-resume"]
    _, out = timed(run_cmd, env, work)  # first: the stores are created, the OS cache filled
    assert json.loads(out)["status"] == "passed", "the first trial must pass for this measurement"
    direct, floor, chain, teardown = [], [], [], []
    for _ in range(rounds):
        # A fresh output folder each time: left over, its checkpoints would let the next direct run
        # resume a finished training instead of doing the work the chain's trial does.
        shutil.rmtree(work / "direct", ignore_errors=True)
        direct.append(timed([sys.executable, "train.py"], direct_env, repo)[0])
        shutil.rmtree(work / "direct", ignore_errors=True)
        floor.append(timed_with_tracking([sys.executable, "train.py"], direct_env, repo, work / "floor.db"))
        seconds, out, exiting = timed_to_output(run_cmd, env, work)
        assert len(json.loads(out)["trials"]) == 1
        chain.append(seconds)
        teardown.append(exiting)
    d, f, c = statistics.median(direct), statistics.median(floor), statistics.median(chain)
    t = statistics.median(teardown)
    print(f"chain overhead on {example} ({rounds} rounds, median; every command cold)")
    print(f"  train.py directly        : {d:7.2f} s  {[round(x, 2) for x in direct]}")
    print(f"  train.py + MLflow floor  : {f:7.2f} s  {[round(x, 2) for x in floor]}   ratio {f / d:.3f}")
    print(f"  mlchain run (1 trial)    : {c:7.2f} s  {[round(x, 2) for x in chain]}")
    print(f"  ratio                    : {c / d:7.3f}   (target <= 1.15; mlchain's own: {(c - f) / d:+.3f})")
    print(f"  of which, after the summary was printed, the interpreter's exit: {t:5.2f} s"
          f" {[round(x, 2) for x in teardown]}  ({t / d:+.3f} of the ratio)")
    return c / d


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
    parser.add_argument("--example", action="append", choices=sorted(PASSING),
                        help="measure the overhead on this example (repeatable; default: both)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    try:
        if not args.skip_overhead:
            ratios = {example: overhead(example, args.rounds, work) for example in args.example or sorted(PASSING)}
            print("overhead, every command cold: " + ", ".join(f"{e} {r:.3f}" for e, r in ratios.items())
                  + "   (target <= 1.15 on each)")
        if not args.skip_search:
            search(args.seeds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
