"""Fuzz the endpoint: random bodies, headers, event names and signatures (right and wrong)
never get a 5xx. In-process through FastAPI's TestClient, which re-raises any server error."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlchain.config import load_settings
from mlchain.webhook.server import create_app
from mlchain.webhook.signature import sign

SECRET = "fuzz-secret"
ALLOWED = {200, 202, 400, 401, 413}

header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25)


@st.composite
def push_like(draw: st.DrawFn) -> Any:
    """Mostly-valid push payloads with fields dropped, mistyped or odd."""
    payload: dict[str, Any] = {
        "ref": draw(st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/heads/", "main", ""]) | header_text),
        "after": draw(st.sampled_from(["a" * 40, "0" * 40, "b" * 64, "xyz"]) | json_values),
        "deleted": draw(st.booleans() | json_values),
        "repository": draw(st.fixed_dictionaries(
            {"clone_url": st.sampled_from(["https://h/r.git", "file:///r.git", "-x", "https://h/r .git"]) | json_values,
             "default_branch": st.sampled_from(["main", ""]) | json_values}) | json_values),
        "pusher": draw(st.fixed_dictionaries({"email": header_text | json_values}) | json_values),
    }
    for key in draw(st.sets(st.sampled_from(sorted(payload)))):
        del payload[key]
    return payload


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    push_like().map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 5000 + b"]" * 5000),  # deep nesting
    st.just(b"x" * 5000),                # over the (test) size limit
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    s = load_settings({"home": home}, env={"MLCHAIN_WEBHOOK_SECRET": SECRET, "MLCHAIN_WEBHOOK_MAX_BODY": "4096",
                                            "MLCHAIN_WEBHOOK_TAGS": "v*"})
    with TestClient(create_app(s, workers=0)) as c:
        yield c


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=bodies,
       event=st.sampled_from(["push", "ping", "issues", "", "PUSH"]) | header_text,
       signature=st.sampled_from(["right", "wrong", "missing", "garbage"]),
       garbage=header_text,
       delivery=st.one_of(st.none(), st.uuids().map(str), header_text, st.just("fixed-delivery")),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
       path=st.sampled_from(["/github-webhook/", "/github-webhook"]))
def test_no_5xx(client: TestClient, body: bytes, event: str, signature: str, garbage: str,
                delivery: str | None, content_type: str, path: str) -> None:
    headers = {"X-GitHub-Event": event}
    if content_type:
        headers["Content-Type"] = content_type
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    sig = {"right": sign(SECRET.encode(), body), "wrong": sign(b"nope", body), "missing": None,
           "garbage": garbage}[signature]
    if sig is not None:
        headers["X-Hub-Signature-256"] = sig
    r = client.post(path, content=body, headers=headers)
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    if signature in ("wrong", "missing") and len(body) <= 4096:
        assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")


def test_fuzzed_accepts_are_all_queued(client: TestClient) -> None:
    """Whatever the fuzzing accepted is in the queue: a 202 "accepted" always means committed."""
    wq = client.app.state.queue  # type: ignore[attr-defined]
    body = json.dumps({"ref": "refs/heads/main", "after": "c" * 40,
                       "repository": {"clone_url": "https://git.example.com/r.git", "default_branch": "main"}}).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
               "X-Hub-Signature-256": sign(SECRET.encode(), body)}
    r = client.post("/github-webhook/", content=body, headers=headers)
    assert r.status_code == 202
    assert wq.entry(r.json()["run_id"]) is not None
