"""Shared by the webhook integration tests (no tests here): the real service in a child
process on an ephemeral loopback port, signed deliveries, and a fake chain."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from mlchain.webhook.signature import sign

SECRET = "it-is-a-secret-7f3a9c"
LAUNCH = """
import json, sys
from mlchain.config import load_settings
from mlchain.webhook.server import serve
args = json.loads(sys.argv[1])
serve(load_settings(), host="127.0.0.1", port=0, workers=args["workers"], insecure=args["insecure"],
      chain_command=args["chain_command"])
"""

# A stand-in for `mlchain run`/`mlchain resume` (named as the fake it is): it records
# each start and end, creates the run in the StateStore as the engine would, sleeps,
# and prints a JSON summary. FAKE_CHAIN_RECORD names the record file.
FAKE_CHAIN = r'''
import json, os, sys, time
from pathlib import Path
from mlchain.state import StateStore

args = sys.argv[1:]
mode = args[0]
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
positional = args[args.index("--") + 1] if "--" in args else None
run_id = opts.get("run-id") if mode == "run" else positional
record = Path(os.environ["FAKE_CHAIN_RECORD"])

def note(event, **more):
    with open(record, "a") as f:
        f.write(json.dumps({"event": event, "mode": mode, "run_id": run_id, "pid": os.getpid(),
                            "at": time.time(), **more}) + "\n")

store = StateStore(Path(os.environ["MLCHAIN_HOME"]) / "state.db")
if mode == "run":
    store.create_run(run_id, positional, positional.rsplit("/", 1)[-1], opts.get("ref"),
                     opts.get("pusher-email"), status="running")
note("start", ref=opts.get("ref"), branch=opts.get("branch"), repo=positional, email=opts.get("pusher-email"),
     secret_in_env="MLCHAIN_WEBHOOK_SECRET" in os.environ, home=os.environ.get("MLCHAIN_HOME"))
time.sleep(float(os.environ.get("FAKE_CHAIN_SLEEP", "0.2")))
store.update_run(run_id, status="passed", finished_at=time.time())
note("end")
print(json.dumps({"run_id": run_id, "status": "passed"}))
'''


def write_fake_chain(tmp: Path) -> list[str]:
    path = tmp / "fake_chain.py"
    path.write_text(FAKE_CHAIN)
    return [sys.executable, str(path)]


def read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Service:
    """`mlchain serve` (through webhook.server.serve) in a child process."""

    def __init__(self, home: Path, *, workers: int = 0, insecure: bool = False,
                 chain_command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                 secret: str | None = SECRET, argv: Sequence[str] | None = None) -> None:
        self.home = home
        self.log_path = home.parent / f"service-{uuid.uuid4().hex[:6]}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
        full_env.update({"MLCHAIN_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        if secret:
            full_env["MLCHAIN_WEBHOOK_SECRET"] = secret
        full_env.update(env or {})
        self.secret = secret
        cmd = list(argv) if argv else [
            sys.executable, "-c", LAUNCH,
            json.dumps({"workers": workers, "insecure": insecure,
                        "chain_command": list(chain_command) if chain_command else None})]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                     stdin=subprocess.DEVNULL)
        self.url = self._wait_url()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _wait_url(self, timeout: float = 30) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", self.log())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"service did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def deliver(self, event: str, body: bytes | dict[str, Any], *, delivery: str | None = None,
                signature: str | None | bool = True, headers: Mapping[str, str] | None = None) -> httpx.Response:
        return self.client.post("/github-webhook/", content=_bytes(body),
                                headers=delivery_headers(event, _bytes(body), self.secret, delivery=delivery,
                                                         signature=signature, extra=headers))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.client.close()
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()


def _bytes(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def delivery_headers(event: str, body: bytes, secret: str | None, *, delivery: str | None = None,
                     signature: str | None | bool = True, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
    if signature is True and secret:
        headers["X-Hub-Signature-256"] = sign(secret.encode(), body)
    elif isinstance(signature, str):
        headers["X-Hub-Signature-256"] = signature
    headers.update(extra or {})
    return headers


def push_payload(*, ref: str = "refs/heads/main", after: str | None = None, default_branch: str = "main",
                 repo: str = "https://git.example.com/team/digits.git", email: str = "dev@example.com",
                 deleted: bool = False, name: str = "digits") -> dict[str, Any]:
    after = after if after is not None else uuid.uuid4().hex + uuid.uuid4().hex[:8]
    return {"ref": ref, "before": "1" * 40, "after": after, "deleted": deleted, "created": False,
            "repository": {"name": name, "full_name": f"team/{name}", "clone_url": repo,
                           "default_branch": default_branch},
            "pusher": {"name": "dev", "email": email},
            "head_commit": {"id": after, "message": "train", "author": {"name": "dev", "email": email}}}


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
