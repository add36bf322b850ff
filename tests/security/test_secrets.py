"""Secrets in the engine's environment against training code (issue 13, item 5).

The real CLI runs with the three secrets in its environment and the process runner (no
sandbox): the training looks for them where code on the same machine would, in its own
environment, in /proc/<pid>/environ of every ancestor (its supervisor, then the engine that
holds the settings), and in every /proc/*/environ it can open. It must find none, while the
engine still has them (the email step would use them).

Hostile inputs tried: 3 secrets x 2 commands (train, run), each looked for in the
training's own environment, /proc/self/environ, each ancestor's environ and every readable
/proc/*/environ: 6 runs, 4 places each.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# New values each session: the test reads every /proc/*/environ, which must not find
# another test process's copy of the same values.
SECRETS = {
    "MLCHAIN_SMTP_PASSWORD": f"smtp-pw-{secrets.token_hex(6)}",
    "MLCHAIN_JENKINS_TOKEN": f"jenkins-tok-{secrets.token_hex(6)}",
    "MLCHAIN_WEBHOOK_SECRET": f"hook-secret-{secrets.token_hex(6)}",
}

SNOOP = """
import json, os
from sklearn.linear_model import LogisticRegression  # what makes it a scikit-learn repository
from mlchain import sdk

def read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"unreadable: {type(exc).__name__}"

def parent(pid):
    stat = read(f"/proc/{pid}/stat")
    return int(stat.rsplit(")", 1)[1].split()[1]) if ")" in stat else 0

found = {"own": json.dumps(dict(os.environ)), "self": read("/proc/self/environ"), "ancestors": []}
pid = os.getpid()
while pid > 1:
    pid = parent(pid)
    if pid <= 1:
        break
    found["ancestors"].append({"pid": pid, "cmdline": read(f"/proc/{pid}/cmdline").replace("\\0", " "),
                               "environ": read(f"/proc/{pid}/environ")})
found["all"] = {name: read(f"/proc/{name}/environ") for name in os.listdir("/proc") if name.isdigit()}
with open(REPORT, "w") as fh:
    json.dump(found, fh)
sdk.report({"accuracy": 1.0})
"""


@pytest.mark.parametrize("command", ["train", "run"])
def test_training_finds_no_secret_in_any_environment(command: str, tmp_path: Path) -> None:
    report = tmp_path / "found.json"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(f"REPORT = {str(report)!r}\n" + textwrap.dedent(SNOOP))
    (repo / "mlchain.yaml").write_text("params:\n  C: 1.0\n")  # a search space, so the gate needs no other fix
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
    env.update(SECRETS, MLCHAIN_HOME=str(home), MLCHAIN_RUNNER="process",
               MLCHAIN_MAX_TRIALS="1")
    argv = [sys.executable, "-m", "mlchain.cli", command, str(repo)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    found = json.loads(report.read_text())
    engine = [a for a in found["ancestors"] if "mlchain.cli" in a["cmdline"]]
    assert engine, found["ancestors"]  # the engine itself was looked at
    assert any("runners.supervise" in a["cmdline"] for a in found["ancestors"])
    places = {"own environment": found["own"], "/proc/self/environ": found["self"],
              **{f"/proc/{a['pid']}/environ ({a['cmdline'][:60]})": a["environ"] for a in found["ancestors"]},
              **{f"/proc/{pid}/environ": text for pid, text in found["all"].items()}}
    for name, value in SECRETS.items():
        leaks = [where for where, text in places.items() if value in text]
        assert leaks == [], f"{name} readable by training in: {leaks}"
    # Nor anywhere the run wrote: logs, state, MLflow, the outbox.
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not [n for n, v in SECRETS.items() if v.encode() in data], path


def test_secrets_are_read_once_and_kept_for_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process: load_settings takes them out of the environment and still has them
    on every later call (the email step asks for settings again)."""
    script = textwrap.dedent("""
        import os, subprocess, sys
        from mlchain.config import load_settings, secret_env
        first = load_settings()
        assert "MLCHAIN_SMTP_PASSWORD" not in os.environ
        again = load_settings({"runner": "process"})
        assert again.smtp_password.get_secret_value() == first.smtp_password.get_secret_value() == sys.argv[1]
        assert secret_env() == {"MLCHAIN_SMTP_PASSWORD": sys.argv[1]}
        assert sys.argv[1].encode() not in open("/proc/self/environ", "rb").read()
        child = subprocess.run(["env"], capture_output=True, text=True).stdout
        assert sys.argv[1] not in child
        os.environ["MLCHAIN_SMTP_PASSWORD"] = ""  # set again, to nothing: that wins
        assert load_settings().smtp_password is None and secret_env() == {}
        print("ok")
    """)
    env = {**os.environ, "MLCHAIN_SMTP_PASSWORD": "pw-once-91"}
    done = subprocess.run([sys.executable, "-c", script, "pw-once-91"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout.strip() == "ok", done.stderr
