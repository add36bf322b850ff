"""The edges of the hyperparameters found in the code (the finding and rewriting are pure, in
mlchain.literals): reading the entry and the repository modules it imports, and making a
trial's rewritten copy of the repository with the diff and the short list of its changes.

The pushed repository (the run's checkout) is only read: a trial's values go into a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mlchain import outputs
from mlchain.fileio import atomic_write

if TYPE_CHECKING:  # libcst is imported by the job that finds or rewrites, not by the summary's readers
    from mlchain import literals

MAX_FILES = 50             # modules read: the entry and what it imports, transitively
MAX_FILE_BYTES = 1 << 20   # a training script is a few kilobytes
FOUND_FILE = "hyperparameters.json"   # in the run's folder: what job2 found in the pushed code
CODE_DIR = "code"                     # in a trial's folder: its rewritten copy of the repository
DIFF_FILE = "code.diff"               # beside it: the copy's diff against the pushed code
CHANGES_FILE = "code-changes.json"    # beside it: the changes in short form


def _read(repo: Path, relative: str) -> str | None:
    """A Python file of the repository, when it is one: inside it, through no link (a linked
    folder in a copy could lead a rewrite out of it), bounded."""
    root = repo.resolve()
    path = root / relative
    try:
        if not path.is_file() or path.resolve() != Path(os.path.normpath(path)):
            return None
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_FILE_BYTES:
        return None
    return raw.decode("utf-8", "replace")


def _module_file(repo: Path, importer: str, dotted: str) -> str | None:
    """The repository file (relative, posix) a dotted import names, seen from ``importer``."""
    level = len(dotted) - len(dotted.lstrip("."))
    parts = [p for p in dotted.lstrip(".").split(".") if p]
    if level:
        base = PurePosixPath(importer).parent
        for _ in range(level - 1):
            base = base.parent
        roots = [base]
    else:
        here = PurePosixPath(importer).parent
        roots = list(dict.fromkeys([here, PurePosixPath("."), PurePosixPath("src")]))
    for root in roots:
        stem = root.joinpath(*parts) if parts else root
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            normal = os.path.normpath(candidate)
            if normal.startswith("..") or os.path.isabs(normal):
                continue
            if (repo / normal).is_file():
                return PurePosixPath(normal).as_posix()
    return None


def read_sources(repo: Path, entry: str) -> dict[str, str]:
    """The entry's text and that of the repository modules it imports, transitively (entry
    first, then in the order they are imported), bounded to MAX_FILES files."""
    sources: dict[str, str] = {}
    from mlchain import literals

    queue = [PurePosixPath(entry).as_posix()]
    while queue and len(sources) < MAX_FILES:
        relative = queue.pop(0)
        if relative in sources or not relative.endswith(".py"):
            continue
        text = _read(repo, relative)
        if text is None:
            continue
        sources[relative] = text
        for dotted in literals.imported_modules(text):
            found = _module_file(repo, relative, dotted)
            if found is not None and found not in sources:
                queue.append(found)
    return sources


def find(repo: Path, entry: str) -> literals.Found:
    from mlchain import literals

    return literals.find(read_sources(repo, entry))


def save_found(run_dir: Path, found: literals.Found) -> None:
    atomic_write(run_dir / FOUND_FILE, json.dumps(found.to_dict(), indent=1, sort_keys=True), mode=0o644)


def load_found(run_dir: Path) -> literals.Found | None:
    """What job2 found in the run's pushed code, when the run tunes literals (None otherwise)."""
    try:
        text = (run_dir / FOUND_FILE).read_text()
    except FileNotFoundError:
        return None  # most runs: no libcst needed
    from mlchain import literals

    return literals.Found.from_dict(json.loads(text))


def trial_copy(repo: Path, entry: str, found: literals.Found, values: Mapping[str, Any], trial_dir: Path) -> Path:
    """The repository to train this trial on: the pushed one when ``values`` change nothing,
    else a copy (made once per trial, in its folder) with the values written into the code.
    The diff and the short list of changes are kept beside the copy."""
    from mlchain import literals

    sources = read_sources(repo, entry)
    rewritten = literals.rewrite(sources, values)
    atomic_write(trial_dir / DIFF_FILE, literals.unified_diff(sources, rewritten), mode=0o644)
    atomic_write(trial_dir / CHANGES_FILE, json.dumps(literals.changes(found, values)), mode=0o644)
    if not rewritten:
        return repo
    copy = trial_dir / CODE_DIR
    if copy.is_dir():
        return copy
    partial = trial_dir / f".{CODE_DIR}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    # symlinks=True: a link in the repository stays a link, never a copy of what it points at
    shutil.copytree(repo, partial, symlinks=True)
    for relative, text in rewritten.items():
        target = partial / relative
        target.unlink()  # a regular file (read_sources read no link), replaced by the rewritten one
        target.write_text(text)
    os.replace(partial, copy)
    return copy


REWRITE_BROKE = "rewrite_broke_code"  # a trial's failure kind, for the gate only (see failure_for_gate)


def failure_for_gate(failure_kind: str | None, rewritten: bool) -> str | None:
    """Pure: the failure kind the gate weighs. A code error of a trial that trained a rewritten
    copy was caused by the values written (a block too many for the input, say), not by the
    pushed code: the search goes on, where the pushed code's own error would stop the run."""
    if failure_kind == "code_error" and rewritten:
        return REWRITE_BROKE
    return failure_kind


def diff_file(trial_dir: Path) -> Path | None:
    """The trial's diff against the pushed code, when its code was rewritten."""
    path = trial_dir / DIFF_FILE
    try:
        return path if outputs.read_text(path) else None
    except outputs.UnsafeOutput:
        return None


def kept_changes(trial_dir: Path) -> tuple[list[str], str]:
    """A trial's changes in short form and its diff, as trial_copy kept them (empty when none)."""
    try:
        short = outputs.read_text(trial_dir / CHANGES_FILE)
        diff = outputs.read_text(trial_dir / DIFF_FILE)
    except outputs.UnsafeOutput:
        return [], ""
    try:
        lines = [str(x) for x in json.loads(short)] if short else []
    except (ValueError, TypeError):
        lines = []
    return lines, diff or ""
