"""job1's push filter under the JVM's regex engine, the one the Generic Webhook Trigger uses.

tests/unit/test_push_trigger.py applies the rendered filter with Python's `re`; Java's
java.util.regex differs in places (`$` before a final line terminator, `\\Z`, classes). Here
the same rendered filter texts go through `Pattern.compile(expression).matcher(text).find()`
on a JVM (Groovy, from Debian's packages) and must get the same verdicts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from gwt import ACCEPTED_URLS, REFUSED, SAMPLE_PUSH, job1_trigger, with_changes
from strictness import require

FIND = """
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import java.util.regex.Pattern

def cases = new JsonSlurper().parse(new File(args[0]))
def pattern = Pattern.compile(cases.expression)
println JsonOutput.toJson(cases.texts.collect { pattern.matcher(it).find() })
"""


def _java_home() -> str | None:
    """The environment's JAVA_HOME if valid, else the JDK the `java` on PATH belongs to."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return home
    java = shutil.which("java")
    return str(Path(java).resolve().parents[1]) if java else None


def test_the_jvm_finds_what_the_python_emulation_finds(tmp_path: Path) -> None:
    groovy, java_home = shutil.which("groovy"), _java_home()
    require(None if groovy and java_home else "groovy (and a JDK) are needed: apt-get install groovy")
    assert groovy is not None and java_home is not None
    trigger = job1_trigger()
    deliveries = [(payload, event, False) for _, payload, event in REFUSED]
    deliveries += [(with_changes(SAMPLE_PUSH, repository__clone_url=url), "push", True) for url in ACCEPTED_URLS]
    texts = [trigger.rendered_filter(trigger.variables_of({"X-GitHub-Event": event},
                                                          json.dumps(payload).encode("utf-8")))
             for payload, event, _ in deliveries]
    (tmp_path / "find.groovy").write_text(FIND)
    (tmp_path / "cases.json").write_text(json.dumps({"expression": trigger.expression, "texts": texts}))
    done = subprocess.run([groovy, str(tmp_path / "find.groovy"), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, check=False, timeout=300,
                          env={**os.environ, "JAVA_HOME": java_home})
    assert done.returncode == 0, done.stderr
    jvm = json.loads(done.stdout.strip().splitlines()[-1])
    python = [bool(re.search(trigger.expression, text)) for text in texts]
    expected = [accepted for _, _, accepted in deliveries]
    assert python == expected
    assert jvm == expected, [t for t, j, e in zip(texts, jvm, expected, strict=True) if j != e]
