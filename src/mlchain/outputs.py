"""Reading what a training wrote, without trusting it.

A training's output and checkpoint folders are written by hostile code (a container,
or a process): a file there may be a symlink to a host file, a hard link to one, a
FIFO that blocks the reader, or far too big. The host reads those folders only
through this module: every file is opened with ``O_NOFOLLOW`` (relative to a folder
that was itself opened without following links) and checked on the open descriptor
(a regular file, one link, within a size bound). A tree is checked entirely before
anything is copied, so a violation copies nothing.

Imports only the standard library and mlchain.errors: the sdk inside a container
uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from mlchain.errors import ContractError

# Small files the host parses (metrics.json, data.json, exit.json, checkpoint metadata).
SMALL_FILE_BYTES = 1024 * 1024
# The progress file grows by one line per epoch.
PROGRESS_BYTES = 64 * 1024 * 1024
HINT = ("training output may hold only regular files and folders that the training wrote itself:"
        " no symlinks, hard links, devices or pipes; save the model with sdk.save_model()")

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not block
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafeOutput(ContractError):
    """Something in a training's output that the host refuses to read."""


@dataclass(frozen=True)
class TreeLimits:
    """Bounds on a tree copied out of a training's output (the model folder)."""

    max_bytes: int = 2 * 1024**3
    max_files: int = 10_000
    max_depth: int = 32


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def file_problem(st: os.stat_result, max_bytes: int) -> str | None:
    """Pure: why a file with this status may not be read (None when it may)."""
    if not stat.S_ISREG(st.st_mode):
        return _kind(st.st_mode)
    if st.st_nlink > 1:
        return f"a hard link ({st.st_nlink} names for one file)"
    if st.st_size > max_bytes:
        return f"{st.st_size} bytes, over the bound of {max_bytes}"
    return None


def _open_checked(name: str | Path, max_bytes: int, dir_fd: int | None = None, shown: str = "") -> int:
    """An open descriptor of a regular file that passed the checks; UnsafeOutput otherwise.
    FileNotFoundError passes through."""
    shown = shown or str(name)
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # ELOOP: the name is a symlink (O_NOFOLLOW); anything else is reported as it is.
        what = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise UnsafeOutput(f"refused to read {shown}: {what}", hint=HINT) from exc
    st = os.fstat(fd)
    problem = file_problem(st, max_bytes)
    if problem is not None:
        os.close(fd)
        raise UnsafeOutput(f"refused to read {shown}: {problem}", hint=HINT)
    return fd


def _read_fd(fd: int, max_bytes: int, shown: str) -> bytes:
    chunks, size = [], 0
    with os.fdopen(fd, "rb", closefd=True) as fh:
        while chunk := fh.read(1024 * 1024):
            size += len(chunk)
            if size > max_bytes:  # grew after the check
                raise UnsafeOutput(f"refused to read {shown}: over the bound of {max_bytes} bytes", hint=HINT)
            chunks.append(chunk)
    return b"".join(chunks)


def read_bytes(path: Path, max_bytes: int = SMALL_FILE_BYTES) -> bytes | None:
    """A file of a training's folder (None when missing); UnsafeOutput when it is not a
    plain file of its own. The folder holding it is the host's (created by the host)."""
    try:
        fd = _open_checked(path, max_bytes)
    except FileNotFoundError:
        return None
    return _read_fd(fd, max_bytes, str(path))


def check_file(path: Path, max_bytes: int = SMALL_FILE_BYTES) -> None:
    """UnsafeOutput when ``path`` is there and not a plain file of its own within the bound."""
    with contextlib.suppress(FileNotFoundError):
        os.close(_open_checked(path, max_bytes))


def read_text(path: Path, max_bytes: int = SMALL_FILE_BYTES) -> str | None:
    data = read_bytes(path, max_bytes)
    return None if data is None else data.decode("utf-8", "replace")


def mtime(path: Path) -> float | None:
    """The modification time of the name itself (a symlink's own, never its target's)."""
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


# --- trees -----------------------------------------------------------------------------

def _walk(dir_fd: int, rel: str, limits: TreeLimits, problems: list[str], totals: list[int],
          depth: int, copy_to: Path | None) -> None:
    if depth > limits.max_depth:
        problems.append(f"{rel}: nested deeper than {limits.max_depth} folders")
        return
    with os.scandir(dir_fd) as entries:
        names = sorted(e.name for e in entries)
    for name in names:
        shown = f"{rel}/{name}"
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
            except OSError as exc:
                problems.append(f"{shown}: {exc.strerror}")
                continue
            try:
                if copy_to is not None:
                    (copy_to / name).mkdir()
                _walk(child, shown, limits, problems, totals, depth + 1,
                      None if copy_to is None else copy_to / name)
            finally:
                os.close(child)
            continue
        problem = file_problem(st, limits.max_bytes)
        if problem is not None:
            problems.append(f"{shown}: {problem}")
            continue
        totals[0] += 1
        totals[1] += st.st_size
        if copy_to is not None:
            fd = _open_checked(name, limits.max_bytes, dir_fd=dir_fd, shown=shown)
            with os.fdopen(fd, "rb") as src, open(copy_to / name, "xb") as dst:
                while (chunk := src.read(1024 * 1024)) and totals[2] <= limits.max_bytes:
                    totals[2] += len(chunk)
                    dst.write(chunk)
    if totals[0] > limits.max_files:
        problems.append(f"more than {limits.max_files} files")
    if totals[1] > limits.max_bytes or totals[2] > limits.max_bytes:
        problems.append(f"more than {limits.max_bytes} bytes in all")


def _tree(root: Path, limits: TreeLimits, copy_to: Path | None) -> list[str]:
    try:
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode):
            return [f"{root.name}: {'not a folder' if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)}"]
        fd = os.open(root, _OPEN_DIR)  # O_NOFOLLOW: swapped for a link since, it fails here
    except FileNotFoundError:
        return [f"{root.name}: missing"]
    except OSError as exc:
        return [f"{root.name}: {exc.strerror}"]
    problems: list[str] = []
    try:
        _walk(fd, root.name, limits, problems, [0, 0, 0], 0, copy_to)
    finally:
        os.close(fd)
    return list(dict.fromkeys(problems))


def tree_problems(root: Path, limits: TreeLimits = TreeLimits()) -> list[str]:
    """Pure in effect (reads only names and status): what in ``root`` may not be copied out."""
    return _tree(root, limits, None)


def copy_tree(root: Path, dest: Path, limits: TreeLimits = TreeLimits()) -> Path:
    """Copy ``root`` (a training's folder) to ``dest`` (the host's), after checking all of it:
    a violation copies nothing. The copy reads every file again through checked descriptors,
    so a swap made between the check and the copy is caught too (and the copy removed)."""
    problems = tree_problems(root, limits)
    if problems:
        raise UnsafeOutput(f"refused to copy {root}: " + "; ".join(problems[:10])
                           + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""), hint=HINT)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        problems = _tree(root, limits, dest)
        if problems:
            raise UnsafeOutput(f"refused to copy {root}: " + "; ".join(problems[:10]), hint=HINT)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(dest)
        raise
    return dest
