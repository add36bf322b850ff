from __future__ import annotations

import re
from typing import Any

import pytest

from mlchain.engine.jjb import load_chain
from mlchain.jobdefs import default_jobs_dir
from mlchain.webhook.dashboard import (
    best_metric,
    job_states,
    merge_runs,
    metric_chart_svg,
    monitor_state,
    read_tail,
    run_item,
)

# The boxes of the chain jobs/ defines (what `mlchain serve` shows).
STAGES = load_chain(default_jobs_dir()).stages()


def b(job: str, result: str, number: int = 1) -> dict[str, Any]:
    return {"job": job, "result": result, "number": number}


def states(run_status: str, builds: list[dict[str, Any]], events: list[dict[str, Any]] | None = None) -> list[str]:
    return [box["state"] for box in job_states(run_status, builds, events or [], STAGES)]


def test_boxes_follow_the_latest_build_of_each_job() -> None:
    builds = [b("job1-pull", "SUCCESS"), b("job2-classify", "SUCCESS"), b("job3-train", "SUCCESS"),
              b("job4-gate", "UNSTABLE"), b("job2-classify", "SUCCESS", 2), b("job3-train", "RUNNING", 2)]
    assert states("running", builds) == ["passed", "passed", "running", "unstable", "queued", "running"]
    boxes = job_states("running", builds, [], STAGES)
    assert [(x["job"], x["builds"], x["number"]) for x in boxes][:3] == [
        ("job1-pull", 1, 1), ("job2-classify", 2, 2), ("job3-train", 2, 2)]


@pytest.mark.parametrize(("result", "state"), [
    ("PENDING", "queued"), ("RUNNING", "running"), ("SUCCESS", "passed"), ("UNSTABLE", "unstable"),
    ("FAILURE", "failed"),
])
def test_each_build_result_has_its_state(result: str, state: str) -> None:
    assert states("running", [b("job1-pull", result)])[0] == state


def test_jobs_never_built() -> None:
    assert states("queued", []) == ["queued"] * 6
    assert states("failed", [b("job1-pull", "FAILURE")]) == ["failed"] + ["skipped"] * 4 + ["passed"]
    assert states("superseded", []) == ["skipped"] * 6


def test_monitor_box_from_events() -> None:
    assert monitor_state("running", [], None) == "running"
    assert monitor_state("running", [{"kind": "restart"}], None) == "unstable"
    assert monitor_state("passed", [{"kind": "restart"}, {"kind": "give_up"}], None) == "failed"
    assert monitor_state("passed", [{"kind": "job"}], None) == "passed"
    assert monitor_state("passed", [], b("job6-monitor", "FAILURE")) == "failed"


def run(**over: Any) -> dict[str, Any]:
    base = {"run_id": "r1", "repo_name": "digits", "repo_url": "file:///d.git", "ref": "main", "status": "running",
            "commit_sha": "c" * 40, "config": {"threshold": 0.8, "metric": "accuracy"}, "created_at": 10.0,
            "trials": [{"number": 1, "metric": 0.7}, {"number": 2, "metric": 0.85}], "builds": [], "events": []}
    base.update(over)
    return base


def test_run_item_summary_and_queue_join() -> None:
    item = run_item(run(), {"run_id": "r1", "status": "running", "name": "main", "enqueued_at": 9.0,
                            "delivery_id": "d", "superseded_by": None}, STAGES)
    assert (item["trial"], item["metric"], item["threshold"], item["met"], item["branch"]) == (2, 0.85, 0.8, True, "main")
    assert item["active"] and item["queue"]["delivery_id"] == "d"
    low = run_item(run(trials=[{"number": 1, "metric": 0.5}]), None, STAGES)
    assert low["met"] is False
    superseded = run_item(None, {"run_id": "r0", "status": "superseded", "superseded_by": "r1", "enqueued_at": 1.0,
                                 "repo_name": "digits", "name": "main"}, STAGES)
    assert superseded["status"] == "superseded" and not superseded["active"]
    with pytest.raises(ValueError):
        run_item(None, None, STAGES)


def test_merge_runs_newest_first_including_queue_only_entries() -> None:
    merged = merge_runs([run(run_id="a", created_at=1.0)],
                        [{"run_id": "b", "status": "queued", "enqueued_at": 2.0},
                         {"run_id": "a", "status": "running", "enqueued_at": 0.5}], STAGES)
    assert [(m["run_id"], m["status"]) for m in merged] == [("b", "queued"), ("a", "running")]


def test_chart_is_an_svg_with_points_threshold_and_escaped_name() -> None:
    svg = metric_chart_svg([{"number": 1, "metric": 0.7}, {"number": 2, "metric": 0.9},
                            {"number": 3, "metric": None}], 0.8, "<acc>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 2 and 'class="threshold"' in svg
    assert "<acc>" not in svg and "&lt;acc&gt;" in svg
    assert "no accuracy" in metric_chart_svg([], 0.8, "accuracy")
    one = metric_chart_svg([{"number": 1, "metric": 0.8}], None, "accuracy")
    assert one.count("<circle") == 1


def test_chart_colours_each_point_by_the_gate_in_the_metrics_direction() -> None:
    trials = [{"number": 1, "metric": 0.30}, {"number": 2, "metric": 0.10}]
    low_is_good = metric_chart_svg(trials, 0.2, "rmse", "minimize")
    assert re.findall(r'class="(pt-ok|pt-low)"', low_is_good) == ["pt-low", "pt-ok"]
    high_is_good = metric_chart_svg(trials, 0.2, "accuracy")
    assert re.findall(r'class="(pt-ok|pt-low)"', high_is_good) == ["pt-ok", "pt-low"]


def test_the_best_metric_follows_the_direction() -> None:
    trials: list[dict[str, Any]] = [{"metric": 0.3}, {"metric": None}, {"metric": 0.1}, {}]
    assert best_metric(trials, "maximize") == 0.3
    assert best_metric(trials, "minimize") == 0.1
    assert best_metric([{"metric": None}], "maximize") is None


def test_read_tail(tmp_path: Any) -> None:
    p = tmp_path / "log"
    p.write_text("x" * 100 + "END")
    assert read_tail(str(p)) == "x" * 100 + "END"
    assert read_tail(str(p), limit=10).endswith("xxxxxxxEND") and "bytes before" in (read_tail(str(p), 10) or "")
    assert read_tail(str(tmp_path / "missing")) is None and read_tail(None) is None


def test_boxes_are_the_chains_jobs_titled_by_role() -> None:
    boxes = job_states("running", [], [], STAGES)
    assert [(x["job"], x["title"]) for x in boxes] == [
        ("job1-pull", "pull"), ("job2-classify", "classify"), ("job3-train", "train"), ("job4-gate", "gate"),
        ("job5-notify", "notify"), ("job6-monitor", "monitor")]
    renamed = job_states("running", [b("watch", "FAILURE")], [{"kind": "restart"}],
                         [("fetch", "pull"), ("watch", "monitor")])
    assert [(x["job"], x["title"], x["state"]) for x in renamed] == [("fetch", "pull", "queued"),
                                                                       ("watch", "monitor", "unstable")]
