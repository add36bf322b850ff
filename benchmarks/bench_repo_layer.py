"""The repository layer's build time, cold and warm, side by side.

A repository whose requirements.txt needs one extra package (tabulate) over the sklearn
image: the first ``ensure_repo_image`` builds the layer (pip installs from the package index,
with the framework image's pins as constraints); the second finds it by its tag and builds
nothing. Each round uses requirements new to the engine (a distinct, always-true lower bound),
so the cold build is cold (no Docker layer cache). Target: warm under 3 s.

    MLCHAIN_BASE_IMAGE=mlchain-base:bookworm MLCHAIN_BUILD_CA_BUNDLE=$PIP_CERT \\
        .venv/bin/python benchmarks/bench_repo_layer.py [--repeats 2]

Run by hand, not by CI. Needs a Docker engine (scripts/setup-docker.sh).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from mlchain.config import load_settings
from mlchain.images import docker_client, ensure_image
from mlchain.repo_layer import ensure_repo_image

TARGET_WARM_S = 3.0
TRAIN = "from tabulate import tabulate\nprint(tabulate([[1]]))\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    client = docker_client()
    with tempfile.TemporaryDirectory(prefix="mlchain-bench-layer-") as tmp:
        settings = load_settings({"home": Path(tmp) / "home", "runner": "docker"})
        framework = ensure_image(settings, "sklearn", client=client)
        cold, warm, tags = [], [], []
        for _ in range(args.repeats):
            repo = Path(tmp) / uuid.uuid4().hex[:8]
            repo.mkdir()
            (repo / "train.py").write_text(TRAIN)
            # always true (tabulate is at 0.9 and later), new to the engine each round
            (repo / "requirements.txt").write_text(f"tabulate>=0.0.{uuid.uuid4().int % 10**9}\n")
            started = time.perf_counter()
            built = ensure_repo_image(settings, framework, repo, client=client)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            found = ensure_repo_image(settings, framework, repo, client=client)
            warm.append(time.perf_counter() - started)
            assert built is not None and found is not None and not built.cached and found.cached
            assert found.image_id == built.image_id
            tags.append(built.tag)
        for tag in tags:
            client.images.remove(tag, force=True)
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print(f"repository layer over {framework.tag}, {args.repeats} round(s), medians:")
    print(f"  cold (built)        {cold_s:8.3f} s")
    print(f"  warm (found by tag) {warm_s:8.3f} s   target < {TARGET_WARM_S:g} s: "
          f"{'met' if warm_s < TARGET_WARM_S else 'NOT met'}")
    print(f"  cold / warm         {cold_s / warm_s:8.0f} x")
    return 0 if warm_s < TARGET_WARM_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
