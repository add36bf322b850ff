"""Writing a file whole and reading the end of one: the one home of both.

Standard library only: the SDK (inside the training container) imports it too.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

_READ_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not block


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems refuse it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes, *, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it (a new name, so never
    through a symlink planted there), fsync, rename over ``path``, fsync of the folder. A
    reader, or a kill at any moment, sees the old content or the new, never half of it.
    ``mode``: the file's permissions (default: the temporary file's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_tail_bytes(path: str | Path, limit: int | None, *, follow_symlinks: bool = False) -> tuple[bytes, int] | None:
    """The last ``limit`` bytes of a regular file (all of it for None) and the file's size;
    None when it is missing, unreadable, not a regular file, or (unless ``follow_symlinks``) a
    symlink: a training controls its output folder and may put a link to a host file there."""
    try:
        fd = os.open(path, _READ_NOFOLLOW & ~os.O_NOFOLLOW if follow_symlinks else _READ_NOFOLLOW)
    except OSError:  # missing, or a symlink (ELOOP)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        start = 0 if limit is None else max(size - limit, 0)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        remaining = size - start
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), size
    except OSError:
        return None
    finally:
        os.close(fd)


def last_lines(text: str, n: int) -> list[str]:
    """The last ``n`` lines of ``text`` (none for n <= 0)."""
    return text.splitlines()[-n:] if n > 0 else []


def tail_text(path: str | Path, lines: int | None = None, *, max_bytes: int | None = None,
              follow_symlinks: bool = False) -> str:
    """The end of a text file: its last ``lines`` lines (all for None) within its last
    ``max_bytes`` bytes (all for None); "" when it cannot be read (see read_tail_bytes)."""
    read = read_tail_bytes(path, max_bytes, follow_symlinks=follow_symlinks)
    if read is None:
        return ""
    text = read[0].decode("utf-8", "replace")
    return "\n".join(last_lines(text, lines)) if lines else text


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks (checkpoints and datasets can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
