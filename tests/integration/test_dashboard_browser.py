"""The dashboard in headless Chromium, during and after a run: the job boxes' states are read
from the rendered DOM (data-job / data-state) and screenshots are kept under test-artifacts/."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from strictness import require
from test_webhook_helpers import Service, push_payload

from mlchain.state import StateStore

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    # A fixture, not a check at import: a failure there would abort the whole collection.
    require(None if Path(CHROMIUM).exists() else "chromium is not installed (apt-get install chromium)")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,900", *args],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dom(url: str) -> str:
    out = chromium("--dump-dom", url)
    assert out.returncode == 0 and "<html" in out.stdout, out.stderr[-2000:]
    return out.stdout


def screenshot(url: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    out = chromium(f"--screenshot={path}", url)
    assert out.returncode == 0 and path.is_file() and path.stat().st_size > 5000, out.stderr[-2000:]
    return path


def boxes(html: str, run_id: str) -> dict[str, str]:
    section = html.split(f'data-run="{run_id}"', 1)[1].split("</section>", 1)[0]
    return dict(re.findall(r'<div class="job state-[a-z]+" data-job="([a-z0-9-]+)" data-state="([a-z]+)"', section))


@pytest.fixture
def populated(tmp_path: Path) -> Iterator[tuple[Service, StateStore, Path]]:
    home = tmp_path / "home"
    store = StateStore(home / "state.db")
    svc = Service(home, workers=0)
    yield svc, store, home
    svc.stop()


def test_dashboard_during_and_after_a_run(populated: tuple[Service, StateStore, Path]) -> None:
    svc, store, home = populated
    logs = home / "logs"
    logs.mkdir()
    rid = "run-browser-1"
    store.create_run(rid, "file:///srv/digits.git", "digits", "main", "dev@example.com", status="running")
    store.update_run(rid, config={"threshold": 0.8, "metric": "accuracy"}, commit_sha="ab" * 20,
                     framework="sklearn")
    for job, result in (("job1-pull", "SUCCESS"), ("job2-classify", "SUCCESS"), ("job3-train", "SUCCESS"),
                        ("job4-gate", "UNSTABLE"), ("job2-classify", "SUCCESS"), ("job3-train", "RUNNING")):
        seq = store.add_build(rid, job, {}, result=result)
        log = logs / f"{job}-{seq}.log"
        log.write_text(f"console of {job} <script>alert('x')</script>\n")
        store.update_build(rid, seq, log_path=str(log), started_at=time.time())
    store.upsert_trial(rid, 1, {"n_estimators": 50}, status="succeeded", metric=0.71)
    store.upsert_trial(rid, 2, {"n_estimators": 200}, status="running")
    store.add_event(rid, "restart", "trial 2 was killed; restarted from its checkpoint", trial=2)
    store.create_run("run-browser-0", "file:///srv/other.git", "other", "main", None, status="failed")
    store.add_build("run-browser-0", "job1-pull", {}, result="FAILURE")
    queued = svc.deliver("push", push_payload(name="queued-repo")).json()["run_id"]

    html = dom(svc.url + "/")
    assert boxes(html, rid) == {"job1-pull": "passed", "job2-classify": "passed", "job3-train": "running",
                                "job4-gate": "unstable", "job5-notify": "queued", "job6-monitor": "unstable"}
    assert boxes(html, "run-browser-0") == {"job1-pull": "failed", "job2-classify": "skipped",
                                            "job3-train": "skipped", "job4-gate": "skipped",
                                            "job5-notify": "skipped", "job6-monitor": "passed"}
    assert set(boxes(html, queued).values()) == {"queued"}  # a push not started yet is listed too
    assert 'http-equiv="refresh"' in html
    screenshot(svc.url + "/", "dashboard-during.png")

    page = dom(f"{svc.url}/runs/{rid}")
    assert "<svg" in page and 'class="threshold"' in page
    assert "&lt;script&gt;alert" in page and "<script>alert" not in page  # logs are escaped
    assert 'data-trial="2"' in page
    screenshot(f"{svc.url}/runs/{rid}", "run-during.png")

    # the run ends: gate passes on trial 2, notify and monitor done
    store.update_build(rid, 6, result="SUCCESS")
    for job in ("job4-gate", "job5-notify"):
        seq = store.add_build(rid, job, {}, result="SUCCESS")
        store.update_build(rid, seq, log_path=str(logs / "job1-pull-1.log"))
    store.update_trial(rid, 2, status="succeeded", metric=0.91)
    store.update_run(rid, status="passed", finished_at=time.time())

    html = dom(svc.url + "/")
    assert boxes(html, rid) == {"job1-pull": "passed", "job2-classify": "passed", "job3-train": "passed",
                                "job4-gate": "passed", "job5-notify": "passed", "job6-monitor": "unstable"}
    section = html.split(f'data-run="{rid}"', 1)[1].split("</section>", 1)[0]
    assert 'data-status="passed"' in html and 'data-metric="0.9100"' in section and "trial 2" in section
    screenshot(svc.url + "/", "dashboard-after.png")
    screenshot(f"{svc.url}/runs/{rid}", "run-after.png")
