"""Inside the training process: Keras uses the files of the dataset cache.

Keras checks a cached dataset file against the checksum of the file at its origin and, when
they differ, downloads it again; the sandbox has no network. The host vouches for the cache's
files (their sha256 is in its manifest, written when it last saw them): a file whose bytes match
the manifest passes, every other file gets Keras' own check. (Imports keras only when the
runner mounted Keras' dataset cache, i.e. when the code loads a Keras dataset.)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlchain import contract
from mlchain.fileio import sha256_file


def vouched_validator(folder: Path, manifest: Mapping[str, str], keras_check: Callable[..., bool]) -> Callable[..., bool]:
    """Keras' ``validate_file``, except that a file of the cache matching the manifest passes."""
    def validate_file(fpath: Any, file_hash: Any, *args: Any, **kwargs: Any) -> bool:
        path = Path(str(fpath))
        expected = manifest.get(path.name)
        if expected and path.parent == folder and path.is_file() and sha256_file(path) == expected:
            return True
        return bool(keras_check(fpath, file_hash, *args, **kwargs))
    return validate_file


def trust_dataset_cache(env: Mapping[str, str] | None = None) -> bool:
    """Install the validator when the Keras dataset cache is mounted; True when installed."""
    env = os.environ if env is None else env
    folder = env.get(contract.ENV_KERAS_DATASETS)
    if not folder:
        return False
    try:
        manifest = json.loads((Path(folder) / contract.DATASET_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    import keras

    module = sys.modules[keras.utils.get_file.__module__]  # file_utils (Keras 3), data_utils (Keras 2)
    keras_check = getattr(module, "validate_file", None)
    if keras_check is None:
        return False
    module.validate_file = vouched_validator(Path(folder), manifest, keras_check)  # type: ignore[attr-defined]
    return True
