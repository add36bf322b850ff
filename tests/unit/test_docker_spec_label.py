"""The monitor reads each training container's TrialSpec from its label. On an engine shared
by several mlchains (two agents, an upgrade under way), some labels were written by another
version: those containers are passed by, and the monitor goes on."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from mlchain.runners.base import TrialSpec
from mlchain.runners.docker import LABEL_SPEC, spec_of


def _spec() -> TrialSpec:
    return TrialSpec(run_id="r1", trial=2, framework="sklearn", repo_dir=Path("/h/src"), entry="train.py",
                     params={"alpha": 0.1}, output_dir=Path("/h/out"), checkpoint_dir=Path("/h/ckpt"),
                     data_dir=Path("/h/data"), metric="accuracy", attempt=1, image="mlchain-sklearn:abc")


def _container(label: str | None) -> SimpleNamespace:
    return SimpleNamespace(labels={} if label is None else {LABEL_SPEC: label})


def test_a_spec_label_of_this_version_is_read_back() -> None:
    assert spec_of(_container(_spec().to_json())) == _spec()


def test_a_label_another_version_wrote_is_passed_by() -> None:
    other = {**json.loads(_spec().to_json()), "gpus": 2}  # a field this version does not know
    assert spec_of(_container(json.dumps(other))) is None
    missing = json.loads(_spec().to_json())
    del missing["repo_dir"]
    assert spec_of(_container(json.dumps(missing))) is None


def test_a_label_that_is_no_spec_is_passed_by() -> None:
    assert spec_of(_container("{not json")) is None
    assert spec_of(_container(None)) is None
