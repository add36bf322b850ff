"""The corpus (tests/corpus/) through `mlchain run`, unmodified: which repositories reach a gate
verdict (passed, or the budget spent), with the metric's provenance, and which end in a failure
naming what was found; and the trials the weak ones (those named in --weak) need to pass.

Prints, per repository, the outcome, the trials, the metric and where it came from, the seconds;
then the fraction of supported repositories that reached a verdict (target: all of them), the
fraction of unsupported ones that failed naming their framework (target: all), and the median
trials of the weak ones.

    .venv/bin/python benchmarks/bench_corpus.py [--only NAME ...] [--runner auto|process|docker]
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
CORPUS = ROOT / "tests" / "corpus"
UNSUPPORTED = {"torch_only": "torch", "lightgbm_only": "lightgbm", "no_model": "no file trains a model"}
WEAK = ("keras_functional_constants", "keras_sequential_needs_block", "sklearn_forest_shallow")


def git_copy(name: str, dest: Path) -> Path:
    repo = dest / name
    shutil.copytree(CORPUS / name, repo, ignore=shutil.ignore_patterns("__pycache__"))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=bench@example.com", "-c", "user.name=bench", "commit", "-q", "-m", "code"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return repo


def run_one(name: str, runner: str, work: Path) -> dict[str, object]:
    repo = git_copy(name, work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    env["MLCHAIN_HOME"] = str(work / f"{name}-home")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json",
                           "--runner", runner], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    try:
        summary = json.loads(done.stdout)
    except ValueError:
        summary = {"status": "no summary", "trials": [], "error": {"message": done.stderr[-300:]}}
    best = summary.get("best") or {}
    said = json.dumps(summary.get("error") or {}) + (summary.get("stop_reason") or "")
    return {"name": name, "status": summary.get("status"), "exit": done.returncode,
            "trials": len(summary.get("trials") or []), "metric": best.get("metric"),
            "source": best.get("metric_source"), "said": said, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="corpus repositories to run (default: all)")
    parser.add_argument("--runner", default="auto", choices=["auto", "process", "docker"])
    args = parser.parse_args()
    names = args.only or sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlchain-bench-corpus-") as tmp:
        for name in names:
            row = run_one(name, args.runner, Path(tmp))
            rows.append(row)
            metric = f"{row['metric']:.4f}" if isinstance(row["metric"], float) else "-"
            print(f"{name:<32} {row['status']!s:<13} exit {row['exit']:<3} trials {row['trials']:<3}"
                  f" {metric:>7} {row['seconds']:7.1f} s  {row['source'] or row['said'][:100]}", flush=True)
    supported = [r for r in rows if r["name"] not in UNSUPPORTED]
    verdicts = [r for r in supported if r["status"] in ("passed", "budget_spent")]
    unsupported = [r for r in rows if r["name"] in UNSUPPORTED]
    named = [r for r in unsupported if r["status"] == "failed" and UNSUPPORTED[str(r["name"])] in str(r["said"])]
    print(f"supported repositories reaching a gate verdict unmodified: {len(verdicts)}/{len(supported)}"
          f" = {len(verdicts) / max(len(supported), 1):.2f} (target 1.00)")
    if unsupported:
        print(f"unsupported repositories failing with what was found: {len(named)}/{len(unsupported)}"
              f" = {len(named) / len(unsupported):.2f} (target 1.00)")
    weak = [r for r in rows if r["name"] in WEAK and r["status"] == "passed"]
    if weak:
        print(f"trials the weak repositories needed to pass: median {statistics.median(r['trials'] for r in weak)}"
              f" over {len(weak)}")
    return 0 if len(verdicts) == len(supported) and len(named) == len(unsupported) else 1


if __name__ == "__main__":
    sys.exit(main())
