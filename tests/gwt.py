"""job1-pull's Generic Webhook Trigger as the plugin applies it, read from the rendered config.xml.

The plugin's steps for one delivery (its resolvers and Renderer): JSONPath expressions on the
body, header variables named in lower case with `-` as `_`, `$VAR` and `${VAR}` substituted in
the filter text longest name first, then `Pattern.compile(expression).matcher(text).find()`.
Only the `$.a.b` paths job1 uses are understood; anything richer fails rather than being guessed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlchain.jenkins.render import load

ROOT = Path(__file__).resolve().parents[1]
GWT = "org.jenkinsci.plugins.gwt."
SAMPLE_PUSH = json.loads((ROOT / "tests" / "golden" / "github" / "push.json").read_text(encoding="utf-8"))


def json_path(document: Any, expression: str) -> Any:
    assert re.fullmatch(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)+", expression), f"unsupported JSONPath {expression!r}"
    for key in expression.split(".")[1:]:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


@dataclass(frozen=True)
class Trigger:
    token: str
    variables: tuple[tuple[str, str, str], ...]  # (key, JSONPath, default)
    headers: tuple[str, ...]
    filter_text: str
    expression: str
    parameters: frozenset[str]  # the job's own parameters: the variables the plugin passes as such

    def variables_of(self, headers: dict[str, str], body: bytes) -> dict[str, str]:
        payload = json.loads(body)
        found: dict[str, str] = {}
        for key, path, default in self.variables:
            value = json_path(payload, path)
            found[key] = default if value is None else value if isinstance(value, str) else json.dumps(value)
        for name in self.headers:
            value = next((v for k, v in headers.items() if k.lower() == name.lower()), "")
            found[re.sub(r"[\s-]", "_", name).lower()] = value
        return found

    def rendered_filter(self, found: dict[str, str]) -> str:
        text = self.filter_text
        for key in sorted(found, key=lambda k: (-len(k), k)):
            text = text.replace("$" + key, found[key]).replace("${" + key + "}", found[key])
        return text

    def start(self, headers: dict[str, str], body: bytes) -> dict[str, str] | None:
        """The parameters the job starts with, or None when the filter does not match."""
        found = self.variables_of(headers, body)
        if not re.search(self.expression, self.rendered_filter(found)):
            return None
        return {k: v for k, v in found.items() if k in self.parameters}


def job1_xml() -> ET.Element:
    item = next(i for i in load(ROOT / "jobs").jobs if i.name == "job1-pull")
    return ET.fromstring(item.xml.encode("utf-8"))


def job1_trigger() -> Trigger:
    root = job1_xml()
    trigger = root.find(f"triggers/{GWT}GenericTrigger")
    assert trigger is not None, "job1-pull renders no Generic Webhook Trigger"
    variables = []
    for var in trigger.iterfind(f"genericVariables/{GWT}GenericVariable"):
        assert var.findtext("expressionType") == "JSONPath"
        variables.append((var.findtext("key") or "", var.findtext("value") or "", var.findtext("defaultValue") or ""))
    return Trigger(
        token=trigger.findtext("token") or "",
        variables=tuple(variables),
        headers=tuple(h.findtext("key") or "" for h in
                      trigger.iterfind(f"genericHeaderVariables/{GWT}GenericHeaderVariable")),
        filter_text=trigger.findtext("regexpFilterText") or "",
        expression=trigger.findtext("regexpFilterExpression") or "",
        parameters=frozenset(p.findtext("name") or "" for p in
                             root.iterfind(".//hudson.model.StringParameterDefinition")))


def with_changes(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``payload`` with ``a__b=value`` setting payload["a"]["b"]."""
    copy = json.loads(json.dumps(payload))
    for path, value in changes.items():
        target = copy
        *parents, last = path.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return copy


# Deliveries that must not start job1: (id, payload, X-GitHub-Event).
REFUSED = [
    ("ping", SAMPLE_PUSH, "ping"),
    ("other-event", SAMPLE_PUSH, "pull_request"),
    ("branch-deletion", with_changes(SAMPLE_PUSH, after="0" * 40, deleted=True), "push"),
    ("short-commit", with_changes(SAMPLE_PUSH, after="0d1a26e6"), "push"),
    ("upper-case-commit", with_changes(SAMPLE_PUSH, after="0D1A26E67D8F5EAF1F6BA5C57FC3C7D91AC0FD1C"), "push"),
    ("option-as-ref", with_changes(SAMPLE_PUSH, after="--upload-pack=touch /tmp/pwned"), "push"),
    ("ref-with-command", with_changes(SAMPLE_PUSH, after="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c; rm -rf /"), "push"),
    ("ref-with-newline", with_changes(SAMPLE_PUSH, after="0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c\n"), "push"),
    ("option-as-url", with_changes(SAMPLE_PUSH, repository__clone_url="--upload-pack=touch /tmp/pwned"), "push"),
    ("remote-helper-url", with_changes(SAMPLE_PUSH, repository__clone_url="ext::sh -c touch% /tmp/pwned"), "push"),
    ("option-as-host", with_changes(SAMPLE_PUSH, repository__clone_url="https://-oProxyCommand=touch/x.git"), "push"),
    ("local-url", with_changes(SAMPLE_PUSH, repository__clone_url="file:///etc"), "push"),
    ("url-newline", with_changes(SAMPLE_PUSH, repository__clone_url="https://github.com/o/r.git\n"), "push"),
    ("url-space", with_changes(SAMPLE_PUSH, repository__clone_url="https://github.com/o/r.git x"), "push"),
    ("no-url", with_changes(SAMPLE_PUSH, repository__clone_url=None), "push"),
]
# Deliveries that start job1 with these clone URLs.
ACCEPTED_URLS = ["https://github.com/octo-org/digits-classifier.git", "https://gitlab.example.com:8443/g/sub/r.git",
                 "https://git.example.org/r"]
