"""The code people have, over the corpus (tests/corpus/*): each repository pushed unmodified
through the whole chain (`mlchain run`, one cold process each, fresh stores).

1. The fraction that reaches a gate verdict (passed, or the budget spent with a metric read):
   target, every supported repository. A run that fails before the gate (no metric found, no
   entry, an unsupported framework) has no verdict; what stopped it is printed.
2. The trials the weak repositories (trial 1 below the gate) need to pass: the number of the
   first passing trial, median over them.

    .venv/bin/python benchmarks/bench_corpus.py [--runner docker|process] [--max-trials 8] [NAME ...]

``--append-report`` appends ``sdk.report({"accuracy": acc})`` to each entry first: a stand-in
for the metric capture (mlchain.capture) where it is missing, to measure the search alone.
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
VERDICTS = ("passed", "budget_spent")
REPORT_LINE = 'from mlchain import sdk; sdk.report({"accuracy": acc})\n'


def git_repo(src: Path, dest: Path, append_report: bool = False) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "mlchain-output"))
    if append_report and (dest / "train.py").is_file():
        (dest / "train.py").write_text((dest / "train.py").read_text() + REPORT_LINE)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True)
    return dest


def run_one(name: str, work: Path, runner: str, max_trials: int, append_report: bool) -> dict[str, object]:
    repo = git_repo(CORPUS / name, work / name, append_report)
    env = {**os.environ, "MLCHAIN_HOME": str(work / f"home-{name}"), "MLCHAIN_RUNNER": runner}
    cmd = [sys.executable, "-m", "mlchain.cli", "run", str(repo), "--ref", "main", "--json", "--no-resume",
           "--max-trials", str(max_trials)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    try:
        summary = json.loads(done.stdout)
    except ValueError:
        return {"name": name, "status": "no summary", "seconds": seconds,
                "why": (done.stderr.strip().splitlines() or ["?"])[-1]}
    trials = summary.get("trials") or []
    threshold = float(summary.get("threshold", 0.8))
    passing = [t["number"] for t in trials if t.get("metric") is not None and t["metric"] >= threshold]
    first = trials[0].get("metric") if trials else None
    return {"name": name, "status": summary["status"], "seconds": seconds, "trials": len(trials),
            "weak": first is None or first < threshold, "first_pass": passing[0] if passing else None,
            "baseline": first, "why": "; ".join(x for x in (summary.get("stop_reason"), summary.get("hint")) if x),
            "changes": (summary.get("best") or {}).get("code_changes") or []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="corpus repositories (default: all)")
    parser.add_argument("--runner", default="docker", choices=("docker", "process"))
    parser.add_argument("--max-trials", type=int, default=8)
    parser.add_argument("--append-report", action="store_true",
                        help="append sdk.report({'accuracy': acc}) to train.py (no metric capture yet)")
    args = parser.parse_args()
    names = args.names or sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        for name in names:
            result = run_one(name, Path(tmp), args.runner, args.max_trials, args.append_report)
            results.append(result)
            base = result.get("baseline")
            print(f"{name:34s} {result['status']:13s} trials {result.get('trials', '-')!s:>2}"
                  f"  baseline {base if base is None else round(float(base), 3)!s:>6}"
                  f"  first pass {result.get('first_pass') or '-'!s:>2}  {result['seconds']:6.1f} s"
                  f"  {result.get('why', '')}", flush=True)
            for change in result.get("changes") or []:
                print(f"{'':34s}   {change}")
    verdicts = [r for r in results if r["status"] in VERDICTS]
    weak_passed = [int(r["first_pass"]) for r in results if r.get("weak") and r.get("first_pass")]
    weak = [r for r in results if r.get("weak") and r["status"] in VERDICTS]
    how = "with the report line appended" if args.append_report else "unmodified"
    print(f"\nreached a gate verdict {how}: {len(verdicts)} of {len(results)}"
          f" ({len(verdicts) / max(len(results), 1):.2f})  (target: every supported repository)")
    print(f"weak repositories (trial 1 below the gate): {len(weak)}; passed: {len(weak_passed)};"
          f" trials to pass, median: {statistics.median(weak_passed) if weak_passed else '-'}"
          f" {sorted(weak_passed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
