"""Webhook intake: accepted deliveries per second and p99 latency, and a 10,000-delivery burst.

What is measured is the request path alone: size check, HMAC-SHA256 signature check,
JSON parse, branch decision, and the durable commit (SQLite WAL, synchronous=FULL, one
transaction per delivery) before the 202. The service runs with ``--workers 0`` (accept only: no
chain runs). Load comes from ``wrk`` (Debian package) on loopback with a pre-signed
realistic push payload of several kilobytes and a unique X-GitHub-Delivery per request
(benchmarks/bench_webhook.lua); without wrk, from a small asyncio HTTP/1.1 client (it
shares the CPUs with the service, so it reads lower).

Targets: every delivery answered within GitHub's 10 s (p99 and max), and a burst of
10,000 distinct deliveries ends with 10,000 queue rows (none lost). Deliveries per second
are printed for information: a busy organisation sends a few pushes a second.

    .venv/bin/python benchmarks/bench_webhook.py [--duration 10] [--connections 32] [--burst 10000]

Side by side with another checkout: run it once with PYTHONPATH naming each one's src/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mlchain.webhook.queue import WebhookQueue, queue_path
from mlchain.webhook.signature import sign

HERE = Path(__file__).resolve().parent
SECRET = "bench-secret-" + uuid.uuid4().hex
GITHUB_TIMEOUT_MS = 10_000.0  # GitHub gives up on a delivery not answered by then
LAUNCH = ("from mlchain.config import load_settings; from mlchain.webhook.server import serve; "
          "serve(load_settings(), host='127.0.0.1', port=0, workers=0)")


def realistic_payload(commits: int = 8) -> bytes:
    """A push as GitHub sends it: repository, pusher, sender, head_commit and a few commits."""
    def commit(i: int) -> dict[str, Any]:
        sha = f"{i:02x}" * 20
        return {"id": sha, "tree_id": sha[::-1], "distinct": True,
                "message": f"Tune the digits model, step {i}\n\nRaise hidden units; lower the learning rate.",
                "timestamp": "2026-11-24T10:00:00+01:00", "url": f"https://github.com/team/digits/commit/{sha}",
                "author": {"name": "Dee Veloper", "email": "dee@example.com", "username": "dee"},
                "committer": {"name": "Dee Veloper", "email": "dee@example.com", "username": "dee"},
                "added": [], "removed": [], "modified": ["train.py", "mlchain.yaml"]}
    user = {"login": "dee", "id": 1234, "node_id": "MDQ6VXNlcjEyMzQ=", "type": "User", "site_admin": False,
            "avatar_url": "https://avatars.githubusercontent.com/u/1234?v=4", "html_url": "https://github.com/dee"}
    payload = {
        "ref": "refs/heads/main", "before": "ab" * 20, "after": "cd" * 20, "created": False, "deleted": False,
        "forced": False, "base_ref": None, "compare": "https://github.com/team/digits/compare/abab...cdcd",
        "commits": [commit(i) for i in range(commits)], "head_commit": commit(commits - 1),
        "repository": {"id": 99, "node_id": "R_kgDO", "name": "digits", "full_name": "team/digits",
                       "private": False, "owner": user, "html_url": "https://github.com/team/digits",
                       "description": "digits classifier", "fork": False,
                       "clone_url": "https://github.com/team/digits.git",
                       "ssh_url": "git@github.com:team/digits.git", "default_branch": "main",
                       "master_branch": "main", "size": 120, "language": "Python"},
        "pusher": {"name": "dee", "email": "dee@example.com"}, "sender": user,
    }
    return json.dumps(payload, indent=1).encode()


class Service:
    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLCHAIN_")}
        env.update({"MLCHAIN_HOME": str(home), "MLCHAIN_WEBHOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"})
        self.home = home
        self.log = home.parent / "service.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            m = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", self.log.read_text(errors="replace"))
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"service did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()

    def cpu_seconds(self) -> float:
        """user + system CPU of the service so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rows(self) -> int:
        with WebhookQueue(queue_path(self.home)).connect() as db:
            return int(db.execute("SELECT COUNT(DISTINCT delivery_id) FROM queue").fetchone()[0])


def run_wrk(url: str, body_file: Path, signature: str, duration: float, connections: int,
            threads: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(int(duration), 1)}s", "--timeout", "10s",
                          "-s", str(HERE / "bench_webhook.lua"), url + "/github-webhook/", "--",
                          str(body_file), signature, tag], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(v for k, v in data.items() if k.startswith("errors_"))
    return {"requests": data["requests"], "errors": errors, "seconds": data["duration_us"] / 1e6,
            "p50_ms": data["p50_us"] / 1000, "p99_ms": data["p99_us"] / 1000, "max_ms": data["max_us"] / 1000,
            "tool": "wrk"}


async def _client_load(url: str, body: bytes, signature: str, *, count: int | None, duration: float | None,
                       connections: int) -> dict[str, Any]:
    """Python load: `count` deliveries (or as many as fit in `duration`) over `connections`
    keep-alive HTTP/1.1 connections, written by hand on asyncio streams (an HTTP client
    library costs more CPU per request than the service it measures)."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    stop_at = time.perf_counter() + duration if duration else None
    head = (f"POST /github-webhook/ HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"X-GitHub-Event: push\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {len(body)}\r\n")

    async def worker(n: int) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (count is None or sent < count) and (stop_at is None or time.perf_counter() < stop_at):
                sent += 1
                request = f"{head}X-GitHub-Delivery: burst-{n}-{sent}-{uuid.uuid4().hex}\r\n\r\n".encode() + body
                t = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t)
                code = int(status_line.split()[1])
                statuses[code] = statuses.get(code, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": sum(n for s, n in statuses.items() if s != 202),
            "seconds": seconds, "statuses": statuses,
            "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
            "max_ms": latencies[-1] * 1000 if latencies else 0.0, "tool": "python/asyncio"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sustained load")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--burst", type=int, default=10_000, help="deliveries in the burst")
    ap.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk exists")
    args = ap.parse_args()

    body = realistic_payload()
    signature = sign(SECRET.encode(), body)
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    import mlchain

    print(f"mlchain from {Path(mlchain.__file__).parent}")
    print(f"payload {len(body)} bytes, signed; {args.connections} connections on loopback; "
          f"load generator {'wrk' if use_wrk else 'python/asyncio (wrk not found)'}; "
          f"CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)

        # 1. sustained rate and latency
        home = Path(tmp) / "sustained" / "home"
        home.parent.mkdir()
        svc = Service(home)
        try:
            cpu0 = svc.cpu_seconds()
            if use_wrk:
                res = run_wrk(svc.url, body_file, signature, args.duration, args.connections, args.threads)
            else:
                res = asyncio.run(_client_load(svc.url, body, signature, count=None, duration=args.duration,
                                               connections=args.connections))
            cpu = svc.cpu_seconds() - cpu0
            time.sleep(0.5)
            rows = svc.rows()
        finally:
            svc.stop()
        accepted = res["requests"] - res["errors"]
        rate = accepted / res["seconds"]
        print(f"\nsustained ({res['tool']}, {res['seconds']:.1f} s): {res['requests']} requests, "
              f"{res['errors']} errors, {rows} queue rows")
        print(f"  accepted/s  {rate:8.0f}   (information: no target)")
        print(f"  latency p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms;"
              f" target max < {GITHUB_TIMEOUT_MS / 1000:.0f} s   ratio {GITHUB_TIMEOUT_MS / max(res['max_ms'], 1e-9):5.1f}")
        if cpu > 0:
            per = cpu / max(res["requests"], 1)
            print(f"  service CPU {per * 1000:.2f} ms per delivery, {cpu / res['seconds']:.0%} of one core while "
                  f"loaded: {1 / per:.0f} deliveries/s per core of its own (the machine's load decides the rest)")
        # every 202 is a distinct committed row; requests still in flight when wrk stopped its
        # clock were committed too (wrk does not count them), so rows may exceed the 202s
        if rows < accepted:
            print(f"  LOST: {accepted} accepted but {rows} rows")
            ok = False
        ok = ok and res["errors"] == 0 and res["max_ms"] < GITHUB_TIMEOUT_MS

        # 2. burst: N distinct deliveries as fast as they come, none lost
        home = Path(tmp) / "burst" / "home"
        home.parent.mkdir()
        svc = Service(home)
        try:
            burst = asyncio.run(_client_load(svc.url, body, signature, count=args.burst, duration=None,
                                             connections=args.connections))
            rows = svc.rows()
        finally:
            svc.stop()
        print(f"\nburst of {args.burst} distinct deliveries ({burst['seconds']:.1f} s, "
              f"{burst['requests'] / burst['seconds']:.0f}/s through the asyncio client): statuses {burst['statuses']},"
              f" max latency {burst['max_ms']:.0f} ms")
        print(f"  queue rows {rows} / {args.burst}   ratio {rows / args.burst:5.3f}   "
              f"{'none lost' if rows == args.burst else 'LOST ' + str(args.burst - rows)}")
        ok = ok and rows == args.burst and burst["errors"] == 0 and burst["max_ms"] < GITHUB_TIMEOUT_MS
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
