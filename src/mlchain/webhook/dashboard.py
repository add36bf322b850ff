"""The dashboard: the Build Pipeline view's counterpart on one machine.

``GET /`` lists recent runs as six job boxes each; ``GET /runs/{id}`` shows a run's
console logs, trials and metric chart; ``/api/runs`` and ``/api/runs/{id}`` return the
same as JSON. Runs come from two places joined by run_id: the engine's StateStore
(what ran) and the webhook queue (what was pushed, including pushes not started yet
and pushes superseded by a newer one on the same branch).

The view model (job states, summaries, the SVG chart) is pure and tested without I/O.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from mlchain import contract
from mlchain.errors import NotFound
from mlchain.fileio import read_tail_bytes
from mlchain.gate import DEFAULT_DIRECTION, best_of, passes
from mlchain.state import TERMINAL_RUN_STATUSES, StateStore
from mlchain.webhook.queue import WebhookQueue

# The boxes of a run: (job name, role) in the chain's order, from jobs/ (``Chain.stages``).
Stages = Sequence[tuple[str, str]]
MONITOR_ROLE = "monitor"  # its box follows the monitor's events, not only its builds

# A build's result -> the box's state (and colour: see static/style.css).
BUILD_STATE = {"PENDING": "queued", "RUNNING": "running", "SUCCESS": "passed",
               "UNSTABLE": "unstable", "FAILURE": "failed", "ABORTED": "failed"}

# A job with no build yet: still to come while the run is active, skipped once it ended.
NO_BUILD_STATE = {"queued": "queued", "running": "queued", "superseded": "skipped"}

ACTIVE_STATUSES = ("queued", "running")
LOG_TAIL_BYTES = 256 * 1024  # a run page shows at most this much of each console log

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


# --- pure view model ------------------------------------------------------------------


def monitor_state(run_status: str, events: Sequence[dict[str, Any]], latest_build: dict[str, Any] | None) -> str:
    """The monitor's box: from its events (it restarts training while the others run)."""
    kinds = {e.get("kind") for e in events}
    if "give_up" in kinds:
        return "failed"
    if "restart" in kinds:
        return "unstable"
    if latest_build is not None:
        return BUILD_STATE.get(latest_build.get("result", ""), "queued")
    if run_status in ACTIVE_STATUSES:
        return "running" if run_status == "running" else "queued"
    return "passed" if run_status in TERMINAL_RUN_STATUSES else "skipped"


def job_states(run_status: str, builds: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]],
               stages: Stages) -> list[dict[str, Any]]:
    """The boxes of a run, one per job of the chain, each from the latest build of its job."""
    latest: dict[str, dict[str, Any]] = {}
    for b in builds:  # builds come in seq order: the last one of a job wins
        latest[b["job"]] = b
    boxes = []
    for job, role in stages:
        build = latest.get(job)
        if role == MONITOR_ROLE:
            state = monitor_state(run_status, events, build)
        elif build is not None:
            state = BUILD_STATE.get(build.get("result", ""), "queued")
        else:
            state = NO_BUILD_STATE.get(run_status, "skipped")
        runs = sum(1 for b in builds if b["job"] == job)
        boxes.append({"job": job, "title": role, "state": state,
                      "number": build.get("number") if build else None, "builds": runs})
    return boxes


def best_metric(trials: Sequence[dict[str, Any]], direction: str) -> float | None:
    best = best_of(trials, _metric_of, direction)
    return _metric_of(best) if best is not None else None


def _metric_of(trial: dict[str, Any]) -> float | None:
    metric = trial.get("metric")
    return float(metric) if isinstance(metric, (int, float)) else None


def met(metric: float | None, threshold: float | None, direction: str) -> bool | None:
    """None while there is nothing to compare; the comparison is the gate's."""
    if metric is None or threshold is None:
        return None
    return passes(metric, threshold, direction)


def run_item(run: dict[str, Any] | None, entry: dict[str, Any] | None, stages: Stages) -> dict[str, Any]:
    """One row of the dashboard (and of /api/runs): the engine's run joined with its queue row."""
    if run is None and entry is None:
        raise ValueError("a run item needs a run or a queue entry")
    queue = _queue_view(entry)
    if entry is not None and entry["status"] == "superseded":
        status = "superseded"
    elif run is not None:
        status = run["status"]
    else:
        assert entry is not None
        # running with no engine record yet: the chain process is starting
        status = entry["status"] if entry["status"] != "finished" else (entry.get("result") or "failed")
    config = (run or {}).get("config") or {}
    direction = config.get("direction", DEFAULT_DIRECTION)
    trials = (run or {}).get("trials") or []
    metric = best_metric(trials, direction)
    threshold = config.get("threshold")
    threshold = float(threshold) if isinstance(threshold, (int, float)) else None
    builds = (run or {}).get("builds") or []
    events = (run or {}).get("events") or []
    src = run or {}
    ent = entry or {}
    return {
        "run_id": src.get("run_id") or ent.get("run_id"),
        "repo_name": src.get("repo_name") or ent.get("repo_name"),
        "repo_url": src.get("repo_url") or ent.get("repo_url"),
        "ref": ent.get("ref") or src.get("ref"),
        "branch": ent.get("name") or src.get("branch") or src.get("ref"),
        "commit": src.get("commit_sha") or ent.get("commit_sha"),
        "pusher_email": src.get("pusher_email") or ent.get("pusher_email"),
        "status": status,
        "stop_reason": src.get("stop_reason"),
        "framework": src.get("framework"),
        "active": status in ACTIVE_STATUSES,
        "jobs": job_states(status, builds, events, stages),
        "trial": max((t["number"] for t in trials), default=None),
        "trials_count": len(trials),
        "metric": metric,
        "metric_name": config.get("metric", contract.DEFAULT_METRIC),
        "threshold": threshold,
        "direction": direction,
        "met": met(metric, threshold, direction),
        "created_at": src.get("created_at") or ent.get("enqueued_at"),
        "finished_at": src.get("finished_at") or ent.get("finished_at"),
        "queue": queue,
    }


def _queue_view(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    keys = ("delivery_id", "status", "result", "superseded_by", "attempts", "enqueued_at", "started_at",
            "finished_at", "exit_code", "error", "commit_sha", "ref")
    return {k: entry.get(k) for k in keys}


def merge_runs(runs: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]], stages: Stages,
               limit: int = 50) -> list[dict[str, Any]]:
    """Engine runs and queue rows joined by run_id, newest first."""
    by_id: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
    for r in runs:
        by_id[r["run_id"]] = (r, None)
    for e in entries:
        by_id[e["run_id"]] = (by_id.get(e["run_id"], (None, None))[0], e)
    items = [run_item(r, e, stages) for r, e in by_id.values()]
    items.sort(key=lambda i: i["created_at"] or 0.0, reverse=True)
    return items[:limit]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def metric_chart_svg(trials: Sequence[dict[str, Any]], threshold: float | None, metric_name: str,
                     direction: str = DEFAULT_DIRECTION, width: int = 640, height: int = 240) -> str:
    """The metric per trial as an inline SVG (server-side: no JavaScript library)."""
    points = [(int(t["number"]), float(t["metric"])) for t in trials
              if isinstance(t.get("metric"), (int, float)) and math.isfinite(float(t["metric"]))]
    name = html.escape(metric_name)
    if not points:
        return (f'<svg class="chart" role="img" aria-label="no {name} yet" width="{width}" height="60"'
                f' xmlns="http://www.w3.org/2000/svg"><text x="10" y="35">no {name} reported yet</text></svg>')
    ys = [y for _, y in points] + ([threshold] if threshold is not None else [])
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.1 or 0.05
    lo, hi = lo - pad, hi + pad
    xs = [x for x, _ in points]
    x0, x1 = min(xs), max(xs)
    left, right, top, bottom = 56, 16, 16, 32
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (pw / 2 if x1 == x0 else (x - x0) / (x1 - x0) * pw)

    def sy(y: float) -> float:
        return top + (hi - y) / (hi - lo) * ph

    parts = [(f'<svg class="chart" role="img" aria-label="{name} per trial" width="{width}" height="{height}"'
              f' viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'),
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>']
    for i in range(5):  # y grid and labels
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" class="tick">{_fmt(v)}</text>')
    for x in sorted(set(xs)):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 10}" text-anchor="middle" class="tick">{x}</text>')
    if threshold is not None:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(threshold):.1f}" y2="{sy(threshold):.1f}"'
                     f' class="threshold"/><text x="{left + pw - 4}" y="{sy(threshold) - 5:.1f}"'
                     f' text-anchor="end" class="threshold-label">threshold {_fmt(threshold)}</text>')
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    parts.append(f'<polyline points="{path}" class="line"/>')
    for x, y in points:
        ok = threshold is None or passes(y, threshold, direction)
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" class="{"pt-ok" if ok else "pt-low"}">'
                     f'<title>trial {x}: {name} {_fmt(y)}</title></circle>')
    parts.append(f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})"'
                 f' text-anchor="middle" class="axis">{name}</text></svg>')
    return "".join(parts)


def read_tail(path: str | None, limit: int = LOG_TAIL_BYTES) -> str | None:
    """The end of a console log (None when there is none); a cut start is marked."""
    read = read_tail_bytes(path, limit) if path else None
    if read is None:
        return None
    data, size = read
    text = data.decode("utf-8", "replace")
    return text if size <= limit else f"[... {size - limit} bytes before ...]\n{text}"


# --- I/O: reading the two stores ----------------------------------------------------------


class DashboardData:
    def __init__(self, store: StateStore, wq: WebhookQueue, logs_dir: Path, stages: Stages) -> None:
        self.stages = tuple(stages)
        self.store = store
        self.wq = wq
        self.logs_dir = logs_dir

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        entries = self.wq.entries(limit)
        runs = {r.run_id: r for r in self.store.list_runs(limit)}
        for e in entries:  # the engine rows of queued entries that fell out of its window
            if e["run_id"] not in runs:
                try:
                    runs[e["run_id"]] = self.store.get_run(e["run_id"])
                except NotFound:
                    pass
        views = []
        for r in runs.values():
            views.append({**r.to_dict(), "builds": [b.to_dict() for b in self.store.builds(r.run_id)],
                          "trials": [t.to_dict() for t in self.store.trials(r.run_id)],
                          "events": [e.to_dict() for e in self.store.events(r.run_id)]})
        return merge_runs(views, entries, self.stages, limit)

    def run(self, run_id: str) -> dict[str, Any]:
        entry = self.wq.entry(run_id)
        try:
            run: dict[str, Any] | None = self.store.run_view(run_id)
        except NotFound:
            run = None
        if run is None and entry is None:
            raise HTTPException(status_code=404, detail=f"no run {run_id!r}")
        item = run_item(run, entry, self.stages)
        item["trials"] = (run or {}).get("trials") or []
        item["events"] = (run or {}).get("events") or []
        item["builds"] = [{**b, "state": BUILD_STATE.get(b.get("result", ""), "queued"),
                           "log": read_tail(b.get("log_path"))} for b in (run or {}).get("builds") or []]
        item["service_log"] = read_tail(str(self.logs_dir / f"{run_id}.log"), 64 * 1024)
        return item


# --- routes -----------------------------------------------------------------------------

router = APIRouter()
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _data(request: Request) -> DashboardData:
    data: DashboardData = request.app.state.dashboard
    return data


def _render(name: str, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**ctx))


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    runs = _data(request).runs()
    return _render("index.html", runs=runs, refresh=any(r["active"] for r in runs))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    run = _data(request).run(run_id)
    # metric_chart_svg escapes the only text it takes (the metric name); the rest are numbers
    chart = Markup(metric_chart_svg(run["trials"], run["threshold"], run["metric_name"], run["direction"]))
    return _render("run.html", run=run, chart=chart, refresh=run["active"])


@router.get("/api/runs")
def api_runs(request: Request, limit: int = 50) -> dict[str, Any]:
    data = _data(request)
    return {"runs": data.runs(max(1, min(limit, 500))), "queue": data.wq.counts()}


@router.get("/api/runs/{run_id}")
def api_run(request: Request, run_id: str) -> dict[str, Any]:
    return _data(request).run(run_id)
