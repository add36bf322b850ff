"""What the search costs to reach a hard gate (issue 19): mlchain's search (multivariate TPE,
successive halving, the baseline told to the study) against plain random search, side by side.

On models/digits_cnn with its `search:` removed (the framework's default space over its params)
and the gate at 0.98, for each seed: one `mlchain run` with mlchain's search and one with
`--sampler random`, alternating which goes first, each on a fresh MLCHAIN_HOME, the process
runner, every command cold. Counted: the epochs trained until the gate passed (every trial's
progress lines, the baseline's and the pruned ones' included) and the wall time. Target: median
epochs to the gate with mlchain's search at most 0.5 of random search's.

Then a second push of the same repository (a changed comment in train.py) on mlchain's search's
home: the trials it needs to pass, the warm start (the first push's best params) being its
second trial. Target: one trial after the baseline.

    .venv/bin/python benchmarks/bench_search.py [--seeds 5] [--max-trials 8] [--skip-second-push]

A run that spends its budget without passing counts its epochs as a lower bound (shown with >=).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.98
MODES = {"mlchain": [], "random": ["--sampler", "random"]}


@dataclass
class Outcome:
    passed: bool
    trials: int           # trials run (to the pass, or all of them)
    epochs: int           # epochs trained in them, pruned trials' included
    pruned: int
    seconds: float


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", *args], check=True,
                   capture_output=True)


def make_repo(dest: Path) -> Path:
    shutil.copytree(ROOT / "models" / "digits_cnn", dest, ignore=shutil.ignore_patterns("mlchain-output", "__pycache__"))
    cfg = yaml.safe_load((dest / "mlchain.yaml").read_text())
    cfg.pop("search", None)
    cfg["threshold"] = THRESHOLD
    (dest / "mlchain.yaml").write_text(yaml.safe_dump(cfg))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "digits cnn")
    return dest


def epochs_of(home: Path, run_id: str) -> list[tuple[int, str, int]]:
    """(trial, status, epochs trained) from the run state and each trial's progress lines."""
    db = sqlite3.connect(home / "state.db")
    rows = db.execute("SELECT number, status, spec FROM trials WHERE run_id = ? ORDER BY number", (run_id,)).fetchall()
    db.close()
    out = []
    for number, status, spec in rows:
        progress = Path(json.loads(spec)["output_dir"]) / "progress.jsonl" if spec else None
        lines = progress.read_text().splitlines() if progress is not None and progress.is_file() else []
        out.append((number, status, len({json.loads(line)["epoch"] for line in lines if line.strip()})))
    return out


def run_once(repo: Path, home: Path, seed: int, flags: list[str], max_trials: int) -> Outcome:
    env = {**os.environ, "MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process", "MLCHAIN_SEARCH_SEED": str(seed)}
    cmd = [sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json", "--no-resume",
           "--max-trials", str(max_trials), "--patience", str(max_trials), "--max-minutes", "60", *flags]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    try:
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"mlchain run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}") from None
    trials = epochs_of(home, summary["run_id"])
    return Outcome(passed=summary["status"] == "passed", trials=len(trials), epochs=sum(e for _, _, e in trials),
                   pruned=sum(1 for _, status, _ in trials if status == "pruned"), seconds=seconds)


def shown(o: Outcome) -> str:
    mark = "" if o.passed else ">="
    return (f"{mark}{o.epochs:>3} epochs, {o.trials} trials ({o.pruned} pruned), {o.seconds:5.0f} s"
            f"{'' if o.passed else ' (gate not reached)'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-trials", type=int, default=8)
    parser.add_argument("--skip-second-push", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    results: dict[str, list[Outcome]] = {mode: [] for mode in MODES}
    second: list[Outcome] = []
    try:
        for seed in range(args.seeds):
            order = list(MODES) if seed % 2 == 0 else list(reversed(MODES))
            repos = {mode: make_repo(work / f"{mode}-{seed}" / "digits_cnn") for mode in MODES}
            for mode in order:
                outcome = run_once(repos[mode], work / f"{mode}-{seed}" / "home", seed, MODES[mode], args.max_trials)
                results[mode].append(outcome)
                print(f"seed {seed} {mode:<8}: {shown(outcome)}", flush=True)
            if not args.skip_second_push:
                repo = repos["mlchain"]
                train = repo / "train.py"
                train.write_text(train.read_text() + "\n# a second push: the code changed, the space did not\n")
                git(repo, "commit", "-qam", "second push")
                outcome = run_once(repo, work / f"mlchain-{seed}" / "home", seed, [], args.max_trials)
                second.append(outcome)
                print(f"seed {seed} 2nd push: {shown(outcome)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"digits_cnn, default space, gate {THRESHOLD}, {args.seeds} seeds, at most {args.max_trials} trials a run")
    medians = {}
    for mode, outcomes in results.items():
        medians[mode] = statistics.median(o.epochs for o in outcomes)
        print(f"  {mode:<8}: median {medians[mode]:5.1f} epochs to the gate {[o.epochs for o in outcomes]},"
              f" passed {sum(o.passed for o in outcomes)}/{len(outcomes)},"
              f" median wall {statistics.median(o.seconds for o in outcomes):5.0f} s,"
              f" median trials {statistics.median(o.trials for o in outcomes)}")
    if medians["random"]:
        print(f"  epochs ratio mlchain / random: {medians['mlchain'] / medians['random']:.2f}   (target <= 0.5)")
    wall = {mode: statistics.median(o.seconds for o in outcomes) for mode, outcomes in results.items()}
    print(f"  wall-time ratio mlchain / random: {wall['mlchain'] / wall['random']:.2f}")
    if second:
        print(f"  second push: trials to the gate {[o.trials for o in second]} (the baseline included),"
              f" passed {sum(o.passed for o in second)}/{len(second)}; median search trials after the baseline"
              f" {statistics.median(o.trials - 1 for o in second)}   (target 1)")


if __name__ == "__main__":
    main()
