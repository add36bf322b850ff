"""sdk.save_model: an MLflow model whose requirements are pinned from this environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sklearn

from mlchain import contract, sdk


def test_a_saved_sklearn_model_pins_what_it_needs_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv(contract.ENV_OUTPUT_DIR, str(tmp_path / "out"))
    x, y = np.random.default_rng(0).random((40, 3)), np.arange(40) % 2
    model = LogisticRegression().fit(x, y)

    path = sdk.save_model(model)

    requirements = (path / "requirements.txt").read_text().split()
    assert f"scikit-learn=={sklearn.__version__}" in requirements
    assert f"numpy=={np.__version__}" in requirements
    assert any(r.startswith("mlflow==") for r in requirements)  # MLflow adds itself
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(str(path))
    assert list(loaded.predict(x)) == list(model.predict(x))


def test_pinned_requirements_name_the_installed_distribution_and_skip_missing_ones() -> None:
    pinned = sdk.pinned_requirements(["sklearn", "numpy", "no_such_module_here"])
    assert pinned == [f"scikit-learn=={sklearn.__version__}", f"numpy=={np.__version__.split('+')[0]}"]
