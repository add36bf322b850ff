"""The interface every runner shares: a spec in, a handle out.

A handle is what job3 waits on and what job6 (the monitor) inspects: exit
code, OOM flag, the signal that ended it, the last log lines and the age of the
last progress line (the heartbeat). Everything the monitor's pure classifier
needs is in ``ExitInfo``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from mlchain import contract, outputs
from mlchain.fileio import atomic_write

Status = Literal["created", "running", "exited", "missing"]

# Labels (docker) and state columns (process) that find a trial again.
LABEL_MANAGED = "io.mlchain.managed"
LABEL_RUN = "io.mlchain.run"
LABEL_TRIAL = "io.mlchain.trial"
LABEL_JOB = "io.mlchain.job"
LABEL_ATTEMPT = "io.mlchain.attempt"


@dataclass(frozen=True)
class TrialSpec:
    """Everything needed to start (or restart) one training attempt."""

    run_id: str
    trial: int
    framework: str
    repo_dir: Path          # read-only inside the sandbox
    entry: str              # relative to repo_dir
    params: dict[str, object]
    output_dir: Path        # the training's: metrics.json, progress.jsonl, model/ (see host_dir)
    checkpoint_dir: Path    # keyed by trial; survives restarts
    data_dir: Path          # read-only
    metric: str = contract.DEFAULT_METRIC
    attempt: int = 1
    image: str | None = None
    job: str = "classify"  # the role (`mlchain job ROLE`) that launched this attempt: a container label
    network: bool = False   # mlchain.yaml's network: (the sandbox has none otherwise)
    # The dataset cache's folders this training reads, by library ("keras": its datasets
    # folder, "sklearn": its data home), on the host.
    datasets: dict[str, str] = field(default_factory=dict)
    python: str | None = None  # the process runner's interpreter: the repository's venv when it has requirements

    @property
    def host_dir(self) -> Path:
        """The host's files of this trial (train.log, params.json, the log follower's cursor),
        beside the output folder, never in it: the training controls its output folder, and a
        name there may be a symlink to a host file by the time the host writes it."""
        return self.output_dir.parent / f"{self.output_dir.name}-host"

    @property
    def params_file(self) -> Path:
        return self.host_dir / "params.json"

    @property
    def log_file(self) -> Path:
        return self.host_dir / "train.log"

    @property
    def trial_key(self) -> str:
        return f"{self.run_id}-t{self.trial}"

    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_RUN: self.run_id,
            LABEL_TRIAL: str(self.trial),
            LABEL_JOB: self.job,
            LABEL_ATTEMPT: str(self.attempt),
        }

    def contract_env(self, repo_dir: str | None = None, output_dir: str | None = None,
                     checkpoint_dir: str | None = None, data_dir: str | None = None,
                     params_file: str | None = None) -> dict[str, str]:
        """The contract's environment; a sandbox passes its own mount points."""
        out = output_dir or str(self.output_dir)
        return {
            contract.ENV_REPO_DIR: repo_dir or str(self.repo_dir),
            contract.ENV_ENTRY: self.entry,
            contract.ENV_PARAMS_FILE: params_file or str(self.params_file),
            contract.ENV_OUTPUT_DIR: out,
            contract.ENV_CHECKPOINT_DIR: checkpoint_dir or str(self.checkpoint_dir),
            contract.ENV_DATA_DIR: data_dir or str(self.data_dir),
            contract.ENV_METRIC: self.metric,
            contract.ENV_TRIAL_KEY: self.trial_key,
        }

    def dataset_env(self, keras_datasets: str | None = None, sklearn_data: str | None = None) -> dict[str, str]:
        """Where the libraries look for their downloads: the dataset cache (a sandbox passes its
        mount points). Keras looks in $KERAS_HOME/datasets, scikit-learn in $SCIKIT_LEARN_DATA."""
        env: dict[str, str] = {}
        if "keras" in self.datasets:
            folder = keras_datasets or self.datasets["keras"]
            env["KERAS_HOME"] = str(Path(folder).parent)
            env[contract.ENV_KERAS_DATASETS] = folder
        if "sklearn" in self.datasets:
            env["SCIKIT_LEARN_DATA"] = sklearn_data or self.datasets["sklearn"]
        return env

    def prepare(self) -> None:
        """Create the folders and write this attempt's params file (in the host's folder, by
        a rename: a new file, readable by the training's user)."""
        for folder in (self.output_dir, self.checkpoint_dir, self.data_dir, self.host_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # 0644 whatever the umask: the sandbox's user reads it through a read-only mount
        atomic_write(self.params_file, json.dumps(self.params, indent=2, sort_keys=True), mode=0o644)

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("repo_dir", "output_dir", "checkpoint_dir", "data_dir"):
            d[k] = str(d[k])
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialSpec:
        d = json.loads(text)
        for k in ("repo_dir", "output_dir", "checkpoint_dir", "data_dir"):
            d[k] = Path(d[k])
        return cls(**d)


@dataclass
class ExitInfo:
    """What a finished (or vanished) attempt left behind."""

    exit_code: int | None = None     # None while running or when unknown
    oom_killed: bool = False
    signal: int | None = None        # the signal that ended it, when known
    engine_lost: bool = False        # the container/process disappeared (engine restart)
    last_lines: list[str] = field(default_factory=list)
    heartbeat_age_s: float | None = None  # seconds since the last progress line


class TrainingHandle(Protocol):
    """One training attempt, wherever it runs."""

    ref: str          # container id or pid: enough for ``Runner.attach``
    runner: str       # "docker" or "process"
    spec: TrialSpec

    def wait(self, timeout: float | None = None) -> ExitInfo: ...
    def status(self) -> Status: ...
    def logs(self, tail: int | None = None) -> str: ...
    def cancel(self) -> None: ...
    def exit_info(self) -> ExitInfo: ...


class Runner(Protocol):
    name: str

    def start(self, spec: TrialSpec) -> TrainingHandle: ...
    def attach(self, spec: TrialSpec, ref: str) -> TrainingHandle: ...


def open_log(path: Path, append: bool = False) -> int:
    """A descriptor of a trial's log file; never through a symlink."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT) if append else os.O_RDONLY
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def heartbeat_age(spec: TrialSpec, now: float | None = None) -> float | None:
    """Seconds since the last progress line, from the progress file's mtime (else the log's)."""
    mtime = outputs.mtime(spec.output_dir / contract.PROGRESS_FILE) or outputs.mtime(spec.log_file)
    if mtime is None:
        return None
    return max(0.0, (now or time.time()) - mtime)


def follow_log(path: Path, echo: object, stop: object, poll_s: float = 0.2) -> None:
    """Echo the lines appended to ``path`` until ``stop`` (a threading.Event) is set.

    Every runner writes its training output to the trial's train.log, so one
    follower serves them all, in whichever process is waiting."""
    import threading

    assert isinstance(stop, threading.Event)
    position = 0
    pending = ""
    while True:
        finished = stop.is_set()
        try:
            with os.fdopen(open_log(path), errors="replace") as fh:
                fh.seek(position)
                chunk = fh.read()
                position = fh.tell()
        except OSError:  # not there yet (or a symlink, never followed)
            chunk = ""
        if chunk:
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                echo(line)  # type: ignore[operator]
        if finished:
            if pending:
                echo(pending)  # type: ignore[operator]
            return
        stop.wait(poll_s)
