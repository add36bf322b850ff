"""The training contract: what a pushed repository provides and what its entry finds.

The environment variables below are the whole interface between mlchain and the
training code (``mlchain.sdk`` reads them). ``mlchain.yaml`` is validated in
:mod:`mlchain.repo_config`, which needs pydantic: this module imports nothing heavy,
since the sdk in every training process and the classifier import it.
"""

from __future__ import annotations

from typing import Literal

CONFIG_FILE = "mlchain.yaml"
FRAMEWORKS = ("keras", "keras2", "sklearn")
Framework = Literal["keras", "keras2", "sklearn"]

# Environment of a training process (container or subprocess).
ENV_REPO_DIR = "MLCHAIN_REPO_DIR"
ENV_ENTRY = "MLCHAIN_ENTRY"
ENV_PARAMS_FILE = "MLCHAIN_PARAMS_FILE"
ENV_OUTPUT_DIR = "MLCHAIN_OUTPUT_DIR"
ENV_CHECKPOINT_DIR = "MLCHAIN_CHECKPOINT_DIR"
ENV_DATA_DIR = "MLCHAIN_DATA_DIR"
ENV_METRIC = "MLCHAIN_METRIC"
ENV_TRIAL_KEY = "MLCHAIN_TRIAL_KEY"
# The dataset cache: Keras' datasets folder, whose files the host vouches for in its manifest.
ENV_KERAS_DATASETS = "MLCHAIN_KERAS_DATASETS"
DATASET_MANIFEST = ".mlchain-manifest.json"

DEFAULT_ENTRY = "train.py"  # the entry preferred when it trains, and taken when no file is seen to train
DEFAULT_METRIC = "accuracy"  # the gate metric when mlchain.yaml names none
METRICS_FILE = "metrics.json"
PROGRESS_FILE = "progress.jsonl"
MODEL_DIR = "model"
# Where the metric came from (written by mlchain-train, read by the host through outputs.py).
PROVENANCE_FILE = "provenance.json"
# Files kept as MLflow artifacts of the trial: the executed notebook, model files the code wrote.
ARTIFACTS_DIR = "artifacts"
NOTEBOOK_ARTIFACTS = "notebook"
MODEL_FILE_ARTIFACTS = "model-files"
# Model files training code writes itself, kept as artifacts.
MODEL_FILE_SUFFIXES = (".h5", ".keras", ".joblib", ".pkl")
PROGRESS_PREFIX = "MLCHAIN_PROGRESS "
# How mlchain-train says what went wrong (its last such line says how to fix a broken contract).
ERROR_PREFIX = "mlchain-train: error: "


def last_complaint(log_text: str | None) -> str | None:
    """The last thing mlchain-train said was wrong, from a training log."""
    said = [line.split(ERROR_PREFIX, 1)[1].strip() for line in (log_text or "").splitlines() if ERROR_PREFIX in line]
    return said[-1] if said else None
