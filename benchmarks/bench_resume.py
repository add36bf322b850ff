"""Resume efficiency: how much training a killed trial repeats, and how fast it comes back.

Run by hand:  .venv/bin/python benchmarks/bench_resume.py [--epochs 20] [--epoch-s 0.2]
              [--kills 0,1,5,10] [--seed 7] [--runner process|docker|both]

For each K, one trial of the test workload (tests/integration/test_monitor_support.py: a
softmax regression checkpointed each epoch through the sdk, ``epoch_s`` seconds per epoch)
runs through job1..job3, with job6's passes every ``monitor_interval_s`` as ``mlchain run``
makes them, while a killer SIGKILLs it K times at seeded random points (mid-epoch, or while
it starts). job3 and the monitor restart it from its last checkpoint.

Printed per runner and K:
- work: epochs begun across all attempts / epochs needed (1.00 = nothing repeated; each
  kill can cost at most the epoch it interrupted, so the bound is 1 + K / epochs);
- lines: progress lines / epochs needed;
- resume: median seconds from a kill to the restarted training's first progress line
  (detection + backoff + start + imports + the first epoch, ``epoch_s`` of it);
- wall: seconds for the trial, kills included.
The docker runner is measured when an engine answers (and its image builds or is cached).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from test_monitor_support import (
    Killer,
    collect,
    epochs_started,
    launch,
    progress_rows,
    resume_latencies,
    schedule,
    trial_row,
    write_workload,
)

from mlchain.config import Settings
from mlchain.monitor import monitor_pass
from mlchain.runners.base import TrialSpec

MONITOR: dict[str, Any] = {"max_restarts": 50, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                           "monitor_interval_s": 0.2, "hung_after_s": 120.0}


def settings_for(runner: str, home: Path) -> Settings:
    if runner == "docker":
        from docker_support import docker_settings

        return docker_settings(home, **MONITOR)
    return Settings(home=home, runner="process", **MONITOR)


def _monitor(settings: Settings, run_id: str, stop: threading.Event) -> None:
    """job6 during a local run (the engine's MonitorThread does the same)."""
    while not stop.wait(settings.monitor_interval_s):
        monitor_pass(settings, run_id=run_id)


def one(runner: str, kills: int, epochs: int, epoch_s: float, seed: int, docker_client: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        root = Path(tmp)
        settings = settings_for(runner, root / "home")
        repo = write_workload(root, epochs=epochs, epoch_s=epoch_s)
        run_id = f"bench-{runner}-k{kills}-{int(time.time())}"
        killer = Killer(settings, run_id, schedule(seed, kills, epochs, epoch_s, runner),
                        docker_client=docker_client, timeout_s=300)
        killer.start()
        stop = threading.Event()
        monitor = threading.Thread(target=_monitor, args=(settings, run_id, stop), daemon=True)
        monitor.start()
        started = time.monotonic()
        try:
            launch(settings, repo, run_id)
            row = collect(settings, run_id)
        finally:
            stop.set()
            killer.stopped.set()
            killer.join(timeout=30)
            monitor.join(timeout=30)
        wall = time.monotonic() - started
        if killer.error is not None:
            raise RuntimeError(f"the killer failed: {killer.error!r}")
        final = trial_row(settings, run_id)
        assert final is not None and row["status"] == "succeeded", row
        out = TrialSpec.from_json(final["spec"]).output_dir
        latencies = resume_latencies(out, killer.killed_at)
        if docker_client is not None:
            for container in docker_client.containers.list(all=True, filters={"label": f"io.mlchain.run={run_id}"}):
                container.remove(force=True)
        return {"kills": len(killer.killed_at), "restarts": final["restarts"],
                "work": len(epochs_started(out)) / epochs, "lines": len(progress_rows(out)) / epochs,
                "bound": 1 + len(killer.killed_at) / epochs,
                "resume_s": statistics.median(latencies) if latencies else None, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--epoch-s", type=float, default=0.2)
    parser.add_argument("--kills", default="0,1,5,10")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runner", choices=["process", "docker", "both"], default="both")
    args = parser.parse_args()
    runners = ["process", "docker"] if args.runner == "both" else [args.runner]
    client = None
    if "docker" in runners:
        from mlchain.runners.select import docker_answers

        client = docker_answers()
        if client is None:
            print("docker: no engine answers; measuring the process runner only")
            runners.remove("docker")
        else:
            from docker_support import built_image

            built_image("sklearn")
    print(f"workload: {args.epochs} epochs of {args.epoch_s:g} s; kills at seeded random points (seed {args.seed})")
    print(f"{'runner':<8} {'K':>3} {'restarts':>8} {'work':>6} {'bound':>6} {'lines':>6} {'resume s':>9} {'wall s':>7}")
    for runner in runners:
        for k in (int(x) for x in args.kills.split(",")):
            r = one(runner, k, args.epochs, args.epoch_s, args.seed, client if runner == "docker" else None)
            resume = f"{r['resume_s']:.2f}" if r["resume_s"] is not None else "-"
            print(f"{runner:<8} {r['kills']:>3} {r['restarts']:>8} {r['work']:>6.2f} {r['bound']:>6.2f}"
                  f" {r['lines']:>6.2f} {resume:>9} {r['wall_s']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
