"""A ref or clone URL from outside (a flag, a build parameter, a push) never reaches git as an
option: `--upload-pack=touch${IFS}M;` would run a command on the host as the engine's user.

Each attack runs against real git; the proof is a marker file the injected command would
create, which must not exist afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import git, make_git_repo

from mlchain.config import load_settings
from mlchain.engine.jjb import GitScm
from mlchain.engine.local import checkout
from mlchain.errors import ConfigError, GitError
from mlchain.gitrefs import clone_url_problem, ref_problem, require_ref
from mlchain.webhook import signature
from mlchain.webhook.payload import Policy, decide_push, parse_body

MARKER = "pwned"


def injected_refs(marker: Path) -> list[str]:
    """Refs that make `git fetch origin REF` run `touch MARKER` (as the issue reproduced)."""
    return [
        f"--upload-pack=touch${{IFS}}{marker};",
        f"--upload-pack=touch {marker};",
        f"-utouch${{IFS}}{marker};",              # -u is fetch's short --upload-pack
    ]


def markers_under(root: Path) -> list[Path]:
    return [p for p in root.rglob(MARKER + "*")]


def mlchain(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLCHAIN_HOME": str(home), "MLCHAIN_RUNNER": "process"}
    return subprocess.run([sys.executable, "-m", "mlchain.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", files={"train.py": "print('never run')\n"})


@pytest.mark.parametrize("index", range(3))
def test_cli_ref_never_reaches_git_as_an_option(tmp_path: Path, repo: Path, index: int) -> None:
    marker = tmp_path / f"{MARKER}-{index}"
    ref = injected_refs(marker)[index]
    done = mlchain(tmp_path / "home", "run", str(repo), f"--ref={ref}", "--no-resume", "--json")
    assert markers_under(tmp_path) == []
    assert done.returncode == GitError.exit_code, done.stderr
    assert "is not a git branch, tag or commit" in done.stderr and "begins with '-'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("index", range(3))
def test_engine_checkout_refuses_an_injected_ref_parameter(tmp_path: Path, repo: Path, index: int) -> None:
    # The Jenkins path: REF arrives as a build parameter, not through `mlchain run`.
    marker = tmp_path / f"{MARKER}-{index}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    lines: list[str] = []
    with pytest.raises(GitError, match="REF"):
        checkout(GitScm(url="$REPO_URL", branches=("$REF",)), workspace,
                 {"REPO_URL": repo.as_uri(), "REF": injected_refs(marker)[index]}, lines.append)
    assert markers_under(tmp_path) == []


@pytest.mark.parametrize("url", [
    "ext::sh -c touch% {marker}",
    "--upload-pack=touch${{IFS}}{marker};",
    "-utouch${{IFS}}{marker};",
    "fd::3",
    "ssh://-oProxyCommand=touch%20{marker}/x.git",
])
def test_engine_checkout_refuses_an_injected_url_parameter(tmp_path: Path, url: str) -> None:
    marker = tmp_path / MARKER
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with pytest.raises(GitError, match="cannot be cloned"):
        checkout(GitScm(url="$REPO_URL", branches=("main",)), workspace,
                 {"REPO_URL": url.format(marker=marker)}, lambda _l: None, clone_schemes=("https", "ssh", "file"))
    assert markers_under(tmp_path) == []
    assert not (workspace / ".git").exists()  # refused before git ran at all


def test_valid_refs_still_check_out(tmp_path: Path, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "release/1.2")
    (repo / "train.py").write_text("print('release')\n")
    git(repo, "commit", "-q", "-am", "release")
    git(repo, "tag", "v1.0")
    release = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    main = git(repo, "rev-parse", "HEAD")
    seen: dict[str, str] = {}
    for ref in ("main", "release/1.2", "v1.0", main, "HEAD"):
        workspace = tmp_path / f"ws-{len(seen)}"
        workspace.mkdir()
        seen[ref] = checkout(GitScm(url="$REPO_URL", branches=("$REF",)), workspace,
                             {"REPO_URL": repo.as_uri(), "REF": ref}, lambda _l: None)["GIT_COMMIT"]
    assert seen == {"main": main, "release/1.2": release, "v1.0": release, main: main, "HEAD": main}


NAMES = ["main", "release/1.2", "feature/x-y_z", "v1.0", "a.b", "HEAD", "@", "a@{1}", "a..b", "a/.hidden",
         "a.lock", "a/b.lock/c", "/a", "a/", "a//b", "a.", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b",
         "a\x7fb", "a\tb", "", "-x", "refs/heads/-x", "a/-b", "--upload-pack=x", "ü-branch", "a@b", "x" * 300]


@pytest.mark.parametrize("name", NAMES)
def test_ref_rules_are_gits_own(name: str) -> None:
    """Whatever gitrefs accepts, `git check-ref-format` accepts; ours refuses in addition only
    components that begin with '-' (git allows them in refs, not in options)."""
    done = subprocess.run(["git", "check-ref-format", "--allow-onelevel", name], capture_output=True, check=False)
    git_ok = done.returncode == 0
    ours_ok = ref_problem(name) is None
    leading_dash = any(part.startswith("-") for part in name.split("/"))
    assert ours_ok == (git_ok and not leading_dash), (name, git_ok, ref_problem(name))


def test_a_full_commit_id_is_accepted_as_a_ref() -> None:
    assert require_ref("a" * 40) == "a" * 40
    assert require_ref("b" * 64) == "b" * 64


# --- the webhook: a signed push ------------------------------------------------------------

SECRET = b"s3cret"
SHA = "c" * 40


def signed_push(marker: Path, **over: Any) -> tuple[bytes, str]:
    payload: dict[str, Any] = {
        "ref": "refs/heads/main", "after": SHA, "deleted": False,
        "repository": {"clone_url": "https://github.com/team/digits.git", "full_name": "team/digits",
                       "default_branch": "main"},
        "pusher": {"email": "mallory@example.com"},
    }
    for key, value in over.items():
        if key.startswith("repository_"):
            payload["repository"][key.removeprefix("repository_")] = value
        else:
            payload[key] = value
    body = json.dumps(payload).encode()
    return body, signature.sign(SECRET, body)


def receive(body: bytes, header: str, policy: Policy) -> Any:
    """What the server does with a delivery: check the signature, parse, decide."""
    assert signature.verify(SECRET, body, header)
    return decide_push(parse_body(body, "application/json"), policy)


def test_signed_push_with_an_option_as_branch_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    branch = f"--upload-pack=touch${{IFS}}{marker};"
    origin = make_git_repo(tmp_path / "origin", files={"train.py": "print('x')\n"})
    body, header = signed_push(marker, ref=f"refs/heads/{branch}", repository_default_branch=branch,
                               repository_clone_url=origin.as_uri())
    decision = receive(body, header, Policy())
    # What the worker would run for an enqueued push (webhook.queue.chain_argv), run for real.
    name = decision.job.name if decision.job is not None else branch
    mlchain(tmp_path / "home", "run", f"--ref={name}", "--run-id=push-1", "--no-resume", "--json",
            "--", origin.as_uri())
    assert markers_under(tmp_path) == []
    assert decision.action == "reject" and "not a valid git ref" in decision.reason


@pytest.mark.parametrize(("over", "policy", "why"), [
    ({"repository_default_branch": "--upload-pack=touch${IFS}M;"}, Policy(), "default_branch"),
    ({"ref": "refs/heads/main/-utouch${IFS}M;"}, Policy(branches=("*",)), "not a valid git ref"),
    ({"ref": "refs/tags/--upload-pack=touch${IFS}M;"}, Policy(tags=("*",)), "not a valid git ref"),
    ({"repository_clone_url": "file:///srv/git/private.git"}, Policy(), "'file' is not allowed"),
    ({"repository_clone_url": "ext::sh%20-c%20touch%20M"}, Policy(), "<transport>::"),
    ({"repository_clone_url": "fd::3"}, Policy(), "<transport>::"),
    ({"repository_clone_url": "ssh://-oProxyCommand=touch%20M/r.git"}, Policy(), "host begins with '-'"),
    ({"repository_clone_url": "git@github.com:-oProxyCommand=x"}, Policy(), "path begins with '-'"),
    ({"repository_clone_url": "http://github.com/team/digits.git"}, Policy(), "'http' is not allowed"),
    ({"repository_clone_url": "/srv/git/private.git"}, Policy(), "no scheme"),
])
def test_signed_push_with_a_hostile_field_is_rejected(tmp_path: Path, over: dict[str, str], policy: Policy,
                                                     why: str) -> None:
    body, header = signed_push(tmp_path / MARKER, **over)
    decision = receive(body, header, policy)
    assert (decision.action, why in decision.reason) == ("reject", True), decision


def test_the_deployment_chooses_the_clone_schemes() -> None:
    settings = load_settings({"home": "/tmp/unused"}, env={"MLCHAIN_CLONE_SCHEMES": "https,git"})
    policy = Policy.from_settings(settings)
    assert policy.clone_schemes == ("https", "git")
    assert clone_url_problem("git://127.0.0.1:9418/r.git", policy.clone_schemes) is None
    assert "not allowed" in (clone_url_problem("ssh://h/r.git", policy.clone_schemes) or "")
    with pytest.raises(ConfigError, match="clone_schemes"):  # file:// is never a push's: not even listable
        load_settings({"home": "/tmp/unused"}, env={"MLCHAIN_CLONE_SCHEMES": "https,file"})


@pytest.mark.parametrize(("url", "ref", "what"), [
    ("https://github.com/team/digits.git", "--upload-pack=touch${IFS}M;", "REF"),
    ("file:///srv/git/private.git", "main", "REPO_URL"),
    ("ext::sh -c touch% M", "main", "REPO_URL"),
])
def test_jenkins_trigger_refuses_what_job1_would_hand_to_git(tmp_path: Path, url: str, ref: str, what: str) -> None:
    from click.testing import CliRunner

    from mlchain.cli import cli

    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "jenkins", "trigger", "--", url, ref],
                                env={"MLCHAIN_JENKINS_URL": "http://127.0.0.1:9"})
    assert result.exit_code == GitError.exit_code, result.output
    assert f"{what} " in result.output and "Traceback" not in result.output
