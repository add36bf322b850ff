"""What may reach git from outside: refs, commit ids and clone URLs. Pure: no I/O.

A ref or URL that git would read as an option (``--upload-pack=...``) runs a command on the
host, so every value from a push, a flag or a build parameter is checked here before git
sees it (and git calls put ``--`` or ``--end-of-options`` before it as well). Refs follow
``git check-ref-format --allow-onelevel``, plus one rule of ours: no component starts with
``-``. Clone URLs name one of the schemes a deployment allows; the remote-helper syntax
(``ext::``, ``fd::``, any ``transport::address``) is never allowed.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal
from urllib.parse import urlsplit

from mlchain.errors import GitError

MAX_REF = 1024
# What a deployment may allow for a push's clone URL: file:// is not among them, a push never names one.
CloneScheme = Literal["https", "ssh", "http", "git"]
DEFAULT_CLONE_SCHEMES: tuple[CloneScheme, ...] = ("https", "ssh")
LOCAL_SCHEME = "file"  # a folder on this machine: `mlchain run PATH`, never a push

COMMIT = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
# git check-ref-format, rule 4 and 5: control characters, space, ~ ^ : ? * [ and backslash.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# `<transport>::<address>` makes git run git-remote-<transport> (ext:: runs any command).
_REMOTE_HELPER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}
# scp-like ssh: [user@]host:path (no scheme, a colon before any slash).
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._~-]+@)?[A-Za-z0-9._-]+:(?!//)")


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not a ref name git and mlchain accept, or None when it is."""
    if not ref:
        return "it is empty"
    if len(ref) > MAX_REF:
        return f"it is longer than {MAX_REF} characters"
    if ref.startswith("-"):
        return "it begins with '-' (git would read it as an option)"
    if _REF_FORBIDDEN.search(ref):
        return "it holds a space, a control character or one of ~ ^ : ? * [ \\"
    if ref == "@" or "@{" in ref:
        return "it is '@' or holds '@{'"
    if ".." in ref or "//" in ref or ref.startswith("/") or ref.endswith(("/", ".")):
        return "it holds '..' or '//', or begins or ends with '/', or ends with '.'"
    for part in ref.split("/"):
        if part.startswith("."):
            return f"its component {part!r} begins with '.'"
        if part.endswith(".lock"):
            return f"its component {part!r} ends with '.lock'"
        if part.startswith("-"):
            return f"its component {part!r} begins with '-' (git would read it as an option)"
    return None


def is_commit(value: str) -> bool:
    """A full commit id (SHA-1 or SHA-256)."""
    return bool(COMMIT.match(value))


def require_ref(ref: str, source: str = "--ref") -> str:
    """``ref`` when it is a valid ref name or commit id; else a GitError naming ``source``."""
    if is_commit(ref):
        return ref
    problem = ref_problem(ref)
    if problem is not None:
        raise GitError(f"{source} {ref!r} is not a git branch, tag or commit: {problem}",
                       hint="pass a branch or tag name (main, release/1.2, v1.0) or a full commit id")
    return ref


def url_scheme(url: str) -> str | None:
    """The transport ``url`` names (``ssh`` for scp-like ``git@host:path``), or None for a bare path."""
    if "://" in url:
        return urlsplit(url).scheme.lower() or None
    if _SCP_LIKE.match(url):
        return "ssh"
    return None


def clone_url_problem(url: str, allowed: Collection[str]) -> str | None:
    """Why git must not clone ``url`` with these schemes allowed, or None when it may."""
    if not url:
        return "it is empty"
    if url.startswith("-"):
        return "it begins with '-' (git would read it as an option)"
    if _CONTROL_OR_SPACE.search(url):
        return "it holds a space or a control character"
    if _REMOTE_HELPER.match(url):
        return "it uses git's '<transport>::' syntax (ext::, fd::, ...), which runs helper programs"
    scheme = url_scheme(url)
    if scheme is None:
        return "it names no scheme (a bare path)"
    if _SCHEME_ALIASES.get(scheme, scheme) not in allowed:
        return f"its scheme {scheme!r} is not allowed here (allowed: {', '.join(sorted(allowed)) or 'none'})"
    if scheme == "ssh" and "://" not in url and url.split(":", 1)[1].startswith("-"):
        return "its path begins with '-'"
    host = urlsplit(url).hostname if "://" in url else None
    if host is not None and host.startswith("-"):
        return "its host begins with '-' (ssh would read it as an option)"
    return None


def require_clone_url(url: str, allowed: Collection[str], source: str = "the repository URL") -> str:
    problem = clone_url_problem(url, allowed)
    if problem is not None:
        raise GitError(f"{source} {url!r} cannot be cloned: {problem}",
                       hint=f"use a URL with one of the allowed schemes ({', '.join(sorted(allowed))});"
                            " the deployment's list is MLCHAIN_CLONE_SCHEMES")
    return url
