"""A service killed (SIGKILL) with runs queued and running picks them up when restarted:
every accepted delivery ends in a finished run or an explicit superseded record, none twice.

The chain here is a fake (tests/integration/test_webhook_helpers.py: FAKE_CHAIN) that
sleeps and records each start and end; the real engine is exercised by the git-push test.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from test_webhook_helpers import (
    SECRET,
    Service,
    delivery_headers,
    push_payload,
    read_record,
    wait_for,
    write_fake_chain,
)

from mlchain.webhook.queue import WebhookQueue, queue_path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_sigkill_with_queued_and_running_runs_then_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    record = tmp_path / "record.jsonl"
    fake = write_fake_chain(tmp_path)
    # The first chains run until the service is killed (they die with it), never finishing on
    # their own before the kill however slow the machine; the resumed ones finish at once.
    env = {"FAKE_CHAIN_RECORD": str(record), "FAKE_CHAIN_SLEEP": "600", "MLCHAIN_WEBHOOK_BRANCHES": "*"}
    svc = Service(home, workers=2, chain_command=fake, env=env)
    ids: dict[str, str] = {}
    try:
        def push(key: str, branch: str) -> None:
            r = svc.deliver("push", push_payload(ref=f"refs/heads/{branch}", email=f"{key}@example.com"))
            assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
            ids[key] = r.json()["run_id"]

        push("a1", "a")
        wait_for(lambda: any(e["run_id"] == ids["a1"] for e in read_record(record)), what="a1 to start")
        push("b1", "b")
        push("a2", "a")   # queued behind a1 ...
        push("a3", "a")   # ... and a newer push to the same branch: a2 will be superseded by a3
        push("c1", "c")   # no free worker: queued
        def two_started() -> list[dict[str, object]] | None:
            started = [e for e in read_record(record) if e["event"] == "start"]
            return started if len(started) >= 2 else None

        starts = wait_for(two_started, what="two chains running")
    finally:
        svc.kill()
    running_pids = [e["pid"] for e in starts]
    assert {e["run_id"] for e in starts} == {ids["a1"], ids["b1"]}
    assert not [e for e in read_record(record) if e["event"] == "end"], "killed before any chain finished"
    # the chains died with the service (PDEATHSIG): none goes on beside its resumption
    wait_for(lambda: not any(_pid_alive(p) for p in running_pids), timeout=10, what="orphaned chains to die")
    rows = {r["run_id"]: r for r in WebhookQueue(queue_path(home)).entries()}
    assert {rows[ids[k]]["status"] for k in ("a1", "b1")} == {"running"}
    assert {rows[ids[k]]["status"] for k in ("a2", "a3", "c1")} == {"queued"}

    svc = Service(home, workers=2, chain_command=fake, env={**env, "FAKE_CHAIN_SLEEP": "0.2"})
    try:
        wq = WebhookQueue(queue_path(home))
        wait_for(lambda: not wq.active_entries(), timeout=90, what="the queue to drain")
        api = svc.client.get("/api/runs").json()["runs"]
    finally:
        svc.stop()

    rows = {r["run_id"]: r for r in WebhookQueue(queue_path(home)).entries()}
    events = read_record(record)
    ends = Counter(e["run_id"] for e in events if e["event"] == "end")
    run_starts = Counter(e["run_id"] for e in events if e["event"] == "start" and e["mode"] == "run")
    modes = {(e["run_id"], e["mode"]) for e in events if e["event"] == "start"}

    # every accepted delivery: a finished run, or superseded by a finished run of the same lane
    for key, run_id in ids.items():
        row = rows[run_id]
        if row["status"] == "superseded":
            newer = rows[row["superseded_by"]]
            assert newer["status"] == "finished" and newer["lane"] == row["lane"], key
            assert ends[run_id] == 0, f"{key} was superseded yet ran"
        else:
            assert row["status"] == "finished" and row["result"] == "passed", (key, row)
            assert ends[run_id] == 1, f"{key} finished {ends[run_id]} times"
    assert rows[ids["a2"]]["status"] == "superseded" and rows[ids["a2"]]["superseded_by"] == ids["a3"]
    # none twice: each run was started fresh once; the killed ones were resumed, not rerun
    assert all(n == 1 for n in run_starts.values()), run_starts
    assert (ids["a1"], "resume") in modes and (ids["b1"], "resume") in modes
    assert (ids["c1"], "run") in modes and (ids["a3"], "run") in modes
    assert rows[ids["a1"]]["attempts"] == 2 and rows[ids["c1"]]["attempts"] == 1
    # the chain gets the service's home and never the webhook secret
    assert all(e["secret_in_env"] is False and e["home"] == str(home) for e in events if e["event"] == "start")
    by_id = {r["run_id"]: r for r in api}
    assert by_id[ids["a2"]]["status"] == "superseded"
    assert by_id[ids["a2"]]["queue"]["superseded_by"] == ids["a3"]
    assert by_id[ids["c1"]]["status"] == "passed"


def test_graceful_stop_leaves_running_runs_to_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    record = tmp_path / "record.jsonl"
    fake = write_fake_chain(tmp_path)
    env = {"FAKE_CHAIN_RECORD": str(record), "FAKE_CHAIN_SLEEP": "30"}
    svc = Service(home, workers=1, chain_command=fake, env=env)
    try:
        run_id = svc.deliver("push", push_payload()).json()["run_id"]
        wait_for(lambda: read_record(record), what="the chain to start")
    finally:
        started = time.time()
        svc.stop()  # SIGTERM: the chain is stopped, its lease released
    assert time.time() - started < 25
    row = WebhookQueue(queue_path(home)).entry(run_id)
    assert row is not None and row["status"] == "running" and row["lease_until"] == 0
    env["FAKE_CHAIN_SLEEP"] = "0.2"
    svc = Service(home, workers=1, chain_command=fake, env=env)
    try:
        wq = WebhookQueue(queue_path(home))
        wait_for(lambda: not wq.active_entries(), timeout=30, what="the resumed run to finish")
    finally:
        svc.stop()
    row = WebhookQueue(queue_path(home)).entry(run_id)
    assert row is not None and row["status"] == "finished" and row["result"] == "passed"
    assert [e["mode"] for e in read_record(record) if e["event"] == "start"] == ["run", "resume"]


def test_acknowledged_deliveries_survive_sigkill_in_the_middle_of_a_burst(tmp_path: Path) -> None:
    """Eight senders deliver without pause; the service is SIGKILLed while requests are in
    flight, three times. Every delivery that got its 202 is in the queue with its run id."""
    home = tmp_path / "home"
    acked: dict[str, str] = {}
    refused: list[str] = []
    lock = threading.Lock()
    for round_no in range(3):
        svc = Service(home)
        enough, stop = threading.Event(), threading.Event()
        target = (round_no + 1) * 80

        def sender(n: int, url: str = svc.url, round_no: int = round_no,
                   enough: threading.Event = enough, stop: threading.Event = stop, target: int = target) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    delivery = f"r{round_no}-s{n}-{i}"
                    raw = json.dumps(push_payload()).encode()
                    try:
                        r = client.post("/github-webhook/", content=raw,
                                        headers=delivery_headers("push", raw, SECRET, delivery=delivery))
                    except httpx.HTTPError:
                        return  # the service died under this request: it was never acknowledged
                    with lock:
                        if r.status_code != 202 or r.json()["status"] != "accepted":
                            refused.append(f"{r.status_code} {r.text}")
                            return
                        acked[delivery] = r.json()["run_id"]
                        if len(acked) >= target:
                            enough.set()

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        try:
            assert enough.wait(120), f"the senders did not get their deliveries acknowledged: {refused[:3]}"
        finally:
            svc.kill()  # senders still mid-request
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert not refused, refused[:3]
    rows = {r["delivery_id"]: r["run_id"] for r in WebhookQueue(queue_path(home)).entries(100_000)}
    lost = {d: run_id for d, run_id in acked.items() if rows.get(d) != run_id}
    assert len(acked) >= 240 and not lost, f"{len(lost)} of {len(acked)} acknowledged deliveries lost"
