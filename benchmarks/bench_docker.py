"""The docker runner's overhead over the process runner, and the warm image build time.

Runs the same sklearn trial (models/digits_sklearn with mid-search parameters)
through both runners, alternating so that both see the same machine state, and
compares the medians of start-to-exit wall time. Target: docker/process <= 1.25.
Then times a second ``build_images`` with nothing changed (it must build nothing).

    MLCHAIN_BASE_IMAGE=mlchain-base:bookworm MLCHAIN_BUILD_CA_BUNDLE=$PIP_CERT \\
        .venv/bin/python benchmarks/bench_docker.py [--repeats 5]

Run by hand, not by CI. Needs a Docker engine (scripts/setup-docker.sh).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from mlchain.config import Settings, load_settings
from mlchain.images import build_images, ensure_image
from mlchain.runners.base import Runner, TrialSpec
from mlchain.runners.docker import DockerRunner, find_training_containers
from mlchain.runners.process import ProcessRunner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "models" / "digits_sklearn"
TARGET_RATIO = 1.25
# Mid-search parameters: a trial of a few seconds, like the ones the chain runs after the baseline.
PARAMS = {"hidden_layers": 2, "hidden_units": 64, "alpha": 0.0001, "learning_rate": 0.003,
          "batch_size": 32, "epochs": 15, "seed": 0}

# A fallback when the example is not there: the same kind of work, written here.
FALLBACK_TRAIN = '''
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from mlchain import sdk
p = sdk.params()
x, y = load_digits(return_X_y=True)
xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, random_state=0)
model = MLPClassifier(hidden_layer_sizes=(int(p["hidden_units"]),) * int(p["hidden_layers"]),
                      max_iter=int(p["epochs"]), random_state=0).fit(xt, yt)
sdk.report({"accuracy": model.score(xv, yv)})
sdk.save_model(model)
'''


def training_repo(work: Path) -> Path:
    if (EXAMPLE / "train.py").is_file():
        return EXAMPLE
    repo = work / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(FALLBACK_TRAIN)
    print("note: models/digits_sklearn is missing; using a training script written by the benchmark")
    return repo


def params_for(repo: Path) -> dict[str, object]:
    config = repo / "mlchain.yaml"
    base = dict(yaml.safe_load(config.read_text()).get("params", {})) if config.is_file() else {}
    return {**base, **PARAMS}


def one_trial(runner: Runner, work: Path, repo: Path, params: dict[str, object], image: str | None,
              run_id: str, n: int) -> float:
    trial_dir = work / f"{runner.name}-{n}"
    spec = TrialSpec(run_id=run_id, trial=n, framework="sklearn", repo_dir=repo, entry="train.py",
                     params=params, output_dir=trial_dir / "output", checkpoint_dir=trial_dir / "ckpt",
                     data_dir=trial_dir / "data", image=image, job="bench")
    started = time.perf_counter()
    handle = runner.start(spec)
    info = handle.wait(600)
    elapsed = time.perf_counter() - started
    if info.exit_code != 0:
        raise SystemExit(f"{runner.name} trial failed ({info.exit_code}):\n" + "\n".join(info.last_lines[-20:]))
    return elapsed


def compare_runners(settings: Settings, work: Path, repeats: int, image: str) -> dict[str, list[float]]:
    repo = training_repo(work)
    params = params_for(repo)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    docker = DockerRunner(settings)
    runners: list[Runner] = [ProcessRunner(settings), docker]
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    try:
        for runner in runners:  # warm-up: page cache, imports, the image's layers
            one_trial(runner, work, repo, params, image, run_id, 0)
        for n in range(1, repeats + 1):
            order = runners if n % 2 else list(reversed(runners))
            for runner in order:
                times[runner.name].append(one_trial(runner, work, repo, params, image, run_id, n))
    finally:
        for container in find_training_containers(docker.client, run_id):
            container.remove(force=True)
    return times


def warm_build_s(settings: Settings) -> tuple[float, Any]:
    """A second build right after a first: nothing changed in between, so nothing is built.
    (The first absorbs any change of mlchain's source made meanwhile in a shared checkout.)"""
    build_images(settings, ["sklearn"])
    started = time.perf_counter()
    refs = build_images(settings, ["sklearn"])
    return time.perf_counter() - started, refs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlchain-bench-") as tmp:
        work = Path(tmp)
        settings = load_settings({"home": work / "home"})
        started = time.perf_counter()
        ref = ensure_image(settings, "sklearn")
        print(f"image {ref.tag}: {'cached' if ref.cached else 'built'} in {time.perf_counter() - started:.1f} s")
        times = compare_runners(settings, work, args.repeats, ref.tag)
        build_s, warm = warm_build_s(settings)
    process, docker = statistics.median(times["process"]), statistics.median(times["docker"])
    ratio = docker / process
    print(f"process runner: median {process:.2f} s  ({', '.join(f'{t:.2f}' for t in times['process'])})")
    print(f"docker runner:  median {docker:.2f} s  ({', '.join(f'{t:.2f}' for t in times['docker'])})")
    verdict = "ok" if ratio <= TARGET_RATIO else "over target"
    print(f"docker/process ratio: {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})")
    print(f"warm image build (nothing changed): {build_s:.2f} s, cached={warm.cached}")


if __name__ == "__main__":
    main()
