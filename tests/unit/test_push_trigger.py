"""A push of any repository, any branch: job1's Generic Webhook Trigger, checked on what it renders.

No Jenkins runs here, so the test reads the JSONPath expressions, header variables and filter
of the rendered job1 config.xml (the golden: tests/golden/jenkins/job1-pull.xml) and applies
them the way the plugin does (tests/gwt.py; tests/integration/test_push_filter_jvm.py checks
the filter with the JVM's regex engine) to a GitHub push payload, after the signature check
casc.yaml configures (its whitelist item: HMAC-SHA256 of the body, `sha256=` hex in
X-Hub-Signature-256). What comes out must be the parameters job1 declares, and values that
gitrefs.py accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from gwt import ACCEPTED_URLS, REFUSED, SAMPLE_PUSH, job1_trigger, job1_xml, with_changes

from mlchain.config import load_settings
from mlchain.engine.jobs import BuildEnv, job_pull
from mlchain.errors import GitError
from mlchain.gitrefs import DEFAULT_CLONE_SCHEMES, require_clone_url, require_ref
from mlchain.webhook.signature import sign

REPO = Path(__file__).resolve().parents[2]
CASC = yaml.safe_load((REPO / "jenkins" / "casc.yaml").read_text(encoding="utf-8"))
SECRET = b"the-webhook-secret"
JOB1 = job1_xml()
TRIGGER = job1_trigger()
PUSH = SAMPLE_PUSH


def _whitelist_item() -> dict[str, Any]:
    whitelist = CASC["unclassified"]["whitelist"]
    assert whitelist["enabled"] is True, "with the whitelist disabled the plugin checks no signature"
    [item] = whitelist["whitelistItems"]
    return dict(item)


def _secret_of(credential_id: str) -> str:
    for domain in CASC["credentials"]["system"]["domainCredentials"]:
        for credential in domain["credentials"]:
            kind, spec = next(iter(credential.items()))
            if spec["id"] == credential_id:
                assert kind == "string", "the plugin reads the HMAC key from a secret text credential"
                return str(spec["secret"])
    raise AssertionError(f"casc.yaml defines no credential {credential_id!r}")


def signature_accepted(headers: dict[str, str], body: bytes, secret: bytes) -> bool:
    """The plugin's HMACVerifier for casc.yaml's whitelist item."""
    item = _whitelist_item()
    assert item["hmacEnabled"] is True and item["hmacAlgorithm"] == "HmacSHA256"
    value = next((v for k, v in headers.items() if k.lower() == item["hmacHeader"].lower()), None)
    if value is None:
        return False
    value = value.removeprefix("sha256=")
    return value.lower() == hmac.new(secret, body, hashlib.sha256).hexdigest()


def triggered(headers: dict[str, str], body: bytes, secret: bytes = SECRET,
              token: str = "mlchain-push") -> dict[str, str] | None:
    """The parameters job1 starts with, or None when the plugin starts nothing: the signature
    first (the whitelist refuses before any job is looked at), then the token, then the filter."""
    if not signature_accepted(headers, body, secret) or token != TRIGGER.token:
        return None
    return TRIGGER.start(headers, body)


def deliver(payload: dict[str, Any], event: str = "push", secret: bytes = SECRET) -> dict[str, str] | None:
    body = json.dumps(payload).encode("utf-8")
    return triggered({"X-GitHub-Event": event, "X-Hub-Signature-256": sign(secret, body),
                      "Content-Type": "application/json"}, body)


# --- the mapping -------------------------------------------------------------------------------

def test_a_signed_push_starts_job1_with_the_payloads_repository_commit_and_pusher() -> None:
    assert deliver(PUSH) == {
        "REPO_URL": "https://github.com/octo-org/digits-classifier.git",
        "REF": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "PUSHER_EMAIL": "monalisa@example.com",
    }


def test_the_trigger_fills_exactly_job1s_parameters_and_git_checks_out_the_commit() -> None:
    assert [key for key, _, _ in TRIGGER.variables] == ["REPO_URL", "REF", "PUSHER_EMAIL"]
    assert TRIGGER.parameters >= {"REPO_URL", "REF", "PUSHER_EMAIL"}
    scm = JOB1.find("scm")
    assert scm is not None
    assert scm.findtext("userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url") == "$REPO_URL"
    assert [b.text for b in scm.iterfind("branches/hudson.plugins.git.BranchSpec/name")] == ["$REF"]


def test_any_branch_of_any_repository_starts_job1() -> None:
    other = json.loads(json.dumps(PUSH))
    other["ref"] = "refs/heads/experiments/lr-sweep"
    other["repository"]["clone_url"] = "https://git.example.org/ml/another-model.git"
    other["after"] = "a" * 40
    assert deliver(other) == {"REPO_URL": "https://git.example.org/ml/another-model.git", "REF": "a" * 40,
                              "PUSHER_EMAIL": "monalisa@example.com"}


def test_a_pusher_without_email_starts_job1_with_an_empty_one() -> None:
    anonymous = json.loads(json.dumps(PUSH))
    del anonymous["pusher"]["email"]
    started = deliver(anonymous)
    assert started is not None and started["PUSHER_EMAIL"] == ""


# --- what must not start job1 ---------------------------------------------------------------------

def test_an_unsigned_a_wrongly_signed_or_an_altered_delivery_starts_nothing() -> None:
    body = json.dumps(PUSH).encode("utf-8")
    assert triggered({"X-GitHub-Event": "push"}, body) is None
    assert deliver(PUSH, secret=b"another-secret") is None
    signature = sign(SECRET, body)
    altered = body.replace(b"digits-classifier.git", b"evil-fork.git")
    assert triggered({"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}, altered) is None
    # the token only picks the job: a right signature for another token starts nothing here
    assert triggered({"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}, body, token="x") is None


def test_the_signature_is_checked_with_the_webhook_secret_the_stack_is_given() -> None:
    item = _whitelist_item()
    assert item["host"] == "" and item["hmacHeader"] == "X-Hub-Signature-256"
    assert _secret_of(item["hmacCredentialId"]) == "${GITHUB_WEBHOOK_SECRET}"


@pytest.mark.parametrize(("payload", "event"), [pytest.param(p, e, id=i) for i, p, e in REFUSED])
def test_what_is_not_a_clonable_push_of_a_commit_starts_nothing(payload: dict[str, Any], event: str) -> None:
    assert deliver(payload, event=event) is None


@pytest.mark.parametrize("url", ACCEPTED_URLS)
def test_whatever_starts_job1_passes_the_checks_job1_makes(url: str) -> None:
    started = deliver(with_changes(PUSH, repository__clone_url=url))
    assert started is not None
    assert require_clone_url(started["REPO_URL"], DEFAULT_CLONE_SCHEMES, source="REPO_URL") == url
    assert require_ref(started["REF"], source="REF") == PUSH["after"]


# --- job1 checks them again ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [("REF", "--upload-pack=touch /tmp/pwned"),
                                             ("REPO_URL", "ext::sh -c touch% /tmp/pwned")])
def test_job1_refuses_a_hostile_parameter_before_it_opens_a_run(tmp_path: Path, name: str, value: str) -> None:
    settings = load_settings({"home": tmp_path / "home", "runner": "process"}, env={})
    params = {"REPO_URL": "https://github.com/o/r.git", "REF": "main", name: value}
    env = BuildEnv({"WORKSPACE": str(tmp_path), "RUN_ID": "r1", "JOB_NAME": "job1-pull", **params})
    with pytest.raises(GitError, match=name):
        job_pull(settings, env, lambda _line: None)
    assert not settings.runs_dir.exists() or not any(settings.runs_dir.iterdir())
