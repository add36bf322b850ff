"""What a delivery asks for: pure decisions over GitHub's headers and payloads (no I/O).

``decide_push`` answers "should this push be enqueued, and as what?"; the server
only turns its answer into an HTTP status and a queue row.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

from mlchain.gitrefs import DEFAULT_CLONE_SCHEMES, LOCAL_SCHEME, clone_url_problem, ref_problem

if TYPE_CHECKING:
    from mlchain.config import Settings

Action = Literal["enqueue", "ignore", "reject"]

# Events the service understands; everything else is answered 202 "ignored" so that a
# hook subscribed to more events than needed does not show failed deliveries on GitHub.
EVENT_HANDLERS = {"ping": "pong", "push": "push"}

# A ref's prefix tells what was pushed; anything else (notes, pull refs) is not built.
REF_KINDS = (("refs/heads/", "branch"), ("refs/tags/", "tag"))

MAX_FIELD = 2048  # longer than any real URL, ref or address: refuse rather than store it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX = re.compile(r"^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")  # SHA-1 and SHA-256 repositories


@dataclass(frozen=True)
class Policy:
    """Which refs to build. Patterns are shell globs (``release/*``), matched on short names."""

    branches: tuple[str, ...] = ()  # empty: the repository's default branch, from the payload
    tags: tuple[str, ...] = ()      # empty: tag pushes are ignored
    clone_schemes: tuple[str, ...] = DEFAULT_CLONE_SCHEMES  # never file://: a push names no local folder

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(branches=tuple(settings.webhook_branches),
                   tags=tuple(settings.webhook_tags),
                   clone_schemes=tuple(s for s in settings.clone_schemes if s != LOCAL_SCHEME))


@dataclass(frozen=True)
class PushJob:
    """One push to build: what the worker hands to ``mlchain run``."""

    repo_url: str
    repo_name: str
    ref: str            # full ref, refs/heads/main
    name: str           # short name, main
    kind: str           # branch | tag
    commit: str
    pusher_email: str | None

    @property
    def lane(self) -> str:
        """Runs of one lane go one at a time (newest wins): one repository, one ref."""
        return f"{self.repo_url}#{self.ref}"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    job: PushJob | None = None


def event_handler(event: str | None) -> str | None:
    return EVENT_HANDLERS.get(event or "")


def is_zero_sha(sha: object) -> bool:
    return isinstance(sha, str) and sha != "" and set(sha) == {"0"}


def parse_body(body: bytes, content_type: str | None) -> Any:
    """GitHub sends JSON, or a form with one field ``payload`` holding the JSON.

    Raises ValueError (the server answers 400) when neither parses.
    """
    if (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
        if "payload" not in fields:
            raise ValueError("form body without a payload field")
        return json.loads(fields["payload"][0])
    return json.loads(body)


def _get(obj: Any, *path: str) -> Any:
    """obj[path0][path1]... or None: payloads are untrusted, any level may be missing or mistyped."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any) -> str | None:
    """A usable string field: present, bounded, no control characters."""
    if isinstance(value, str) and value and len(value) <= MAX_FIELD and not _CONTROL.search(value):
        return value
    return None


def ref_kind(ref: str) -> tuple[str, str] | None:
    """(kind, short name) of a full ref, or None for refs that are neither branches nor tags."""
    for prefix, kind in REF_KINDS:
        if ref.startswith(prefix) and len(ref) > len(prefix):
            return kind, ref[len(prefix):]
    return None


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _filter(kind: str, name: str, default_branch: str | None, policy: Policy) -> str | None:
    """Why this ref is not built, or None when it is."""
    if kind == "tag":
        if not policy.tags:
            return "tag push (set MLCHAIN_WEBHOOK_TAGS to build tags)"
        return None if _matches(name, policy.tags) else f"tag {name} matches no MLCHAIN_WEBHOOK_TAGS pattern"
    if policy.branches:
        return None if _matches(name, policy.branches) else \
            f"branch {name} is not in MLCHAIN_WEBHOOK_BRANCHES ({', '.join(policy.branches)})"
    if default_branch is None:
        return "payload names no default branch; set MLCHAIN_WEBHOOK_BRANCHES"
    return None if name == default_branch else f"branch {name} is not the default branch {default_branch}"


def decide_push(payload: Any, policy: Policy) -> Decision:
    """Should this push payload be enqueued? ``reject`` means malformed (400), ``ignore`` means 202."""
    if not isinstance(payload, dict):
        return Decision("reject", "push payload is not a JSON object")
    ref = _text(payload.get("ref"))
    if ref is None:
        return Decision("reject", "push payload has no usable ref")
    problem = ref_problem(ref)
    if problem is not None:  # checked before anything else reads it: it reaches git
        return Decision("reject", f"push payload's ref is not a valid git ref: {problem}")
    # A deletion has nothing to build; GitHub marks it both ways, a hook may mark only one.
    if payload.get("deleted") is True or is_zero_sha(payload.get("after")):
        return Decision("ignore", f"deletion of {ref}")
    after = payload.get("after")
    if not isinstance(after, str) or not _HEX.match(after):
        return Decision("reject", "push payload has no commit id in 'after'")
    repo_url = _text(_get(payload, "repository", "clone_url")) or _text(_get(payload, "repository", "url"))
    if repo_url is None:
        return Decision("reject", "push payload has no usable repository.clone_url")
    problem = clone_url_problem(repo_url, tuple(s for s in policy.clone_schemes if s != LOCAL_SCHEME))
    if problem is not None:
        return Decision("reject", f"push payload's repository.clone_url cannot be cloned: {problem}")
    kind_name = ref_kind(ref)
    if kind_name is None:
        return Decision("ignore", f"{ref} is neither a branch nor a tag")
    kind, name = kind_name
    default_branch = _text(_get(payload, "repository", "default_branch")) \
        or _text(_get(payload, "repository", "master_branch"))
    if default_branch is not None and ref_problem(default_branch) is not None:
        return Decision("reject", f"push payload's repository.default_branch is not a valid branch name:"
                                  f" {ref_problem(default_branch)}")
    why_not = _filter(kind, name, default_branch, policy)
    if why_not is not None:
        return Decision("ignore", why_not)
    repo_name = (_text(_get(payload, "repository", "full_name")) or _text(_get(payload, "repository", "name"))
                 or repo_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))
    email = _text(_get(payload, "pusher", "email")) or _text(_get(payload, "head_commit", "author", "email"))
    job = PushJob(repo_url=repo_url, repo_name=repo_name, ref=ref, name=name, kind=kind,
                  commit=after.lower(), pusher_email=email)
    return Decision("enqueue", f"{kind} {name} at {after[:12]}", job)


def hook_id(payload: Any) -> Any:
    """The hook id a ping names (GitHub: ``hook_id``, also ``hook.id``)."""
    return _get(payload, "hook_id") if _get(payload, "hook_id") is not None else _get(payload, "hook", "id")
