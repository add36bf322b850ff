"""Model serving: predictions per second and p99 latency of `mlchain model serve` against
`mlflow models serve --env-manager local`, on the same registered model, the same payload and
the same load generator, side by side in one run, at 1 and at 32 concurrent clients.

The model is the digits MLP that the chain trains and registers (`models/digits_sklearn`, process
runner, in a temporary MLCHAIN_HOME), unless --home names one that already has --name. Each
request carries one row (MLflow's ``dataframe_split``, 64 pixel columns). Load comes from ``wrk``
(Debian package) with a Lua body; both servers run at once, and each concurrency level measures
them in turn, --rounds times, alternating (the median is printed), so that the machine's other
work falls on both. Only status 200 counts as a prediction.

Targets: at 32 clients, at least 2x MLflow's predictions per second; p99 no worse at 1 and 32.
At 32 clients mlchain's p99 is set by the interpreter's full (generation 2) garbage collections:
at thousands of requests per second, objects of requests in flight are promoted often enough
to start one every few seconds, and each walks the whole heap of MLflow, pandas and the model.

    .venv/bin/python benchmarks/bench_serve.py [--duration 10] [--rounds 3] [--home DIR --name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONCURRENCY = (1, 32)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train(home: Path) -> str:
    """The chain's digits model, registered under the repository's name: that name."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_git_repo

    from mlchain.config import load_settings
    from mlchain.engine.chain import run_chain

    repo = make_git_repo(home.parent / "digits", example="digits_sklearn")
    summary = run_chain(load_settings({"home": home, "runner": "process"}, env={}), str(repo), ref="main",
                        live=False)
    if not (summary.registered and summary.registered["champion"]):
        raise SystemExit(f"the chain registered no champion:\n{summary.explain()}")
    return "digits"


def payload() -> bytes:
    from sklearn.datasets import load_digits

    row = load_digits().data[7].tolist()
    return json.dumps({"dataframe_split": {"columns": [f"pixel_{i}" for i in range(64)], "data": [row]}}).encode()


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer /ping within {timeout:.0f} s")


def check_same_answer(urls: dict[str, str], body: bytes) -> None:
    answers = {}
    for name, url in urls.items():
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            answers[name] = json.loads(answer.read())["predictions"]
    if len({json.dumps(a) for a in answers.values()}) != 1:
        raise SystemExit(f"the servers disagree on the same payload: {answers}")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    """wrk's duration ('812.00us', '3.21ms', '1.07s', '1.00m') in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, clients: int, duration: float, script: Path) -> dict[str, float]:
    """One wrk run: 200-answers per second and p99 latency (ms)."""
    done = subprocess.run(["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{duration:.0f}s",
                           "--latency", "-s", str(script), f"{url}/invocations"],
                          capture_output=True, text=True, check=True)
    out = done.stdout
    if "99%" not in out or "requests in" not in out:
        raise SystemExit(f"wrk gave no latency distribution for {url}:\n{out}\n{done.stderr}")
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    seconds = _ms(re.search(r"requests in ([\d.]+\w+),", out).group(1)) / 1000  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return {"rps": (total - failed) / seconds, "p99_ms": p99, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements per server and level")
    parser.add_argument("--home", type=Path, default=None, help="an MLCHAIN_HOME with the model registered")
    parser.add_argument("--name", default=None, help="the registered model's name (with --home)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    home = args.home or work / "home"
    name = args.name or (train(home) if args.home is None else "digits")
    tracking = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "MLFLOW_TRACKING_URI": tracking}
    ports = {"mlchain": free_port(), "mlflow": free_port()}
    urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    processes = {
        "mlchain": start([sys.executable, "-m", "mlchain.cli", "--home", str(home), "model", "serve", name,
                          "--port", str(ports["mlchain"])], env, work / "mlchain.log"),
        "mlflow": start([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion",
                         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(ports["mlflow"])],
                        env, work / "mlflow.log"),
    }
    try:
        for key, url in urls.items():
            wait_up(url, processes[key], work / f"{key}.log")
        body = payload()
        check_same_answer(urls, body)
        script = work / "body.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        for url in urls.values():  # warm both up (imports, first predict, caches)
            wrk(url, 32, 2, script)
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for clients in CONCURRENCY:
            for round_ in range(args.rounds):
                order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
                for key in order:
                    results.setdefault((key, clients), []).append(wrk(urls[key], clients, args.duration, script))
        print(report(results, args))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[tuple[str, int], list[dict[str, float]]], args: Any) -> str:
    lines = [(f"one row per request (dataframe_split, 64 columns); wrk, {args.duration:.0f} s x {args.rounds} "
              "rounds per cell, medians; both servers up at once, measured in turn"),
             f"{'clients':>7}  {'server':<8} {'pred/s':>9} {'p99 ms':>8} {'failed':>6}"]
    for clients in CONCURRENCY:
        med = {}
        for key in ("mlchain", "mlflow"):
            runs = results[(key, clients)]
            med[key] = {m: statistics.median(r[m] for r in runs) for m in ("rps", "p99_ms")}
            failed = sum(int(r["failed"]) for r in runs)
            lines.append(f"{clients:>7}  {key:<8} {med[key]['rps']:>9.0f} {med[key]['p99_ms']:>8.1f} {failed:>6}")
        speed = med["mlchain"]["rps"] / med["mlflow"]["rps"]
        p99 = med["mlchain"]["p99_ms"] / med["mlflow"]["p99_ms"]
        lines.append(f"{clients:>7}  ratio    throughput x{speed:.2f} (mlchain/mlflow), p99 x{p99:.2f} (lower is better)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
