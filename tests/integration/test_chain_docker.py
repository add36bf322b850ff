"""`mlchain run` end to end with the docker runner on both examples: from the push (a local git
repository) to the email, each trial trained inside its framework's image; the MLflow store says
which image (tag and id) trained each trial."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import pytest
from docker_support import built_image, docker_settings, require_docker

from mlchain.engine.chain import run_chain

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.mark.parametrize("example,framework,threshold", [
    ("digits_sklearn", "sklearn", 0.80),  # the search has to work: the baseline scores about 0.10
    ("digits_cnn", "keras", 0.05),        # one trial: the baseline passes this low gate
])
def test_run_trains_each_trial_in_the_framework_image(tmp_path: Path, git_repo: Any, example: str,
                                                      framework: str, threshold: float) -> None:
    from mlflow.tracking import MlflowClient

    client = require_docker()
    image = built_image(framework)
    repo = git_repo(example, example=example)
    settings = docker_settings(tmp_path / "home", threshold=threshold, max_trials=4, monitor_interval_s=0.5)
    summary = run_chain(settings, str(repo), ref="main", pusher_email="p@example.com", live=False)

    assert summary.status == "passed", summary.explain()
    assert summary.framework == framework
    store = MlflowClient(tracking_uri=settings.resolved_tracking_uri)
    for trial in summary.trials:
        assert trial.runner == "docker"
        tags = store.get_run(trial.mlflow_run_id).data.tags
        assert tags["mlchain.image"] == image.tag
        assert tags["mlchain.image_id"] == image.image_id == client.images.get(image.tag).id
        assert tags["mlchain.framework"] == framework and tags["mlchain.runner"] == "docker"
    # the containers were labelled with the run and the trial
    labelled = client.containers.list(all=True, filters={"label": f"io.mlchain.run={summary.run_id}"})
    assert {c.labels["io.mlchain.trial"] for c in labelled} == {str(t.number) for t in summary.trials}
    for container in labelled:
        container.remove(force=True)
    # ... and the email went out (to the outbox: no SMTP configured)
    assert summary.email is not None and summary.email["method"] == "outbox"
    msg = email.message_from_bytes(Path(summary.email["path"]).read_bytes(), policy=policy.default)
    assert "PASSED" in msg["Subject"]
