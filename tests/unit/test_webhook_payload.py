from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlchain.config import load_settings
from mlchain.webhook.payload import Policy, decide_push, event_handler, hook_id, parse_body, ref_kind

SHA = "a" * 40


def push(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ref": "refs/heads/main", "after": SHA, "deleted": False,
        "repository": {"clone_url": "https://github.com/team/digits.git", "full_name": "team/digits",
                       "default_branch": "main"},
        "pusher": {"email": "pusher@example.com"},
        "head_commit": {"author": {"email": "author@example.com"}},
    }
    base.update(over)
    return base


@pytest.mark.parametrize(("payload", "policy", "action", "reason_part"), [
    (push(), Policy(), "enqueue", "branch main"),
    (push(ref="refs/heads/dev"), Policy(), "ignore", "not the default branch main"),
    (push(ref="refs/heads/dev"), Policy(branches=("dev",)), "enqueue", "branch dev"),
    (push(ref="refs/heads/main"), Policy(branches=("release/*",)), "ignore", "MLCHAIN_WEBHOOK_BRANCHES"),
    (push(ref="refs/heads/release/1.2"), Policy(branches=("release/*",)), "enqueue", "release/1.2"),
    (push(ref="refs/heads/x"), Policy(branches=("*",)), "enqueue", "branch x"),
    (push(deleted=True, after="0" * 40), Policy(), "ignore", "deletion"),
    (push(after="0" * 40), Policy(), "ignore", "deletion"),
    (push(deleted=True), Policy(), "ignore", "deletion"),
    (push(ref="refs/tags/v1"), Policy(), "ignore", "MLCHAIN_WEBHOOK_TAGS"),
    (push(ref="refs/tags/v1"), Policy(tags=("v*",)), "enqueue", "tag v1"),
    (push(ref="refs/tags/nightly"), Policy(tags=("v*",)), "ignore", "matches no"),
    (push(ref="refs/notes/commits"), Policy(), "ignore", "neither a branch nor a tag"),
    (push(repository={"clone_url": "https://x/t/r.git", "full_name": "t/r"}), Policy(), "ignore", "no default branch"),
    (push(repository={"clone_url": "https://x/t/r.git", "master_branch": "main"}), Policy(), "enqueue", "branch main"),
    ([], Policy(), "reject", "not a JSON object"),
    (push(ref=None), Policy(), "reject", "no usable ref"),
    (push(ref="refs/heads/a\nb"), Policy(), "reject", "no usable ref"),
    (push(after="xyz"), Policy(), "reject", "no commit"),
    (push(repository=None), Policy(), "reject", "clone_url"),
    (push(repository={"clone_url": "--upload-pack=evil", "default_branch": "main"}), Policy(), "reject", "clone_url"),
    (push(repository={"clone_url": "https://x/ y", "default_branch": "main"}), Policy(), "reject", "clone_url"),
])
def test_decide_push(payload: Any, policy: Policy, action: str, reason_part: str) -> None:
    d = decide_push(payload, policy)
    assert (d.action, reason_part in d.reason) == (action, True), d
    assert (d.job is not None) == (action == "enqueue")


def test_enqueued_job_carries_what_the_run_needs() -> None:
    job = decide_push(push(), Policy()).job
    assert job is not None
    assert (job.repo_url, job.repo_name, job.ref, job.name, job.kind, job.commit, job.pusher_email) == (
        "https://github.com/team/digits.git", "team/digits", "refs/heads/main", "main", "branch", SHA,
        "pusher@example.com")
    assert job.lane == "https://github.com/team/digits.git#refs/heads/main"


def test_pusher_email_falls_back_to_the_head_commit_author() -> None:
    job = decide_push(push(pusher={"name": "x"}), Policy()).job
    assert job is not None and job.pusher_email == "author@example.com"
    job = decide_push(push(pusher=None, head_commit=None), Policy()).job
    assert job is not None and job.pusher_email is None


def test_events_and_refs() -> None:
    assert event_handler("push") == "push" and event_handler("ping") == "pong"
    assert event_handler("issues") is None and event_handler(None) is None
    assert ref_kind("refs/heads/feature/a") == ("branch", "feature/a")
    assert ref_kind("refs/heads/") is None
    assert hook_id({"hook_id": 5}) == 5 and hook_id({"hook": {"id": 6}}) == 6 and hook_id([]) is None


def test_parse_body_json_and_form() -> None:
    assert parse_body(b'{"a": 1}', "application/json") == {"a": 1}
    assert parse_body(b"payload=%7B%22a%22%3A+1%7D", "application/x-www-form-urlencoded") == {"a": 1}
    with pytest.raises(ValueError):
        parse_body(b"{", None)
    with pytest.raises(ValueError):
        parse_body(b"other=1", "application/x-www-form-urlencoded")


def test_policy_from_settings() -> None:
    s = load_settings(env={"MLCHAIN_WEBHOOK_BRANCHES": "main, release/*", "MLCHAIN_WEBHOOK_TAGS": "v*"})
    assert Policy.from_settings(s) == Policy(branches=("main", "release/*"), tags=("v*",))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4), max_leaves=20)


@given(st.dictionaries(st.sampled_from(["ref", "after", "deleted", "repository", "pusher", "head_commit"]),
                       json_values) | json_values)
def test_decide_push_never_raises(payload: Any) -> None:
    assert decide_push(payload, Policy()).action in ("enqueue", "ignore", "reject")
