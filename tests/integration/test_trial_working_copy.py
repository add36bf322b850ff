"""Under the process runner each trial trains in its own copy of the repository: what one trial
writes beside its code never reaches another trial, as in a container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlchain.runners.base import TrialSpec
from mlchain.runners.process import ProcessRunner

# Written the way people write it: the model pickled next to the code.
WRITES_BESIDE_ITS_CODE = """
import json, os, pickle
from mlchain import sdk
p = sdk.params()
found = None
if os.path.exists("model.pkl"):
    with open("model.pkl", "rb") as fh:
        found = pickle.load(fh)
with open("model.pkl", "wb") as fh:
    pickle.dump({"C": p["C"]}, fh)
sdk.report({"accuracy": 0.5, "found_other_model": 0.0 if found is None else 1.0})
"""


def test_each_trial_writes_into_its_own_copy_of_the_repository(tmp_path: Path, make_settings: Any) -> None:
    repo = tmp_path / "runs" / "r" / "src"
    repo.mkdir(parents=True)
    (repo / "train.py").write_text(WRITES_BESIDE_ITS_CODE)
    runner = ProcessRunner(make_settings())
    outputs = []
    for number, c in ((1, 0.5), (2, 2.0)):
        trial = tmp_path / "runs" / "r" / "trials" / str(number)
        spec = TrialSpec(run_id="r", trial=number, framework="sklearn", repo_dir=repo, entry="train.py",
                         params={"C": c}, output_dir=trial / "output", checkpoint_dir=trial / "checkpoints",
                         data_dir=trial / "data")
        info = runner.start(spec).wait(timeout=120)
        assert info.exit_code == 0, (spec.log_file.read_text())
        outputs.append(json.loads((spec.output_dir / "metrics.json").read_text()))

    assert [m["found_other_model"] for m in outputs] == [0.0, 0.0]  # trial 2 never saw trial 1's model
    import pickle

    for number, c in ((1, 0.5), (2, 2.0)):
        kept = tmp_path / "runs" / "r" / "trials" / str(number) / "src" / "model.pkl"
        assert pickle.loads(kept.read_bytes()) == {"C": c}  # each trial's own file, kept
    assert sorted(p.name for p in repo.iterdir()) == ["train.py"]  # the run's checkout untouched
