"""A training's output folder against the host: links, special files and sizes (issue 13, items 2 and 3).

The training runs for real (a container of the sklearn image, or a local process) and
plants what an attacker would: symlinks to host files, a hard link, a named pipe, a link
where the host keeps its own files. The host must read nothing through them (the trial
fails, saying why, and nothing reaches MLflow) and write nothing through them (the host
files keep their bytes, owner and mode, through a restart of the training).

Hostile inputs tried: 8 read escapes in containers (test_read_escape_fails_the_trial),
10 links planted before a restart (8 files, 2 folders) under each of the two runners (20),
5 forms checked without a container (hard link, FIFO, device, oversize file, too many
files), 3 links among the checkpoints the monitor reads, and 7 malformed metrics.json: 43.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import docker_settings, make_spec, write_repo

from mlchain import outputs, trial
from mlchain.config import Settings
from mlchain.monitor import supervise_trial
from mlchain.runners.base import ExitInfo, TrialSpec
from mlchain.state import StateStore

SECRET = "host-secret-4f1c9e"


@pytest.fixture()
def host_files(tmp_path: Path) -> dict[str, Path]:
    """Host files an attacker aims at, outside every folder a training may write."""
    folder = tmp_path / "host-only"
    folder.mkdir()
    files = {
        "secret": folder / "shadow",
        "metrics": folder / "metrics.json",
        "progress": folder / "progress.jsonl",
        "data": folder / "data.json",
    }
    files["secret"].write_text(f"root:{SECRET}:19000:0:99999:7:::\n")
    files["metrics"].write_text(f'{{"accuracy": 0.99, "stolen": "{SECRET}"}}')
    files["progress"].write_text(f'{{"epoch": 1, "stolen": "{SECRET}"}}\n')
    files["data"].write_text(f'{{"hash": "{SECRET}"}}')
    for path in files.values():
        path.chmod(0o600)
    return files


def _script(body: str) -> str:
    return textwrap.dedent("""
        import json, os
        from mlchain import sdk
        out = os.environ["MLCHAIN_OUTPUT_DIR"]
        model = os.path.join(out, "model")
    """) + textwrap.dedent(body)


MLMODEL = """
os.makedirs(model, exist_ok=True)
with open(os.path.join(model, "MLmodel"), "w") as fh:
    fh.write("flavors: {}\\n")
with open(os.path.join(model, "weights.bin"), "wb") as fh:
    fh.write(b"w" * 1000)
"""

# name -> (what the training does, words the failure must contain)
READ_ESCAPES: dict[str, tuple[str, str]] = {
    "symlink in model/": (MLMODEL + 'os.symlink(HOST["secret"], os.path.join(model, "stolen.txt"))\n'
                          'sdk.report({"accuracy": 0.99})', "model/stolen.txt: a symlink"),
    "model/ is a symlink": (('os.symlink(os.path.dirname(HOST["secret"]), model)\n'
                            'sdk.report({"accuracy": 0.99})'), "model: a symlink"),
    "folder symlink in model/": (MLMODEL + 'os.symlink(os.path.dirname(HOST["secret"]), os.path.join(model, "etc"))\n'
                                 'sdk.report({"accuracy": 0.99})', "model/etc: a symlink"),
    "hard link in model/": (MLMODEL + 'open(os.path.join(out, "elsewhere"), "w").write("x")\n'
                            'os.link(os.path.join(out, "elsewhere"), os.path.join(model, "hard"))\n'
                            'sdk.report({"accuracy": 0.99})', "model/hard: a hard link"),
    "named pipe in model/": (MLMODEL + 'os.mkfifo(os.path.join(model, "pipe"))\n'
                             'sdk.report({"accuracy": 0.99})', "model/pipe: a named pipe"),
    "metrics.json is a symlink": (MLMODEL + 'sdk.report({"accuracy": 0.5})\n'
                                  'os.remove(os.path.join(out, "metrics.json"))\n'
                                  'os.symlink(HOST["metrics"], os.path.join(out, "metrics.json"))\n'
                                  'os._exit(0)  # past the entry\'s own check, which the link fails in here',
                                  "metrics.json: a symlink"),
    "progress.jsonl is a symlink": (MLMODEL + 'os.symlink(HOST["progress"], os.path.join(out, "progress.jsonl"))\n'
                                    'sdk.report({"accuracy": 0.99})', "progress.jsonl: a symlink"),
    "data.json is a symlink": (MLMODEL + 'os.symlink(HOST["data"], os.path.join(out, "data.json"))\n'
                               'sdk.report({"accuracy": 0.99})', "data.json: a symlink"),
}


def _artifact_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.docker
@pytest.mark.parametrize("attack", sorted(READ_ESCAPES))
def test_read_escape_fails_the_trial(attack: str, tmp_path: Path, run_id: str, sklearn_image: Any,
                                     host_files: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    from mlchain import tracking
    from mlchain.runners.docker import DockerRunner

    body, expected = READ_ESCAPES[attack]
    script = _script(f"HOST = {({k: str(v) for k, v in host_files.items()})!r}\n" + body)
    repo = write_repo(tmp_path, script)
    settings = docker_settings(tmp_path / "home")
    spec = make_spec(tmp_path, run_id, repo, sklearn_image.tag)
    handle = DockerRunner(settings).start(spec)
    info = handle.wait(timeout=120)
    assert info.exit_code == 0, "\n".join(info.last_lines)

    outcome = trial.collect(spec, info, hung_after_s=300)
    assert outcome.status == "failed" and outcome.verdict.kind == "contract_error"
    assert expected in outcome.verdict.reason and "refused" in outcome.verdict.reason
    assert outcome.failure_log is not None and "no symlinks, hard links" in outcome.failure_log
    assert outcome.metrics == {} and outcome.metric is None and outcome.model_dir is None
    assert not (spec.host_dir / "model").exists()  # the check comes first: nothing copied

    mlflow_run = tracking.start_run(settings, "repo", "repo-trial-1", {})
    trial.log_outcome(settings, mlflow_run, spec, outcome, runner="docker", image=None, image_id=None,
                      restarts=0)
    client = MlflowClient(settings.resolved_tracking_uri)
    logged = client.get_run(mlflow_run)
    assert logged.info.status == "FAILED"
    assert client.list_artifacts(mlflow_run) == []
    assert SECRET not in repr(logged.data.tags) + repr(logged.data.metrics)
    assert SECRET.encode() not in _artifact_bytes(settings.artifact_root)
    assert host_files["secret"].read_text().startswith("root:" + SECRET)


@pytest.mark.docker
def test_a_clean_model_is_copied_and_logged(tmp_path: Path, run_id: str, sklearn_image: Any) -> None:
    """The control: the same training without a planted link logs its model."""
    from mlflow.tracking import MlflowClient

    from mlchain import tracking
    from mlchain.runners.docker import DockerRunner

    repo = write_repo(tmp_path, _script(MLMODEL + 'sdk.report({"accuracy": 0.99})'))
    settings = docker_settings(tmp_path / "home")
    spec = make_spec(tmp_path, run_id, repo, sklearn_image.tag)
    info = DockerRunner(settings).start(spec).wait(timeout=120)
    outcome = trial.collect(spec, info, hung_after_s=300)
    assert outcome.status == "succeeded" and outcome.metric == 0.99
    mlflow_run = tracking.start_run(settings, "repo", "repo-trial-1", {})
    trial.log_outcome(settings, mlflow_run, spec, outcome, runner="docker", image=None, image_id=None,
                      restarts=0)
    names = sorted(a.path for a in MlflowClient(settings.resolved_tracking_uri).list_artifacts(mlflow_run, "model"))
    assert names == ["model/MLmodel", "model/weights.bin"]
    assert not (spec.host_dir / "model").exists()  # the host's copy is dropped once MLflow has it


# --- writes: the host never writes through what the training planted ---------------------

PLANTED = ("train.log", ".docker-logs.cursor", ".docker-logs.lock", "params.json", "exit.json",
           "supervisor.pid", "exit.tmp", "stolen-file")
PLANTED_DIRS = ("linked-folder", "linked-folder-2")

RESTARTED = """
import os, signal, sys, time
from mlchain import sdk
out = os.environ["MLCHAIN_OUTPUT_DIR"]
marker = os.path.join(out, "first-attempt-done")
if not os.path.exists(marker):
    for name in PLANTED:
        path = os.path.join(out, name)
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(TARGETS[name], path)
    for name in PLANTED_DIRS:
        os.symlink(os.path.dirname(TARGETS["train.log"]), os.path.join(out, name))
    open(marker, "w").write("1")
    print("attempt one planted its links", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
print("attempt two trains", flush=True)
sdk.report({"accuracy": 0.9})
"""


def _snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int, int, int]]:
    out = {}
    for path in paths:
        st = path.stat()
        out[path] = (path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def _supervised(settings: Settings, runner: Any, spec: TrialSpec, runner_name: str) -> tuple[Any, list[str]]:
    """Start attempt 1 and let job3's wait (follower, monitor logic, restart) carry the trial."""
    store = StateStore(settings.state_db)
    store.create_run(spec.run_id, "file:///repo", "repo", None, None, status="running")
    handle = runner.start(spec)
    store.upsert_trial(spec.run_id, spec.trial, spec.params, runner=runner_name, spec=spec.to_json(),
                       status="running", handle_ref=handle.ref)
    lines: list[str] = []
    outcome = supervise_trial(settings, store, spec.run_id, spec.trial, echo=lines.append)
    return outcome, lines


def _host_targets(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "host-only"
    folder.mkdir()
    targets = {}
    for name in PLANTED:
        path = folder / f"target-{name.strip('.')}"
        path.write_text(f"host file behind {name}: {SECRET}\n")
        path.chmod(0o600)
        targets[name] = path
    return targets


def _assert_restarted_and_untouched(outcome: Any, lines: list[str], spec: TrialSpec,
                                    before: dict[Path, tuple[bytes, int, int, int]]) -> None:
    assert outcome.status == "succeeded", (outcome, lines)
    log = spec.log_file.read_text()
    assert "attempt one planted its links" in log and "attempt two trains" in log
    assert _snapshot(list(before)) == before  # bytes, mode, owner: every host file as it was
    folder = next(iter(before)).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in before)  # nothing created there


@pytest.mark.docker
def test_docker_restart_writes_nothing_through_planted_links(tmp_path: Path, run_id: str, sklearn_image: Any) -> None:
    from mlchain.runners.docker import DockerRunner

    targets = _host_targets(tmp_path)
    before = _snapshot(list(targets.values()))
    script = (f"PLANTED = {PLANTED!r}\nPLANTED_DIRS = {PLANTED_DIRS!r}\n"
              f"TARGETS = {({k: str(v) for k, v in targets.items()})!r}\n" + RESTARTED)
    repo = write_repo(tmp_path, script)
    settings = docker_settings(tmp_path / "home", backoff_base_s=0.05, monitor_interval_s=0.5, max_restarts=2)
    spec = make_spec(tmp_path, run_id, repo, sklearn_image.tag)
    outcome, lines = _supervised(settings, DockerRunner(settings), spec, "docker")
    _assert_restarted_and_untouched(outcome, lines, spec, before)
    assert any("restart 1/2 after killed" in line for line in lines), lines


def test_process_restart_writes_nothing_through_planted_links(tmp_path: Path) -> None:
    from mlchain.runners.process import ProcessRunner

    targets = _host_targets(tmp_path)
    before = _snapshot(list(targets.values()))
    script = (f"PLANTED = {PLANTED!r}\nPLANTED_DIRS = {PLANTED_DIRS!r}\n"
              f"TARGETS = {({k: str(v) for k, v in targets.items()})!r}\n" + RESTARTED)
    repo = write_repo(tmp_path, script)
    settings = Settings(home=tmp_path / "home", runner="process", backoff_base_s=0.05, monitor_interval_s=0.5,
                        max_restarts=2)
    spec = TrialSpec(run_id="r-links", trial=1, framework="sklearn", repo_dir=repo, entry="train.py", params={},
                     output_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt", data_dir=tmp_path / "data")
    outcome, lines = _supervised(settings, ProcessRunner(settings), spec, "process")
    _assert_restarted_and_untouched(outcome, lines, spec, before)


# --- the checks themselves, on files made here ------------------------------------------

def test_a_hard_link_a_fifo_and_a_device_are_refused_and_a_fifo_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "plain").write_text("ok")
    os.link(out / "plain", out / "twin")
    os.mkfifo(out / "pipe")
    assert outputs.read_text(out / "missing") is None
    with pytest.raises(outputs.UnsafeOutput, match="a hard link"):
        outputs.read_text(out / "twin")
    with pytest.raises(outputs.UnsafeOutput, match="a named pipe"):
        outputs.read_text(out / "pipe")  # O_NONBLOCK: refused at once, no writer needed
    with pytest.raises(outputs.UnsafeOutput, match="a device"):
        outputs.read_text(Path("/dev/zero"))


def test_a_tree_over_its_bounds_is_refused_whole(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(outputs.UnsafeOutput, match="big.bin: 5000 bytes, over the bound of 4096"):
        outputs.copy_tree(model, tmp_path / "copy", outputs.TreeLimits(max_bytes=4096))
    assert not (tmp_path / "copy").exists()
    for i in range(5):
        (model / f"part{i}").write_text("p")
    assert outputs.tree_problems(model, outputs.TreeLimits(max_files=4)) == ["more than 4 files"]
    copied = outputs.copy_tree(model, tmp_path / "copy")
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in model.iterdir())
    assert (copied / "big.bin").read_bytes() == b"x" * 5000


def test_the_monitor_reads_no_checkpoint_through_a_link(tmp_path: Path) -> None:
    from mlchain.sdk import checkpoint_summary

    host = tmp_path / "host-only"
    (host / "epoch-000009").mkdir(parents=True)
    meta = f'{{"epoch": 9, "estimator": "{SECRET}", "resumable": true}}'
    (host / "meta.json").write_text(meta)
    (host / "epoch-000009" / "meta.json").write_text(meta)
    ckpt = tmp_path / "ckpt"
    (ckpt / "sklearn-abc" / "epoch-000007").mkdir(parents=True)
    (ckpt / "sklearn-abc" / "epoch-000007" / "meta.json").symlink_to(host / "meta.json")
    (ckpt / "sklearn-abc" / "epoch-000008").symlink_to(host / "epoch-000009")
    (ckpt / "linked-abc").symlink_to(host)
    summary = checkpoint_summary(ckpt)
    assert SECRET not in summary
    assert summary == "resuming model from the checkpoint of epoch 7"  # its own folder, meta unread


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", "metrics.json is not valid JSON"),
    ("[0.9]", "metrics.json holds a list, not an object of metrics"),
    ('{"accuracy": "0.9"}', "metrics.json: 'accuracy' is str, not a number"),
    ('{"accuracy": true}', "metrics.json: 'accuracy' is bool, not a number"),
    ('{"accuracy": {"$gt": 0}}', "metrics.json: 'accuracy' is dict, not a number"),
    ("{" + ",".join(f'"m{i}": 1' for i in range(1001)) + "}", "1001 metrics, over the bound of 1000"),
    ('{"' + "a" * 300 + '": 1}', "a metric name is over 250 characters"),
])
def test_a_hostile_metrics_file_fails_the_trial_with_what_is_wrong(text: str, expected: str, tmp_path: Path) -> None:
    spec = TrialSpec(run_id="r-metrics", trial=1, framework="sklearn", repo_dir=tmp_path, entry="train.py",
                     params={}, output_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt",
                     data_dir=tmp_path / "data")
    spec.output_dir.mkdir()
    (spec.output_dir / "metrics.json").write_text(text)
    outcome = trial.collect(spec, ExitInfo(exit_code=0), hung_after_s=300)
    assert (outcome.status, outcome.verdict.kind) == ("failed", "contract_error")
    assert expected in outcome.verdict.reason
    assert outcome.failure_log is not None and "sdk.report({'accuracy': <value>})" in outcome.failure_log
    assert trial.parse_metrics('{"accuracy": 1, "loss": 0.25}') == {"accuracy": 1.0, "loss": 0.25}
