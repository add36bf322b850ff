"""Retraining on drift: whether to ask (cooldown, cap per day), the dataset version the run
trains on, and the request itself (the webhook queue, or job1 on Jenkins).

A dataset version is the champion's repository's ``data:`` folder (at the champion's
commit) plus the labeled feedback collected since the last request, as
``feedback.csv`` (the input columns and a ``label`` column), written under
``$MLCHAIN_HOME/datasets/<repo>/<sha256[:12]>/`` with a ``manifest.json``. The name is the
hash of its content (every file's path and bytes, the manifest aside), so the same data is
one version, and a version's folder is never written again once it exists.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlchain.errors import ConfigError, GitError, MlchainError

if TYPE_CHECKING:
    from mlchain.config import Settings
    from mlchain.serving.feedback import Labeled

DAY_S = 86400.0
MANIFEST = "manifest.json"
FEEDBACK_FILE = "feedback.csv"
LABEL_COLUMN = "label"
VERSION_CHARS = 12
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_REASON = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- pure decisions -------------------------------------------------------------------

def refusal(previous: Sequence[float], now: float, cooldown_s: float, max_per_day: int) -> str | None:
    """Why no retraining may be asked now, given the times of the earlier requests, or None
    when it may. The cooldown spaces them; the cap bounds a day, whatever the cooldown is."""
    if max_per_day <= 0:
        return "retraining on drift is capped at 0 runs a day"
    last = max(previous, default=None)
    if last is not None and now - last < cooldown_s:
        return f"cooling down: the last retraining was asked {now - last:,.0f} s ago (cooldown {cooldown_s:,.0f} s)"
    today = sum(1 for t in previous if now - t < DAY_S)
    if today >= max_per_day:
        return f"the cap of {max_per_day} retraining run(s) a day is reached"
    return None


def safe_name(name: str) -> str:
    """Pure: a repository name as one folder name (no separators, no leading dot)."""
    cleaned = _SAFE_NAME.sub("-", name).strip(".-")[:100]
    return cleaned or "repository"


def feedback_csv(rows: Sequence[Labeled]) -> tuple[str, list[str]]:
    """Pure: the feedback as CSV text (input columns in order of first sight, then the label)
    and its header."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row.inputs))
    label = LABEL_COLUMN
    while label in columns:
        label = f"true_{label}"
    header = [*columns, label]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.inputs.get(c)) for c in columns] + [_cell(row.label)])
    return out.getvalue(), header


def _cell(value: Any) -> Any:
    return "" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else value


def content_hash(root: Path) -> str:
    """sha256 over every file under ``root`` (its relative path and bytes), the manifest aside."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p != root / MANIFEST):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --- the dataset version ----------------------------------------------------------------

@dataclass(frozen=True)
class DatasetVersion:
    path: Path
    version: str           # sha256[:12] of the content
    feedback_rows: int
    base_files: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.version, "feedback_rows": self.feedback_rows,
                "base_files": self.base_files}


def write_dataset(datasets_dir: Path, repo_name: str, base: Path | None, feedback: Sequence[Labeled],
                  facts: Mapping[str, Any] | None = None) -> DatasetVersion:
    """Write a dataset version: ``base`` (the repository's data folder, checked: regular files
    and folders only) plus ``feedback`` as feedback.csv; its manifest records ``facts``."""
    from mlchain import outputs

    parent = datasets_dir / safe_name(repo_name)
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".new-", dir=parent))
    try:
        staged = work / "data"
        if base is not None:
            outputs.copy_tree(base, staged)  # refuses links and special files from the repository
        else:
            staged.mkdir()
        base_files = sum(1 for p in staged.rglob("*") if p.is_file())
        text, header = feedback_csv(feedback)
        target = staged / FEEDBACK_FILE
        if target.exists():  # the repository ships a feedback.csv: ours adds its rows when the columns agree
            existing = target.read_text()
            first = existing.splitlines()[0] if existing else ""
            if first.split(",") != header:
                raise ConfigError(f"the data folder already has a {FEEDBACK_FILE} with other columns ({first[:200]})",
                                  hint=f"rename that file, or give it the columns {','.join(header)}")
            text = existing.rstrip("\n") + "\n" + text.split("\n", 1)[1]
        target.write_text(text)
        digest = content_hash(staged)
        version = digest[:VERSION_CHARS]
        final = parent / version
        manifest = {"version": version, "sha256": digest, "repo": repo_name, "feedback_file": FEEDBACK_FILE,
                    "feedback_rows": len(feedback), "columns": header, "label_column": header[-1],
                    "base_files": base_files, "created_at": time.time(), **dict(facts or {})}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if not final.exists():
            staged.rename(final)  # a version's folder appears whole, or not at all
        return DatasetVersion(final, version, len(feedback), base_files)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dataset_problem(settings: Settings, path: Path) -> str | None:
    """Why ``path`` is not a dataset version of this home (None when it is one)."""
    root = settings.datasets_dir.resolve()
    target = path.expanduser().resolve()
    if root not in target.parents:
        return f"it is not inside {root}"
    if not (target / MANIFEST).is_file():
        return f"it has no {MANIFEST}"
    return None


def require_reason(reason: str) -> str:
    """A run's reason as it is stored, tagged and mailed: one line of plain text, bounded."""
    if not reason.strip() or len(reason) > MAX_REASON or _CONTROL.search(reason):
        raise ConfigError(f"--reason must be one line of 1 to {MAX_REASON} printable characters",
                          hint="say why the run runs, briefly (the drift observer writes it)")
    return reason.strip()


def require_dataset(settings: Settings, path: Path) -> Path:
    problem = dataset_problem(settings, path)
    if problem is not None:
        raise ConfigError(f"--dataset {path} is not a dataset version: {problem}",
                          hint=f"name a folder under {settings.datasets_dir} written by the drift observer")
    return path.expanduser().resolve()


# --- where the champion came from -------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """The repository and commit a model version was trained from (its run's tags)."""

    repo_url: str
    repo_name: str
    commit: str
    model_version: str


def source_of(settings: Settings, model_name: str, version: str) -> Source:
    """Read the tags of the run behind ``model_name`` version ``version`` (tracking.py writes them)."""
    from mlchain import tracking

    c = tracking.client(settings)
    mv = c.get_model_version(model_name, version)
    if not mv.run_id:
        raise MlchainError(f"{model_name} version {version} has no run: its repository is unknown",
                           hint="register models through the chain (job5), which records the run")
    tags = c.get_run(mv.run_id).data.tags
    url, commit = tags.get("mlchain.remote"), tags.get("mlchain.commit")
    if not url or not commit:
        raise MlchainError(f"the run of {model_name} version {version} has no mlchain.remote/mlchain.commit tags",
                           hint="only a model trained by the chain can be retrained by it")
    return Source(url, tags.get("mlchain.repo") or model_name, commit, version)


def data_folder_at(settings: Settings, source: Source, into: Path) -> Path | None:
    """Check out ``source`` into ``into`` and return its ``data:`` folder (None when it names none)."""
    from mlchain.gitrefs import LOCAL_SCHEME, is_commit, require_clone_url
    from mlchain.repo_config import data_dir, load_repo_config

    require_clone_url(source.repo_url, (*settings.clone_schemes, LOCAL_SCHEME), source="the champion's repository")
    if not is_commit(source.commit):
        raise GitError(f"the champion's commit {source.commit!r} is not a full commit id")
    for argv in (["git", "clone", "--quiet", "--no-checkout", "--", source.repo_url, str(into)],
                 ["git", "-C", str(into), "checkout", "--quiet", "--detach", source.commit, "--"]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise GitError(f"{' '.join(argv[:4])} failed: {done.stderr.strip()[-500:]}",
                           hint="check that the champion's repository and commit are still reachable")
    return data_dir(into, load_repo_config(into))


def new_dataset(settings: Settings, source: Source, feedback: Sequence[Labeled],
                facts: Mapping[str, Any]) -> DatasetVersion:
    with tempfile.TemporaryDirectory(prefix="mlchain-retrain-") as tmp:
        base = data_folder_at(settings, source, Path(tmp) / "repo")
        return write_dataset(settings.datasets_dir, source.repo_name, base, feedback,
                             {**facts, "repo_url": source.repo_url, "commit": source.commit,
                              "model_version": source.model_version})


# --- the request --------------------------------------------------------------------------

def request_run(settings: Settings, source: Source, reason: str, dataset: DatasetVersion) -> str:
    """Ask for the chain run; returns what names it (the queued run's id, or Jenkins' answer)."""
    if settings.retrain_via == "jenkins":
        from mlchain.jenkins.deploy import trigger

        return trigger(settings, source.repo_url, source.commit,
                       extra={"REASON": reason, "DATASET": str(dataset.path)})
    from mlchain.webhook.queue import WebhookQueue, queue_path

    return WebhookQueue(queue_path(settings.home_abs)).enqueue_retrain(
        repo_url=source.repo_url, repo_name=source.repo_name, commit=source.commit, reason=reason,
        dataset=str(dataset.path))
