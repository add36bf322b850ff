from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlchain.webhook.payload import Decision, Policy, decide_push
from mlchain.webhook.queue import (
    Claim,
    DeliveryWriter,
    Dispatcher,
    Entry,
    ExecResult,
    Plan,
    Recorded,
    WebhookQueue,
    chain_argv,
    child_env,
    final_result,
    is_orphan,
    plan,
    queue_path,
    recovery_action,
)

# --- pure decisions -------------------------------------------------------------------


def E(seq: int, lane: str, status: str = "queued", orphan: bool = False) -> Entry:
    return Entry(seq=seq, run_id=f"r{seq}", lane=lane, status=status, orphan=orphan)


@pytest.mark.parametrize(("entries", "slots", "expected"), [
    ([], 2, Plan()),
    ([E(1, "a")], 0, Plan()),
    ([E(1, "a")], 1, Plan(start=("r1",))),
    # coalescing: the newest push of a lane runs, the older ones point at it
    ([E(1, "a"), E(2, "a"), E(3, "a")], 2, Plan(start=("r3",), superseded=(("r1", "r3"), ("r2", "r3")))),
    # one run per lane: a queued push waits behind the running one (and is not superseded yet)
    ([E(1, "a", "running"), E(2, "a"), E(3, "a")], 2, Plan()),
    # oldest waiting lane first, within the free slots
    ([E(1, "b"), E(2, "a"), E(3, "c")], 2, Plan(start=("r1", "r2"))),
    # orphans of a dead service come first and keep their lane
    ([E(1, "a", "running", orphan=True), E(2, "a"), E(3, "b")], 1, Plan(takeover=("r1",))),
    ([E(1, "a", "running", orphan=True), E(2, "a"), E(3, "b")], 3, Plan(takeover=("r1",), start=("r3",))),
    ([E(1, "a", "running"), E(2, "b", "running", orphan=True)], 1, Plan(takeover=("r2",))),
])
def test_plan(entries: list[Entry], slots: int, expected: Plan) -> None:
    assert plan(entries, slots) == expected


@pytest.mark.parametrize(("fresh", "state", "action"), [
    (True, None, "run"), (False, None, "run"), (False, "queued", "resume"), (False, "running", "resume"),
    (False, "passed", "finish"), (False, "budget_spent", "finish"), (False, "failed", "finish"),
    (True, "running", "run"),
])
def test_recovery_action(fresh: bool, state: str | None, action: str) -> None:
    assert recovery_action(fresh, state) == action


@pytest.mark.parametrize(("rc", "summary", "state", "stopping", "expected"), [
    (0, "passed", "passed", False, ("finish", "passed")),
    (0, "budget_spent", None, False, ("finish", "budget_spent")),
    (6, None, "failed", False, ("finish", "failed")),
    (1, None, "running", False, ("finish", "failed")),
    (0, None, None, False, ("finish", "unknown")),
    (-9, None, "running", False, ("retry", None)),
    (-15, None, "running", True, ("release", None)),
    (0, "passed", "passed", True, ("finish", "passed")),
])
def test_final_result(rc: int, summary: str | None, state: str | None, stopping: bool,
                      expected: tuple[str, str | None]) -> None:
    assert final_result(rc, summary, state, stopping) == expected


def test_is_orphan() -> None:
    now = 100.0
    assert not is_orphan("me", 0.0, "me", now, lambda o: False)
    assert is_orphan(None, None, "me", now, lambda o: True)
    assert is_orphan("other", 99.0, "me", now, lambda o: True)        # lease expired
    assert is_orphan("other", 200.0, "me", now, lambda o: False)      # same host, process gone
    assert not is_orphan("other", 200.0, "me", now, lambda o: True)   # alive, lease valid
    assert not is_orphan("other", 200.0, "me", now, lambda o: None)   # other host: wait for the lease


def claim(mode: str = "run", email: str | None = "a@b.c", url: str = "file:///r.git") -> Claim:
    return Claim(run_id="wh-1", repo_url=url, repo_name="r", ref="refs/heads/main", name="main", kind="branch",
                 commit="a" * 40, pusher_email=email, attempt=1, fresh=True, mode=mode)


def test_chain_argv() -> None:
    assert chain_argv(["mlchain"], claim()) == [
        "mlchain", "run", f"--ref={'a' * 40}", "--branch=main", "--run-id=wh-1", "--no-resume", "--json",
        "--pusher-email=a@b.c", "--", "file:///r.git"]
    assert chain_argv(["mlchain"], claim(email=None))[-2:] == ["--", "file:///r.git"]
    assert chain_argv(["mlchain"], claim("resume")) == ["mlchain", "resume", "--json", "--", "wh-1"]


def test_child_env_drops_the_secret_and_sets_home() -> None:
    env = child_env({"PATH": "/bin", "MLCHAIN_WEBHOOK_SECRET": "s", "MLCHAIN_HOME": "x"}, Path("/h"))
    assert env == {"PATH": "/bin", "MLCHAIN_HOME": "/h"}


# --- the store ----------------------------------------------------------------------------


def accepted(ref: str = "refs/heads/main", after: str = "a" * 40) -> Decision:
    payload = {"ref": ref, "after": after, "repository": {"clone_url": "https://example.com/r.git", "default_branch": "main"}}
    return decide_push(payload, Policy(branches=("*",)))


def test_record_push_deduplicates_across_reopen(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    first = wq.record_push("d1", accepted())
    assert first.outcome == "accepted" and first.run_id
    again = WebhookQueue(queue_path(tmp_path)).record_push("d1", accepted())
    assert (again.outcome, again.run_id) == ("duplicate", first.run_id)
    ignored = wq.record_push("d2", Decision("ignore", "deletion of refs/heads/x"))
    assert ignored.outcome == "ignored"
    assert wq.record_push("d2", Decision("ignore", "x")).outcome == "duplicate"
    assert wq.counts() == {"queued": 1}


def test_concurrent_deliveries_each_commit_once(tmp_path: Path) -> None:
    """Requests record in threads, each on its own connection: a delivery id seen twice at
    the same moment is still accepted once and answered "duplicate" once."""
    wq = WebhookQueue(queue_path(tmp_path))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda i: wq.record_push(f"d{i % 150}", accepted(after=f"{i + 1:040x}")),
                                range(300)))
    outcomes = [r.outcome for r in records]
    assert outcomes.count("accepted") == 150 and outcomes.count("duplicate") == 150
    by_delivery: dict[str, set[str | None]] = {}
    for i, r in enumerate(records):
        by_delivery.setdefault(f"d{i % 150}", set()).add(r.run_id)
    assert all(len(ids) == 1 for ids in by_delivery.values())  # the duplicate names the accepted run
    assert WebhookQueue(queue_path(tmp_path)).counts() == {"queued": 150}


def test_delivery_writer_commits_each_delivery_before_answering(tmp_path: Path) -> None:
    """The service's path: concurrent requests, one writer thread; every answer comes after
    its commit (a fresh connection sees it), and a delivery that cannot be stored fails
    alone (the next ones are recorded)."""
    wq = WebhookQueue(queue_path(tmp_path))
    writer = DeliveryWriter(wq.path)

    async def deliveries() -> list[Recorded]:
        async def one(i: int) -> Recorded:
            rec = await writer.record_push(f"d{i % 150}", accepted(after=f"{i + 1:040x}"))
            if rec.outcome == "accepted":
                assert WebhookQueue(queue_path(tmp_path)).entry(rec.run_id or "") is not None
            return rec
        return list(await asyncio.gather(*(one(i) for i in range(300))))

    async def unstorable_then_good() -> Recorded:
        with pytest.raises(UnicodeEncodeError):
            await writer.record_push("bad", accepted(ref="refs/heads/x\ud800"))
        return await writer.record_push("good", accepted(ref="refs/heads/y"))

    try:
        outcomes = [r.outcome for r in asyncio.run(deliveries())]
        assert asyncio.run(unstorable_then_good()).outcome == "accepted"
    finally:
        writer.close()
    assert outcomes.count("accepted") == 150 and outcomes.count("duplicate") == 150
    assert wq.counts() == {"queued": 151}


def test_claims_are_atomic_between_services(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    for i in range(40):
        wq.record_push(f"d{i}", accepted(ref=f"refs/heads/b{i}", after=f"{i + 1:040x}"))
    got: list[str] = []
    lock = threading.Lock()

    def claimer(me: str) -> None:
        while True:
            claims = WebhookQueue(queue_path(tmp_path)).claim(me, 3, alive=lambda o: True)
            if not claims:
                return
            with lock:
                got.extend(c.run_id for c, _ in claims)

    threads = [threading.Thread(target=claimer, args=(f"h:{n}:1",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40


def test_claim_supersedes_older_pushes_of_the_lane(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    ids = [wq.record_push(f"d{i}", accepted(after=f"{i + 1:040x}")).run_id for i in range(3)]
    claims = wq.claim("me", 2)
    assert [c.run_id for c, _ in claims] == [ids[2]]
    rows = {r["run_id"]: r for r in wq.entries()}
    assert [rows[i]["status"] for i in ids] == ["superseded", "superseded", "running"]
    assert rows[ids[0]]["superseded_by"] == ids[2]


def test_takeover_of_a_dead_owners_run(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    rid = wq.record_push("d", accepted()).run_id
    assert [c.fresh for c, _ in wq.claim("old", 1)] == [True]
    assert wq.claim("new", 1, alive=lambda o: True) == []          # lease valid, owner alive
    taken = wq.claim("new", 1, alive=lambda o: False)               # owner gone: take over at once
    assert [(c.run_id, c.fresh, c.attempt) for c, _ in taken] == [(rid, False, 2)]
    later = wq.claim("newer", 1, now=time.time() + 3600, alive=lambda o: None)  # lease expired
    assert [c.attempt for c, _ in later] == [3]


# --- the dispatcher with a fake executor -------------------------------------------------


class FakeExecutor:
    """Stands in for the chain: records what it was asked to run."""

    def __init__(self, results: Callable[[Claim], ExecResult] | None = None, delay: float = 0.05) -> None:
        self.calls: list[tuple[str, str]] = []
        self.results = results
        self.delay = delay
        self.lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0

    def __call__(self, c: Claim, on_start: Callable[[int], None]) -> ExecResult:
        with self.lock:
            self.calls.append((c.run_id, c.mode))
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        on_start(12345)
        time.sleep(self.delay)
        with self.lock:
            self.concurrent -= 1
        return self.results(c) if self.results else ExecResult(0, "passed")


def drain(wq: WebhookQueue, d: Dispatcher, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while wq.active_entries() and time.time() < deadline:
        d.wake()
        time.sleep(0.02)
    assert not wq.active_entries()


def test_dispatcher_runs_at_most_n_and_one_per_lane(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    for i in range(6):
        wq.record_push(f"d{i}", accepted(ref=f"refs/heads/b{i % 3}", after=f"{i + 1:040x}"))
    fake = FakeExecutor(delay=0.2)
    d = Dispatcher(wq, fake, 2, lambda rid: None, poll_s=0.02)
    d.start()
    try:
        drain(wq, d)
    finally:
        d.stop()
    counts = wq.counts()
    assert counts == {"finished": 3, "superseded": 3}
    assert fake.max_concurrent <= 2
    assert len(fake.calls) == 3 and {m for _, m in fake.calls} == {"run"}


def test_dispatcher_resumes_takes_over_and_closes_finished(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    ids = [wq.record_push(f"d{i}", accepted(ref=f"refs/heads/b{i}", after=f"{i + 1:040x}")).run_id for i in range(3)]
    wq.claim("dead", 3, alive=lambda o: True)
    states = {ids[0]: None, ids[1]: "running", ids[2]: "passed"}
    fake = FakeExecutor()
    d = Dispatcher(wq, fake, 3, states.get, poll_s=0.02)
    d.me = "me"  # the old owner "dead" is on no host we know: lease expiry is what frees it
    with wq.connect() as db:
        db.execute("UPDATE queue SET lease_until = 0")
    d.start()
    try:
        drain(wq, d)
    finally:
        d.stop()
    assert sorted(fake.calls) == sorted([(ids[0], "run"), (ids[1], "resume")])
    rows = {r["run_id"]: r for r in wq.entries()}
    assert rows[ids[2]]["status"] == "finished" and rows[ids[2]]["result"] == "passed"


def test_dispatcher_retries_a_chain_killed_by_a_signal_then_gives_up(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    rid = wq.record_push("d", accepted()).run_id
    fake = FakeExecutor(results=lambda c: ExecResult(-9), delay=0.01)
    d = Dispatcher(wq, fake, 1, lambda r: "running", poll_s=0.02)
    d.start()
    try:
        drain(wq, d)
    finally:
        d.stop()
    row = wq.entry(rid)
    assert row is not None and row["status"] == "finished" and row["result"] == "failed"
    assert "gave up" in row["error"]
    assert [m for _, m in fake.calls] == ["run", "resume", "resume"]


def test_dispatcher_survives_an_executor_that_raises(tmp_path: Path) -> None:
    wq = WebhookQueue(queue_path(tmp_path))
    rid = wq.record_push("d", accepted()).run_id

    def boom(c: Claim) -> ExecResult:
        raise RuntimeError("no such interpreter")

    d = Dispatcher(wq, FakeExecutor(results=boom, delay=0), 1, lambda r: None, poll_s=0.02)
    d.start()
    try:
        drain(wq, d)
    finally:
        d.stop()
    row = wq.entry(rid)
    assert row is not None and row["result"] == "failed" and "no such interpreter" in row["error"]
