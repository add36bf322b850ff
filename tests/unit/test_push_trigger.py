"""A push of any repository, any branch: job1's Generic Webhook Trigger, checked on what it renders.

No Jenkins runs here, so the test reads the JSONPath expressions, header variables and filter
of the rendered job1 config.xml (the golden: tests/golden/jenkins/job1-pull.xml) and applies
them the way the plugin does (its Renderer and resolvers: `$.a.b` paths, header names lower
case with `-` as `_`, `$VAR` substituted longest name first, `find()` of the expression) to a
GitHub push payload, after the signature check casc.yaml configures (its whitelist item:
HMAC-SHA256 of the body, `sha256=` hex in X-Hub-Signature-256). What comes out must be the
parameters job1 declares, and values that gitrefs.py accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlchain.config import load_settings
from mlchain.engine.jobs import BuildEnv, job_pull
from mlchain.errors import GitError
from mlchain.gitrefs import DEFAULT_CLONE_SCHEMES, require_clone_url, require_ref
from mlchain.jenkins.render import load
from mlchain.webhook.signature import sign

REPO = Path(__file__).resolve().parents[2]
PUSH = json.loads((REPO / "tests" / "golden" / "github" / "push.json").read_text(encoding="utf-8"))
CASC = yaml.safe_load((REPO / "jenkins" / "casc.yaml").read_text(encoding="utf-8"))
GWT = "org.jenkinsci.plugins.gwt."
SECRET = b"the-webhook-secret"


def _job1() -> ET.Element:
    item = next(i for i in load(REPO / "jobs").jobs if i.name == "job1-pull")
    return ET.fromstring(item.xml.encode("utf-8"))


JOB1 = _job1()
TRIGGER = JOB1.find(f"triggers/{GWT}GenericTrigger")
assert TRIGGER is not None, "job1-pull renders no Generic Webhook Trigger"


def json_path(document: Any, expression: str) -> Any:
    """`$.a.b` only: what job1 uses. Anything richer fails here rather than being guessed at."""
    assert re.fullmatch(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)+", expression), f"unsupported JSONPath {expression!r}"
    for key in expression.split(".")[1:]:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


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
    """The parameters job1 starts with, or None when the plugin starts nothing."""
    assert TRIGGER is not None
    if not signature_accepted(headers, body, secret) or token != TRIGGER.findtext("token"):
        return None
    payload = json.loads(body)
    found: dict[str, str] = {}
    for var in TRIGGER.iterfind(f"genericVariables/{GWT}GenericVariable"):
        assert var.findtext("expressionType") == "JSONPath"
        value = json_path(payload, var.findtext("value") or "")
        found[var.findtext("key") or ""] = (var.findtext("defaultValue") or "") if value is None else (
            value if isinstance(value, str) else json.dumps(value))
    for header in TRIGGER.iterfind(f"genericHeaderVariables/{GWT}GenericHeaderVariable"):
        name = header.findtext("key") or ""
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), "")
        found[re.sub(r"[\s-]", "_", name).lower()] = value
    text = TRIGGER.findtext("regexpFilterText") or ""
    for key in sorted(found, key=lambda k: (-len(k), k)):
        text = text.replace("$" + key, found[key]).replace("${" + key + "}", found[key])
    if not re.search(TRIGGER.findtext("regexpFilterExpression") or "", text):
        return None
    declared = {p.findtext("name") for p in JOB1.iterfind(".//hudson.model.StringParameterDefinition")}
    return {k: v for k, v in found.items() if k in declared}


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
    assert TRIGGER is not None
    keys = [v.findtext("key") for v in TRIGGER.iterfind(f"genericVariables/{GWT}GenericVariable")]
    assert keys == ["REPO_URL", "REF", "PUSHER_EMAIL"]
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


def _with(**changes: Any) -> dict[str, Any]:
    payload = json.loads(json.dumps(PUSH))
    for path, value in changes.items():
        target = payload
        *parents, last = path.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return payload


@pytest.mark.parametrize(("payload", "event"), [
    pytest.param(PUSH, "ping", id="ping"),
    pytest.param(PUSH, "pull_request", id="other-event"),
    pytest.param(_with(after="0" * 40, deleted=True), "push", id="branch-deletion"),
    pytest.param(_with(after="0d1a26e6"), "push", id="short-commit"),
    pytest.param(_with(after="--upload-pack=touch /tmp/pwned"), "push", id="option-as-ref"),
    pytest.param(_with(after="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c; rm -rf /"), "push", id="ref-with-command"),
    pytest.param(_with(repository__clone_url="--upload-pack=touch /tmp/pwned"), "push", id="option-as-url"),
    pytest.param(_with(repository__clone_url="ext::sh -c touch% /tmp/pwned"), "push", id="remote-helper-url"),
    pytest.param(_with(repository__clone_url="https://-oProxyCommand=touch/x.git"), "push", id="option-as-host"),
    pytest.param(_with(repository__clone_url="file:///etc"), "push", id="local-url"),
    pytest.param(_with(repository__clone_url="https://github.com/o/r.git\n"), "push", id="url-newline"),
    pytest.param(_with(repository__clone_url="https://github.com/o/r.git x"), "push", id="url-space"),
    pytest.param(_with(repository__clone_url=None), "push", id="no-url"),
])
def test_what_is_not_a_clonable_push_of_a_commit_starts_nothing(payload: dict[str, Any], event: str) -> None:
    assert deliver(payload, event=event) is None


@pytest.mark.parametrize("url", ["https://github.com/o/r.git", "https://gitlab.example.com:8443/g/sub/r.git",
                                 "https://git.example.org/r"])
def test_whatever_starts_job1_passes_the_checks_job1_makes(url: str) -> None:
    started = deliver(_with(repository__clone_url=url))
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
