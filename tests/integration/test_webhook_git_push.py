"""`git push` to a local bare repository with scripts/post-receive installed starts a run.

test_git_push_enqueues_through_the_hook: the hook's signed payload, with a fake chain.
test_git_push_runs_the_chain_to_the_email: the real service (`mlchain serve`) and the real
engine: the pushed digits_sklearn example is trained, gated and announced (outbox .eml).

A push never names a file:// URL (the service refuses it): the bare repository is served by
`git daemon` on loopback and the service allows git:// (MLCHAIN_CLONE_SCHEMES).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port
from test_webhook_helpers import SECRET, Service, read_record, wait_for, write_fake_chain

from mlchain.webhook.queue import WebhookQueue, queue_path

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_DAEMON = "git://127.0.0.1:9"  # named in the payload only: the fake chain clones nothing
HOOK = REPO_ROOT / "scripts" / "post-receive"
EXAMPLE = REPO_ROOT / "models" / "digits_sklearn"

TINY_TRAIN = '''
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from mlchain import sdk

X, y = load_digits(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
model = LogisticRegression(max_iter=200).fit(Xtr, ytr)
sdk.report({"accuracy": float(model.score(Xte, yte))})
sdk.save_model(model)
'''


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout + out.stderr


def git_env(tmp: Path) -> dict[str, str]:
    cfg = tmp / "gitconfig"
    cfg.write_text("[user]\n\tname = Dee Veloper\n\temail = dee@example.com\n[init]\n\tdefaultBranch = main\n")
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "MLCHAIN_"))}
    env.update({"GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1"})
    return env


@contextlib.contextmanager
def git_daemon(root: Path) -> Iterator[str]:
    """`git daemon` serving the repositories under ``root`` read-only on loopback: their base URL."""
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}",
                               "--listen=127.0.0.1", f"--port={port}", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False

    try:
        wait_for(listening, timeout=20, what="git daemon to listen")
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def bare_repo_with_hook(tmp: Path, env: dict[str, str], url: str, clone_base: str) -> Path:
    bare = tmp / "digits.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp, env=env)
    git("config", "mlchain.cloneurl", f"{clone_base}/digits.git", cwd=bare, env=env)
    shutil.copy(HOOK, bare / "hooks" / "post-receive")
    (bare / "hooks" / "post-receive").chmod(0o755)
    secret_file = tmp / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    git("config", "mlchain.url", url, cwd=bare, env=env)
    git("config", "mlchain.secretfile", str(secret_file), cwd=bare, env=env)
    return bare


def working_copy(tmp: Path, env: dict[str, str], bare: Path) -> Path:
    work = tmp / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp, env=env)
    if EXAMPLE.is_dir():
        shutil.copytree(EXAMPLE, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:  # the example is not there yet: a tiny sklearn repository
        (work / "train.py").write_text(TINY_TRAIN)
        (work / "requirements.txt").write_text("scikit-learn\n")
    git("add", "-A", cwd=work, env=env)
    git("commit", "-q", "-m", "digits: first model", cwd=work, env=env)
    return work


def test_git_push_enqueues_through_the_hook(tmp_path: Path) -> None:
    env = git_env(tmp_path)
    record = tmp_path / "record.jsonl"
    svc = Service(tmp_path / "home", workers=1, chain_command=write_fake_chain(tmp_path),
                  env={"FAKE_CHAIN_RECORD": str(record), "MLCHAIN_WEBHOOK_BRANCHES": "main",
                       "MLCHAIN_CLONE_SCHEMES": "git"})
    try:
        clone_url = f"{FAKE_DAEMON}/digits.git"  # the fake chain clones nothing
        bare = bare_repo_with_hook(tmp_path, env, svc.url, FAKE_DAEMON)  # a base URL: the hook adds /github-webhook/
        work = working_copy(tmp_path, env, bare)
        out = git("push", "origin", "main", cwd=work, env=env)
        sha = git("rev-parse", "HEAD", cwd=work, env=env).strip()
        assert "remote: mlchain: refs/heads/main: 202 accepted wh-" in out, out
        wq = WebhookQueue(queue_path(svc.home))
        wait_for(lambda: wq.counts().get("finished") == 1, what="the fake chain to finish")
        [row] = wq.entries()
        assert (row["commit_sha"], row["ref"], row["pusher_email"], row["repo_url"]) == (
            sha, "refs/heads/main", "dee@example.com", clone_url)
        [start] = [e for e in read_record(record) if e["event"] == "start"]
        # the pushed commit is built, and the branch it came from is named
        assert (start["repo"], start["ref"], start["branch"], start["email"]) == (
            clone_url, sha, "main", "dee@example.com")

        git("checkout", "-q", "-b", "feature", cwd=work, env=env)
        out = git("push", "origin", "feature", cwd=work, env=env)
        assert "202 ignored" in out and "MLCHAIN_WEBHOOK_BRANCHES" in out
        out = git("push", "origin", ":feature", cwd=work, env=env)  # a deletion
        assert "202 ignored" in out and "deletion" in out
        assert len(wq.entries()) == 1
    finally:
        svc.stop()


def test_git_push_runs_the_chain_to_the_email(tmp_path: Path) -> None:
    """The real engine: needs `mlchain run --run-id` (the engine's CLI) and a process runner."""
    env = git_env(tmp_path)
    home = tmp_path / "home"
    svc = Service(home, argv=[sys.executable, "-m", "mlchain.cli", "serve", "--port", "0", "--workers", "1"],
                  env={"MLCHAIN_RUNNER": "process", "MLCHAIN_MAX_TRIALS": "2", "MLCHAIN_CLONE_SCHEMES": "git"})
    with contextlib.ExitStack() as stack:
        stack.callback(svc.stop)
        daemon = stack.enter_context(git_daemon(tmp_path))
        _push_and_wait_for_the_email(tmp_path, env, home, svc, bare_repo_with_hook(tmp_path, env, svc.url, daemon))


def _push_and_wait_for_the_email(tmp_path: Path, env: dict[str, str], home: Path, svc: Service, bare: Path) -> None:
    work = working_copy(tmp_path, env, bare)
    out = git("push", "origin", "main", cwd=work, env=env)
    assert "202 accepted" in out, out
    wq = WebhookQueue(queue_path(home))
    [row] = wq.entries()
    outbox = home / "outbox"
    wait_for(lambda: list(outbox.glob("*.eml")) or (wq.counts().get("finished") and pytest.fail(
        f"the run finished without an email: {wq.entries()} \n{_service_log(home, row['run_id'])}")),
             timeout=600, interval=1, what="the chain's email in the outbox")
    wait_for(lambda: wq.counts().get("finished") == 1, timeout=60, what="the queue row to finish")
    [row] = wq.entries()
    assert row["result"] in ("passed", "budget_spent"), _service_log(home, row["run_id"])
    api = svc.client.get(f"/api/runs/{row['run_id']}").json()
    assert api["status"] in ("passed", "budget_spent")
    assert api["commit"] == git("rev-parse", "HEAD", cwd=work, env=env).strip()
    assert api["jobs"][0]["state"] == "passed"  # job1-pull
    eml = next(outbox.glob("*.eml")).read_text(errors="replace")
    assert "digits" in eml


def _service_log(home: Path, run_id: str) -> str:
    path = home / "webhook-logs" / f"{run_id}.log"
    text = path.read_text(errors="replace")[-4000:] if path.exists() else "(no service log)"
    summary = home / "webhook-logs" / f"{run_id}.json"
    return text + ("\n" + json.dumps(summary.read_text()[:2000]) if summary.exists() else "")


def test_a_queued_push_builds_its_own_commit_after_the_branch_moved_on(tmp_path: Path) -> None:
    """A push of C1, then the branch moves to C2 before C1's run starts: the run builds C1
    (not the branch head, which would build C2 twice), and says it came from main; its
    search study is the branch's (mlchain:REPO@main), not one per commit. Real git, the
    real service and the real engine."""
    import optuna

    env = git_env(tmp_path)
    home = tmp_path / "home"
    serve = [sys.executable, "-m", "mlchain.cli", "serve", "--port", "0", "--workers"]
    settings_env = {"MLCHAIN_RUNNER": "process", "MLCHAIN_MAX_TRIALS": "2", "MLCHAIN_CLONE_SCHEMES": "git"}
    with git_daemon(tmp_path) as daemon:
        run_id, api, c1, c2 = _push_c1_then_move_on_then_build(tmp_path, env, home, serve, settings_env, daemon)
    assert api["commit"] == c1, _service_log(home, run_id)
    assert api["branch"] == "main"
    summary = json.loads((home / "webhook-logs" / f"{run_id}.json").read_text())
    assert (summary["commit"], summary["ref"], summary["branch"]) == (c1, c1, "main")
    # the search ran (the example's first trial misses the gate) in the branch's study
    assert optuna.get_all_study_names(f"sqlite:///{home / 'optuna.db'}") == ["mlchain:digits@main"]
    eml = next((home / "outbox").glob("*.eml")).read_text(errors="replace")
    assert "digits@main" in eml and c1[:12] in eml and c2[:12] not in eml


def _push_c1_then_move_on_then_build(tmp_path: Path, env: dict[str, str], home: Path, serve: list[str],
                                     settings_env: dict[str, str], daemon: str) -> tuple[str, Any, str, str]:
    """Push C1 to a service that only queues, move main on to C2, then start a service that
    builds: the run id, its API view, C1 and C2."""
    svc = Service(home, argv=[*serve, "0"], env=settings_env)  # accept and queue only
    try:
        bare = bare_repo_with_hook(tmp_path, env, svc.url, daemon)
        work = working_copy(tmp_path, env, bare)
        out = git("push", "origin", "main", cwd=work, env=env)
        assert "202 accepted" in out, out
        c1 = git("rev-parse", "HEAD", cwd=work, env=env).strip()
        # main moves on to C2 while C1's delivery waits in the queue (its own delivery is
        # not sent here: the hook is away, as if it were still on its way)
        hook = bare / "hooks" / "post-receive"
        hook.rename(hook.with_name("post-receive.off"))
        (work / "NOTES.md").write_text("a later commit\n")
        git("add", "NOTES.md", cwd=work, env=env)
        git("commit", "-q", "-m", "notes", cwd=work, env=env)
        git("push", "origin", "main", cwd=work, env=env)
        c2 = git("rev-parse", "HEAD", cwd=work, env=env).strip()
        assert c1 != c2
    finally:
        svc.stop()

    svc = Service(home, argv=[*serve, "1"], env=settings_env)
    try:
        wq = WebhookQueue(queue_path(home))
        [row] = wq.entries()
        assert row["commit_sha"] == c1
        wait_for(lambda: wq.counts().get("finished") == 1, timeout=600, interval=1, what="the run of C1")
        api = svc.client.get(f"/api/runs/{row['run_id']}").json()
    finally:
        svc.stop()
    return row["run_id"], api, c1, c2
