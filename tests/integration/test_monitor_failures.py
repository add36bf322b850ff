"""The monitor against real training (process runner unless marked docker): broken
checkpoints, a training script that raises, one that hangs, job6 run on its own
(`mlchain job monitor`), and training containers no current attempt owns."""

from __future__ import annotations

import email
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from docker_support import docker_settings, fresh_run_id, require_docker
from helpers import wait_for
from test_monitor_support import (
    Kill,
    Killer,
    Lines,
    collect,
    epochs_started,
    launch,
    live_ref,
    progress_rows,
    trial_row,
    write_workload,
)

from mlchain.cli import cli
from mlchain.config import Settings
from mlchain.engine.chain import run_chain
from mlchain.monitor import monitor_pass
from mlchain.runners.base import TrialSpec
from mlchain.state import StateStore, TrialRow


def settings_for(tmp_path: Path, **more: Any) -> Settings:
    values: dict[str, Any] = {"home": tmp_path / "home", "runner": "process", "max_restarts": 3,
                              "backoff_base_s": 0.05, "backoff_max_s": 0.5, "monitor_interval_s": 0.2,
                              "hung_after_s": 60.0, **more}
    return Settings(**values)


def output_of(settings: Settings, run_id: str) -> Path:
    row = trial_row(settings, run_id)
    assert row is not None
    return TrialSpec.from_json(row.launched_spec).output_dir


def checkpoint_files(settings: Settings, run_id: str) -> list[Path]:
    row = trial_row(settings, run_id)
    assert row is not None
    ckpt = TrialSpec.from_json(row.launched_spec).checkpoint_dir
    return sorted(ckpt.glob("sklearn-*/epoch-*/model.joblib"))


def test_broken_checkpoints_fall_back_to_the_backup_then_to_scratch_never_crash_looping(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    epochs = 14
    # Held before epoch 13 until the kills are done: training cannot finish before them.
    repo = write_workload(tmp_path, epochs=epochs, epoch_s=0.3, hold_at=epochs - 1)
    run_id = "broken-checkpoints"
    damage: list[str] = []

    def break_checkpoints(row: TrialRow) -> None:
        # Freeze the attempt (no write can finish behind our back), then damage its checkpoints:
        # first only the newest (truncated), the second time both.
        os.killpg(int(row.handle_ref), signal.SIGSTOP)
        files = checkpoint_files(settings, run_id)
        assert len(files) == 2, files
        for file in files[-1:] if not damage else files:
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 3])
            damage.append(file.parent.name)

    killer = Killer(settings, run_id, [Kill(4, 0.02, "group"), Kill(3, 0.02, "group")],
                    before_kill=break_checkpoints, marks_from_kill=True)  # the resumed attempt trains first
    killer.start()
    lines = Lines()
    launch(settings, repo, run_id, lines)
    row = collect(settings, run_id, lines)
    killer.join(timeout=30)
    assert not killer.is_alive() and killer.error is None, repr(killer.error)
    assert len(killer.killed_at) == 2
    assert (row.status, row.restarts) == ("succeeded", 2), lines.text
    log = lines.text  # job3's console: the training log, as it went
    newest = damage[0].removeprefix("epoch-").lstrip("0")
    assert f"the checkpoint of epoch {newest} is unusable" in log, (damage, log)
    assert f"resuming from the checkpoint of epoch {int(newest) - 1}" in log, (damage, log)
    assert "SoftmaxRegression: no usable checkpoint" in log and "training from scratch" in log
    # From scratch after the second kill: every epoch was trained again, and training finished.
    started = epochs_started(output_of(settings, run_id))
    assert started[-epochs:] == list(range(1, epochs + 1))
    assert max(r["epoch"] for r in progress_rows(output_of(settings, run_id))) == epochs


def test_a_training_script_that_raises_is_not_restarted_and_the_email_shows_the_traceback(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    repo = write_workload(tmp_path, epochs=5, epoch_s=0.05, raise_at=2)
    summary = run_chain(settings, str(repo), live=False, run_id="raises")
    (trial,) = summary.trials
    assert summary.status == "failed"
    assert (trial.status, trial.failure_kind, trial.restarts) == ("failed", "code_error", 0)
    kinds = [e.kind for e in summary.events]
    assert "restart" not in kinds and kinds.count("give_up") == 1
    assert "monitor: trial 1: gave up: code_error: the training code raised ValueError" in summary.explain()
    (eml,) = settings.outbox_dir.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes())
    text = "\n".join(p.get_payload(decode=True).decode("utf-8", "replace")  # type: ignore[union-attr]
                     for p in message.walk() if p.get_content_type() == "text/plain")
    assert "Traceback (most recent call last)" in text
    assert "ValueError: the training data is broken at epoch 2" in text
    assert "trial 1: gave up: code_error: the training code raised ValueError" in text  # named in it


def _age_once_hung(settings: Settings, run_id: str, by_s: float) -> None:
    """When the training says it hangs (its marker, then its last log line), make its heartbeat
    files ``by_s`` older: the monitor sees a silence past hung_after_s without the test
    waiting that long, and a slow start on a loaded machine is never taken for a hang."""
    row = wait_for(lambda: trial_row(settings, run_id), 120, "the trial")
    spec = TrialSpec.from_json(row.launched_spec)
    wait_for(lambda: (spec.checkpoint_dir / "hung-once").exists() and spec.log_file.is_file()
             and "hanging now" in spec.log_file.read_text(), 120, "the hang")
    for path in (spec.output_dir / "progress.jsonl", spec.params_file, spec.log_file):
        st = path.stat()
        os.utime(path, (st.st_atime - by_s, st.st_mtime - by_s))


def test_a_hung_training_is_stopped_and_restarted_from_its_checkpoint(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, hung_after_s=60.0)
    repo = write_workload(tmp_path, epochs=6, epoch_s=0.1, hang_after=2)
    run_id = "hangs-once"
    lines = Lines()
    launch(settings, repo, run_id, lines)
    ager = threading.Thread(target=_age_once_hung, args=(settings, run_id, 100.0), daemon=True)
    ager.start()
    row = collect(settings, run_id, lines)
    ager.join(timeout=10)
    assert (row.status, row.restarts) == ("succeeded", 1), lines.text
    (event,) = StateStore(settings.state_db).events(run_id)
    assert event.kind == "restart"
    assert "restart 1/3 after hung (no progress line for" in event.message
    assert "resuming SoftmaxRegression from the checkpoint of epoch 2" in event.message
    assert "hanging now" in lines.text
    assert "SoftmaxRegression: resuming from the checkpoint of epoch 2" in lines.text
    # Epochs 1-2 once, then 3-6 on the second attempt: nothing trained twice.
    assert epochs_started(output_of(settings, run_id)) == [1, 2, 3, 4, 5, 6]


def test_job6_on_its_own_restarts_a_killed_trial(tmp_path: Path) -> None:
    """`mlchain job monitor`, as Jenkins' timed trigger runs it, while nobody else watches."""
    settings = settings_for(tmp_path)
    repo = write_workload(tmp_path, epochs=20, epoch_s=0.25)
    run_id = "job6-alone"
    # job1, job2: the trial runs; no job3 waits on it. (job2 creates the MLflow run after
    # launching the training: kill the training while it does.)
    launcher = threading.Thread(target=launch, args=(settings, repo, run_id))
    launcher.start()
    row = wait_for(lambda: live_ref(trial_row(settings, run_id)) and trial_row(settings, run_id), 120, "the launch")
    out = TrialSpec.from_json(row.launched_spec).output_dir
    wait_for(lambda: len(progress_rows(out)) >= 2, 60, "two epochs")
    pid = int(row.handle_ref)
    os.killpg(pid, signal.SIGKILL)
    launcher.join(timeout=120)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
             30, "the kill")
    env = {"MLCHAIN_RUNNER": "process", "MLCHAIN_BACKOFF_BASE_S": "0"}
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(settings.home), "job", "monitor"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{run_id}: trial 1: restart 1/3 after killed" in result.output
    assert "resuming SoftmaxRegression from the checkpoint of epoch" in result.output
    again = trial_row(settings, run_id)
    assert again is not None and again.attempt == 2 and live_ref(again) not in (None, str(pid))
    # A pass while it runs has nothing to do.
    quiet = runner.invoke(cli, ["--home", str(settings.home), "job", "monitor"], env=env)
    assert quiet.output.strip() == "monitor: nothing to do"
    row = collect(settings, run_id)
    assert (row.status, row.restarts) == ("succeeded", 1)


# --- docker: containers by label ----------------------------------------------------------

@pytest.fixture()
def docker_client() -> Any:
    return require_docker()


@pytest.fixture()
def run_id(docker_client: Any) -> Iterator[str]:
    with fresh_run_id(docker_client) as rid:
        yield rid


@pytest.mark.docker
def test_job6_reports_unknown_containers_and_stops_stale_attempts(tmp_path: Path, docker_client: Any,
                                                                  run_id: str) -> None:
    from docker_support import built_image

    from mlchain.runners.docker import DockerRunner

    image = built_image("sklearn")
    settings = docker_settings(tmp_path / "home")
    store = StateStore(settings.state_db)
    repo = write_workload(tmp_path, epochs=400, epoch_s=0.1)

    def spec(trial: int, attempt: int) -> TrialSpec:
        base = tmp_path / f"t{trial}"
        return TrialSpec(run_id=run_id, trial=trial, framework="sklearn", repo_dir=repo, entry="train.py",
                         params={"epochs": 400, "epoch_s": 0.1, "lr": 0.5}, output_dir=base / "out",
                         checkpoint_dir=base / "ckpt", data_dir=base / "data", attempt=attempt, image=image.tag)

    runner = DockerRunner(settings, client=docker_client)
    unknown = runner.start(spec(1, 1))         # no trial 1 in this state: someone else's
    stale = runner.start(spec(2, 1))           # trial 2 has moved on to attempt 2
    store.create_run(run_id, "file:///x", "x", None, None, status="running")
    store.upsert_trial(run_id, 2, {}, status="running", attempt=2, runner="docker",
                       spec=spec(2, 2).to_json(), handle_ref="launching:0")
    stop = threading.Event()
    try:
        lines = monitor_pass(settings)
        assert any(f"no trial 1 of run {run_id}" in line and "left alone" in line for line in lines), lines
        assert any(f"{run_id}: trial 2: stopped container" in line and "attempt 1 is not the trial's current"
                   in line for line in lines), lines
        unknown.container.reload()
        stale.container.reload()
        assert unknown.container.status == "running"
        assert stale.container.status == "exited"
        # Reported once, not at every pass.
        assert not any("no trial 1" in line for line in monitor_pass(settings))
    finally:
        stop.set()
        unknown.cancel()
