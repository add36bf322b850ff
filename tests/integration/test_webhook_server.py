"""The webhook endpoint over real HTTP: the service in a child process on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import wait_for
from test_webhook_helpers import SECRET, Service, delivery_headers, push_payload

from mlchain.webhook.queue import WebhookQueue, queue_path
from mlchain.webhook.signature import sign


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the tests that need no particular settings (each checks its own rows)."""
    svc = Service(tmp_path_factory.mktemp("webhook") / "home", workers=0,
                  env={"MLCHAIN_WEBHOOK_MAX_BODY": str(64 * 1024), "MLCHAIN_WEBHOOK_TAGS": "v*"})
    yield svc
    svc.stop()


def queue_rows(home: Path) -> list[dict[str, object]]:
    return WebhookQueue(queue_path(home)).entries(100_000)


def queued_commits(home: Path) -> set[object]:
    return {row["commit_sha"] for row in queue_rows(home)}


def test_good_signature_is_accepted_and_committed_before_the_answer(service: Service) -> None:
    payload = push_payload()
    started = time.perf_counter()
    r = service.deliver("push", payload)
    elapsed = time.perf_counter() - started
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "accepted" and body["run_id"].startswith("wh-")
    assert elapsed < 1.0  # milliseconds in practice; generous for a loaded CI machine
    rows = [x for x in queue_rows(service.home) if x["run_id"] == body["run_id"]]  # committed before the 202
    assert [(x["run_id"], x["status"], x["commit_sha"], x["pusher_email"], x["repo_url"], x["ref"])
            for x in rows] == [(body["run_id"], "queued", payload["after"], "dev@example.com",
                                "https://git.example.com/team/digits.git", "refs/heads/main")]


def test_wrong_signature_is_401(service: Service) -> None:
    payload = push_payload()
    r = service.deliver("push", payload, signature=sign(b"another secret", b"{}"))
    assert r.status_code == 401
    assert "does not match" in r.json()["detail"]
    assert payload["after"] not in queued_commits(service.home)


def test_signature_of_other_bytes_is_401(service: Service) -> None:
    body = b'{"ref": "refs/heads/main"}'
    r = service.client.post("/github-webhook/", content=body + b" ",
                            headers=delivery_headers("push", body, SECRET))
    assert r.status_code == 401


def test_missing_signature_is_401(service: Service) -> None:
    r = service.deliver("push", push_payload(), signature=None)
    assert r.status_code == 401
    assert "missing" in r.json()["detail"]


def test_ping_answers_pong_with_the_hook_id(service: Service) -> None:
    r = service.deliver("ping", {"zen": "Keep it logically awesome.", "hook_id": 4242, "hook": {"id": 4242}})
    assert r.status_code == 200
    assert r.json() == {"status": "pong", "hook_id": 4242}


def test_ping_without_signature_is_401(service: Service) -> None:
    assert service.deliver("ping", {"hook_id": 1}, signature=None).status_code == 401


def test_branch_deletion_is_ignored(service: Service) -> None:
    r = service.deliver("push", push_payload(after="0" * 40, deleted=True))
    assert r.status_code == 202
    assert r.json()["status"] == "ignored" and "deletion" in r.json()["reason"]
    r = service.deliver("push", push_payload(after="0" * 40))  # `deleted` missing: the zero sha says it
    assert r.json()["status"] == "ignored"
    assert "0" * 40 not in queued_commits(service.home)


def test_branch_filter_defaults_to_the_repository_default_branch(service: Service) -> None:
    r = service.deliver("push", push_payload(ref="refs/heads/feature/x", default_branch="main"))
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    assert "not the default branch main" in r.json()["reason"]
    r = service.deliver("push", push_payload(ref="refs/heads/trunk", default_branch="trunk"))
    assert r.json()["status"] == "accepted"


def test_configured_branches_replace_the_default(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home", env={"MLCHAIN_WEBHOOK_BRANCHES": "release/*,dev"})
    try:
        assert svc.deliver("push", push_payload(ref="refs/heads/main")).json()["status"] == "ignored"
        assert svc.deliver("push", push_payload(ref="refs/heads/release/2.0")).json()["status"] == "accepted"
        assert svc.deliver("push", push_payload(ref="refs/heads/dev")).json()["status"] == "accepted"
    finally:
        svc.stop()


def test_tags_only_when_configured(service: Service, tmp_path: Path) -> None:
    assert service.deliver("push", push_payload(ref="refs/tags/v1.0")).json()["status"] == "accepted"
    assert service.deliver("push", push_payload(ref="refs/tags/nightly")).json()["status"] == "ignored"
    other = Service(tmp_path / "home2")
    try:
        r = other.deliver("push", push_payload(ref="refs/tags/v1.0"))
        assert r.status_code == 202 and r.json()["status"] == "ignored" and "tag" in r.json()["reason"]
    finally:
        other.stop()


def test_duplicate_delivery_before_and_after_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    svc = Service(home)
    delivery = str(uuid.uuid4())
    payload = push_payload()
    try:
        first = svc.deliver("push", payload, delivery=delivery)
        assert first.status_code == 202
        again = svc.deliver("push", payload, delivery=delivery)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "run_id": first.json()["run_id"], "delivery": delivery}
    finally:
        svc.kill()  # no clean shutdown: what is committed must be all there is
    svc = Service(home)
    try:
        after_restart = svc.deliver("push", payload, delivery=delivery)
        assert after_restart.status_code == 200 and after_restart.json()["status"] == "duplicate"
        assert after_restart.json()["run_id"] == first.json()["run_id"]
    finally:
        svc.stop()
    assert len(queue_rows(home)) == 1


def test_oversize_body_is_413_by_content_length(service: Service) -> None:
    body = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    r = service.client.post("/github-webhook/", content=body, headers=delivery_headers("push", body, SECRET))
    assert r.status_code == 413
    assert "MLCHAIN_WEBHOOK_MAX_BODY" in r.json()["detail"]


def test_oversize_chunked_body_is_413_while_streaming(service: Service) -> None:
    body = b'{"pad": "' + b"x" * (200 * 1024) + b'"}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting the stream can tell
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    headers = delivery_headers("push", body, SECRET)
    r = service.client.post("/github-webhook/", content=chunks(), headers=headers)
    assert r.status_code == 413


def test_default_limit_is_25_mb(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home")
    try:
        body = b" " * (25 * 1024 * 1024 + 1)
        r = svc.client.post("/github-webhook/", content=body, headers=delivery_headers("push", body, SECRET))
        assert r.status_code == 413
    finally:
        svc.stop()


def test_malformed_json_is_400(service: Service) -> None:
    body = b'{"ref": "refs/heads/main", '
    r = service.client.post("/github-webhook/", content=body, headers=delivery_headers("push", body, SECRET))
    assert r.status_code == 400
    assert service.deliver("push", b"[1, 2]").status_code == 400  # JSON, but not a push
    assert service.deliver("push", {"ref": "refs/heads/main"}).status_code == 400  # no commit, no repository


@pytest.mark.parametrize("where", ["ref", "email", "repo_name", "commit_message", "ping"])
def test_lone_surrogate_is_400_and_nothing_is_queued(service: Service, where: str) -> None:
    """JSON's \\ud800 escape parses into text that cannot be stored as UTF-8: a malformed
    delivery (400, not redelivered), never 503 (GitHub would redeliver it forever)."""
    import json

    lone = "\ud800"
    payload = push_payload(**{"ref": f"refs/heads/main{lone}"} if where == "ref" else {})
    if where == "email":
        payload["pusher"]["email"] = f"dev{lone}@example.com"
    elif where == "repo_name":
        payload["repository"]["full_name"] = f"team/digits{lone}"
    elif where == "commit_message":  # a field the service never stores is refused all the same
        payload["head_commit"]["message"] = f"train {lone}"
    event = "ping" if where == "ping" else "push"
    if where == "ping":
        payload = {"hook_id": f"7{lone}", "zen": lone}
    raw = json.dumps(payload).encode()  # ensure_ascii: the escape, as valid UTF-8 bytes
    assert b"\\ud800" in raw
    r = service.client.post("/github-webhook/", content=raw, headers=delivery_headers(event, raw, SECRET))
    assert r.status_code == 400, r.text
    assert "not valid Unicode" in r.json()["detail"]
    if event == "push":
        assert payload["after"] not in queued_commits(service.home)
    # invalid UTF-8 bytes (not an escape) are refused the same way
    bad = raw.replace(b"\\ud800", b"\xed\xa0\x80")
    r = service.client.post("/github-webhook/", content=bad, headers=delivery_headers(event, bad, SECRET))
    assert r.status_code == 400, r.text
    # and the service goes on accepting good deliveries
    assert service.deliver("push", push_payload()).status_code == 202


def test_form_encoded_payload_is_understood(service: Service) -> None:
    import json
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(push_payload())}).encode()
    headers = delivery_headers("push", body, SECRET, extra={"Content-Type": "application/x-www-form-urlencoded"})
    r = service.client.post("/github-webhook/", content=body, headers=headers)
    assert r.status_code == 202 and r.json()["status"] == "accepted"


def test_unknown_event_is_ignored(service: Service) -> None:
    r = service.deliver("issues", {"action": "opened"})
    assert r.status_code == 202
    assert r.json()["status"] == "ignored"
    r = service.deliver("star", b"not even json")  # not parsed: not an event this service reads
    assert r.status_code == 202


def test_missing_event_or_delivery_header_is_400(service: Service) -> None:
    body = b"{}"
    r = service.client.post("/github-webhook/", content=body,
                            headers={"X-Hub-Signature-256": sign(SECRET.encode(), body)})
    assert r.status_code == 400
    payload = push_payload()
    import json

    raw = json.dumps(payload).encode()
    headers = delivery_headers("push", raw, SECRET)
    del headers["X-GitHub-Delivery"]
    assert service.client.post("/github-webhook/", content=raw, headers=headers).status_code == 400


def test_path_without_trailing_slash_is_served(service: Service) -> None:
    import json

    raw = json.dumps(push_payload()).encode()
    r = service.client.post("/github-webhook", content=raw, headers=delivery_headers("push", raw, SECRET))
    assert r.status_code == 202


def test_logs_never_contain_the_secret_or_signatures(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home", workers=1,
                  chain_command=[sys.executable, "-c", "print('{}')"])
    signatures = []
    try:
        for event, body in (("push", push_payload()), ("ping", {"hook_id": 7}), ("issues", {})):
            import json

            raw = json.dumps(body).encode()
            headers = delivery_headers(event, raw, SECRET)
            signatures.append(headers["X-Hub-Signature-256"])
            assert svc.client.post("/github-webhook/", content=raw, headers=headers).status_code < 300
        bad = sign(b"wrong", b"x")
        signatures.append(bad)
        assert svc.deliver("push", push_payload(), signature=bad).status_code == 401
        svc.client.get("/")
        svc.client.get("/api/runs")
        # the worker started and finished the chain stand-in: its lines are in the logs
        wait_for(lambda: WebhookQueue(queue_path(svc.home)).counts().get("finished"), timeout=60,
                 what="the chain stand-in to finish")
    finally:
        svc.stop()
    text = svc.log()
    assert "POST /github-webhook/ HTTP/1.1\" 202" in text  # the access log is on...
    assert SECRET not in text  # ...and never shows the secret
    for s in signatures:
        assert s not in text and s.removeprefix("sha256=") not in text
    for log in (svc.home / "webhook-logs").glob("*"):
        assert SECRET not in log.read_text()


def test_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {"MLCHAIN_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "mlchain.cli", "serve", "--port", "0"], env=env, check=False,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 14
    assert "MLCHAIN_WEBHOOK_SECRET" in out.stderr


def test_insecure_mode_warns_on_every_start_and_accepts_unsigned(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for _ in range(2):
        svc = Service(home, insecure=True, secret=None)
        try:
            assert "WITHOUT a webhook secret" in svc.log()
            assert svc.deliver("push", push_payload(), signature=None).status_code == 202
        finally:
            svc.stop()


def test_dashboard_and_api_list_queued_entries(service: Service) -> None:
    accepted = service.deliver("push", push_payload()).json()["run_id"]
    runs = service.client.get("/api/runs").json()["runs"]
    assert runs[0]["run_id"] == accepted  # newest first
    assert runs[0]["status"] == "queued"
    assert [j["state"] for j in runs[0]["jobs"]] == ["queued"] * 6
    one = service.client.get(f"/api/runs/{accepted}").json()
    assert one["queue"]["status"] == "queued"
    page = service.client.get("/")
    assert page.status_code == 200 and f'data-run="{accepted}"' in page.text
    assert 'http-equiv="refresh"' in page.text  # active runs: the page reloads itself
    assert service.client.get(f"/runs/{accepted}").status_code == 200
    assert service.client.get("/runs/nope").status_code == 404
    assert service.client.get("/api/runs/nope").status_code == 404


def test_answers_well_within_githubs_timeout_under_concurrency(service: Service) -> None:
    """GitHub gives up on a delivery after 10 s; the speed itself is bench_webhook.py's."""
    import concurrent.futures
    import json

    def one(_: int) -> float:
        raw = json.dumps(push_payload()).encode()
        t = time.perf_counter()
        r = client.post("/github-webhook/", content=raw, headers=delivery_headers("push", raw, SECRET))
        assert r.status_code == 202
        return time.perf_counter() - t

    with httpx.Client(base_url=service.url, limits=httpx.Limits(max_connections=8)) as client, \
            concurrent.futures.ThreadPoolExecutor(8) as pool:
        before = len(queue_rows(service.home))
        times = sorted(pool.map(one, range(200)))
    assert times[-1] < 5.0, f"slowest answer {times[-1]:.2f} s"
    assert len(queue_rows(service.home)) == before + 200


def test_other_methods_on_the_webhook_path_are_405(service: Service) -> None:
    r = service.client.get("/github-webhook/")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert service.client.get("/healthz").json()["signed"] is True
