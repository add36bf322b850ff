"""The dataset cache: the datasets training code downloads at run time, fetched on the host.

The sandbox has no network, so ``keras.datasets.mnist.load_data()`` or
``sklearn.datasets.fetch_openml(...)`` would fail inside it. job2 finds those calls in the
code (the classifier's reading of it), fetches each missing dataset on the host into a cache
under MLCHAIN_HOME, in the libraries' own layout (``keras/datasets/mnist.npz``,
``scikit_learn_data/...``), and the runner mounts the cache read-only where the library looks.

A file the operator puts into the cache is the dataset: the host records its sha256 in the
cache's manifest, and the training side (:mod:`mlchain.dataset_trust`) lets Keras use it
without the origin's checksum (it would otherwise try to download it again, with no network).

``network: true`` in mlchain.yaml: the host fetches nothing, and the container, which then has
a network, fetches what the cache lacks itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mlchain.config import Settings
from mlchain.contract import CONFIG_FILE, DATASET_MANIFEST
from mlchain.detect.evidence import DatasetCall
from mlchain.detect.rules import KERAS_DATASETS
from mlchain.errors import DatasetError
from mlchain.fileio import atomic_write, sha256_file

Echo = Callable[[str], None]

CACHE_DIR = "datasets"
KERAS_DIR = "keras"  # $KERAS_HOME: the files are in its datasets/ folder
SKLEARN_DIR = "scikit_learn_data"
FETCH_TIMEOUT_S = 1800
# What a sklearn fetcher call may say about what to fetch (literal values only); where it
# caches and whether it may download are the host's to decide.
SKLEARN_FETCH_KEYS = frozenset({
    "name", "version", "data_id", "subset", "categories", "percent10", "min_faces_per_person",
    "resize", "funneled", "color", "target_column", "parser", "remove", "shuffle", "random_state",
})


SKLEARN_FETCH = ("import json, sys, sklearn.datasets as d; "
                 "getattr(d, sys.argv[1])(data_home=sys.argv[2], **json.loads(sys.argv[3]))")
KERAS_FETCH = "import sys, keras; getattr(keras.datasets, sys.argv[1]).load_data()"


def cache_root(settings: Settings) -> Path:
    return settings.home_abs / CACHE_DIR


def keras_datasets_dir(settings: Settings) -> Path:
    return cache_root(settings) / KERAS_DIR / "datasets"


def sklearn_data_dir(settings: Settings) -> Path:
    return cache_root(settings) / SKLEARN_DIR


def find_dataset_calls(repo: Path) -> list[DatasetCall]:
    """The calls in the repository's code that download a dataset, in path and line order."""
    from mlchain.detect.evidence import datasets_in
    from mlchain.detect.scanning import RepoScanner

    return [call for source in RepoScanner(repo).sources() for call in datasets_in(source)]


def keras_file(call: DatasetCall) -> str | None:
    """The name the call's dataset has in Keras' datasets folder (its ``path=``, when a plain name)."""
    path = dict(call.kwargs).get("path")
    if isinstance(path, str) and path and "/" not in path and path not in (".", ".."):
        return path
    return KERAS_DATASETS.get(call.name)


def missing_message(call: DatasetCall, where: Path, why: str) -> str:
    return (f"the training code loads the dataset {call.name} ({call.where}: {call.call}); it is not in the "
            f"dataset cache, and fetching it on this host failed: {why}")


def _fix(where: Path) -> str:
    return (f"put the file at {where} (the library's own cache layout; the host copies nothing else in), "
            f"or set `network: true` in {CONFIG_FILE} to let a trusted repository fetch its own")


def _run_fetch(argv: list[str], env_update: dict[str, str]) -> str | None:
    """Run a library's own download on the host; None when it worked, else its last line."""
    env = {**os.environ, **env_update}
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer within {FETCH_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def _keras(settings: Settings, calls: Sequence[DatasetCall], network: bool, echo: Echo | None) -> str | None:
    folder = keras_datasets_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [(call, keras_file(call)) for call in calls]
    for call, name in wanted:
        if name is None or (folder / name).exists() or network:
            continue
        if echo is not None:
            echo(f"dataset cache: fetching keras dataset {call.name} on the host into {folder}")
        why = _run_fetch([sys.executable, "-c", KERAS_FETCH, call.name], {"KERAS_HOME": str(folder.parent)})
        if why is not None or not (folder / name).exists():
            raise DatasetError(missing_message(call, folder / name, why or "it left no file"), hint=_fix(folder / name))
    if network and not all(name is not None and (folder / name).exists() for _, name in wanted):
        return None  # the container fetches its own into its writable home
    manifest = {name: sha256_file(folder / name) for _, name in wanted
                if name is not None and (folder / name).is_file()}
    if manifest:
        atomic_write(folder / DATASET_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True), mode=0o644)
    return str(folder)


def _sklearn(settings: Settings, calls: Sequence[DatasetCall], network: bool, echo: Echo | None) -> str | None:
    folder = sklearn_data_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    if network:
        return None  # the container fetches its own into its writable home
    for call in calls:
        kwargs = {k: v for k, v in call.kwargs if k in SKLEARN_FETCH_KEYS}
        # The fetcher finds what it cached before without the network, and downloads what it lacks.
        why = _run_fetch([sys.executable, "-c", SKLEARN_FETCH, call.name, str(folder), json.dumps(kwargs)], {})
        if why is not None:
            raise DatasetError(missing_message(call, folder, why), hint=_fix(folder / "..."))
    return str(folder)


def prepare_datasets(settings: Settings, calls: Sequence[DatasetCall], *, network: bool,
                     echo: Echo | None = None) -> dict[str, str]:
    """Make sure the cache holds what ``calls`` load (fetching on the host unless ``network``);
    the cache folders to mount, by library. Raises DatasetError naming the dataset and the fix."""
    mounts: dict[str, str] = {}
    for library, prepare in (("keras", _keras), ("sklearn", _sklearn)):
        mine = [call for call in calls if call.library == library]
        if mine:
            folder = prepare(settings, mine, network, echo)
            if folder is not None:
                mounts[library] = folder
    return mounts
