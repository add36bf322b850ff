"""Drift detection on streams made from scikit-learn's digits (ADWIN from river, as the
serving observer runs it: three summary statistics of the 64 pixels, and the error stream).

1. False alarms: detections on a stationary stream (rows drawn at random, with replacement)
   of --samples rows, per seed.
2. Delay: samples between a shift and its first detection, median (and max) over the seeds:
   brighter pixels (+2 with noise of std 1.5, clipped to 0..16), a milder one (+0.5, noise
   0.5), and, for the error stream of a logistic regression, a label change (every digit d
   becomes d+1). The shift starts after --shift-at + 7 * seed stationary rows: ADWIN tests for
   a change every 32 samples (river's clock), so a delay includes the wait for the next test,
   which the offsets vary.
3. Cost: microseconds per row of the observer's detectors (summary statistics and ADWIN).

    .venv/bin/python benchmarks/bench_drift.py [--seeds 5] [--samples 20000] [--delta 0.002]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from mlchain.serving.drift import ERROR_STREAM, Detectors, watched_values


def shifted(frame: pd.DataFrame, brighten: float, noise: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(1000 + seed)
    values = frame.to_numpy(dtype=float) + brighten + rng.normal(0.0, noise, frame.shape)
    return pd.DataFrame(np.clip(values, 0.0, 16.0), columns=frame.columns)


def first_after(rows: list[dict[str, float]], start: int, delta: float) -> int | None:
    """Samples from ``start`` to the first detection at or after it (None: never)."""
    detectors = Detectors(delta=delta)
    for i, values in enumerate(rows):
        if detectors.update(values) and i >= start:
            return i - start
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--shift-at", type=int, default=5_000)
    ap.add_argument("--delta", type=float, default=0.002)
    args = ap.parse_args()

    digits = load_digits()
    frame = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
    target = digits.target
    model = LogisticRegression(max_iter=5000).fit(frame.iloc[::2], target[::2])
    held, held_y = frame.iloc[1::2].reset_index(drop=True), target[1::2]
    predicted = model.predict(held)
    seeds = range(args.seeds)

    def draw(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)

    alarms, errors_alarms, seconds = [], [], 0.0
    for seed in seeds:
        rows = draw(args.samples, seed)
        started = time.perf_counter()
        found = Detectors(delta=args.delta).feed(watched_values(rows, 32))
        seconds += time.perf_counter() - started
        alarms.append(len(found))
        pick = np.random.default_rng(seed).integers(0, len(held_y), args.samples)
        errors = (predicted[pick] != held_y[pick]).astype(float)
        errors_alarms.append(len(Detectors(delta=args.delta).feed({ERROR_STREAM: e} for e in errors)))
    print(f"stationary stream of {args.samples:,} digits, delta {args.delta}, {args.seeds} seeds")
    print(f"  false alarms, pixel statistics: {alarms} (total {sum(alarms)})")
    print(f"  false alarms, error stream:     {errors_alarms} (total {sum(errors_alarms)})")
    print(f"  cost: {seconds / (args.seeds * args.samples) * 1e6:.1f} us per row (3 statistics + 3 ADWIN updates)")

    n = 2 * args.shift_at
    shifts: dict[str, Callable[[int], list[dict[str, float]]]] = {}

    def start(seed: int) -> int:
        return args.shift_at + 7 * seed

    def pixels(brighten: float, noise: float) -> Callable[[int], list[dict[str, float]]]:
        def make(seed: int) -> list[dict[str, float]]:
            rows = draw(n, seed)
            rows.iloc[start(seed):] = shifted(rows.iloc[start(seed):], brighten, noise, seed).to_numpy()
            return watched_values(rows, 32)
        return make

    def relabel(seed: int) -> list[dict[str, float]]:
        pick = np.random.default_rng(seed).integers(0, len(held_y), n)
        truth = held_y[pick].copy()
        truth[start(seed):] = (truth[start(seed):] + 1) % 10
        return [{ERROR_STREAM: float(p != t)} for p, t in zip(predicted[pick], truth, strict=True)]

    shifts["pixels +2, noise 1.5"] = pixels(2.0, 1.5)
    shifts["pixels +0.5, noise 0.5"] = pixels(0.5, 0.5)
    shifts["pixels +0.1, noise 0.2"] = pixels(0.1, 0.2)
    shifts["labels d -> d+1 (errors)"] = relabel
    print(f"detection delay in samples after a shift at sample {args.shift_at:,} + 7 * seed")
    for name, make in shifts.items():
        delays = [first_after(make(seed), start(seed), args.delta) for seed in seeds]
        seen = [d for d in delays if d is not None]
        median = statistics.median(seen) if seen else float("nan")
        print(f"  {name:<26} median {median:>6.0f}  max {max(seen, default=float('nan')):>6}  "
              f"missed {len(delays) - len(seen)}/{len(delays)}  {delays}")


if __name__ == "__main__":
    main()
