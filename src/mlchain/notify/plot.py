"""The picture in the run email: metric per trial, and the best trial's learning curves."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mlchain.summary import RunSummary, TrialRecord

# Keys of a progress line that are bookkeeping, not curves.
NOT_CURVES = frozenset({"epoch", "epochs", "step", "steps", "time", "timestamp", "ts", "elapsed_s",
                        "trial", "batch", "batches"})

BAR = "#9db4cf"
BEST = "#1f7a4d"
BEST_SHORT = "#e08e0b"  # the best trial of a run that did not pass: highlighted, but not in green
FAILED = "#c0392b"
THRESHOLD = "#d35400"
CURVES = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def render_plot(summary: RunSummary) -> bytes:
    """Two panels side by side, returned as PNG bytes.

    Uses matplotlib's object API on an Agg canvas rather than pyplot: no global
    figure registry to leak, no display needed, safe in a worker thread.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless even if pyplot gets imported later in this process
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.25]})
    # Fixed margins: constrained layout would cost half of the render time.
    fig.subplots_adjust(left=0.065, right=0.935, bottom=0.13, top=0.91, wspace=0.3)
    _trials_panel(left, summary)
    _curves_panel(right, summary)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _trials_panel(ax: Axes, summary: RunSummary) -> None:
    ax.set_title(f"{summary.metric_name} per trial")
    ax.set_xlabel("trial")
    ax.set_ylabel(summary.metric_name)
    trials = summary.trials
    if not trials:
        _empty(ax, "no trials ran")
        return
    best = summary.best.number if summary.best is not None else None
    xs = list(range(len(trials)))
    heights = [float(t.metric) if t.metric is not None and _finite(t.metric) else 0.0 for t in trials]
    highlight = BEST if summary.passed else BEST_SHORT
    colors = [highlight if t.number == best else BAR for t in trials]
    ax.bar(xs, heights, color=colors, width=0.6, zorder=2)
    ax.set_xticks(xs, [str(t.number) for t in trials])
    for x, t in zip(xs, trials, strict=True):
        if t.metric is not None and _finite(t.metric):
            ax.annotate(f"{t.metric:.3f}", (x, t.metric), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
        else:
            # A crashed trial has no bar; say why instead of leaving a silent gap.
            label = t.failure_kind or t.status
            ax.annotate(label, (x, 0.0), ha="center", va="bottom", fontsize=8, color=FAILED,
                        rotation=90, xytext=(0, 4), textcoords="offset points")
    ax.axhline(summary.threshold, color=THRESHOLD, linestyle="--", linewidth=1.2, zorder=3)
    # Labelled on the line itself: a legend box would sit on top of some bar.
    ax.annotate(f"threshold {summary.threshold:g}", (1.0, summary.threshold), xycoords=("axes fraction", "data"),
                ha="right", va="bottom", fontsize=8, color=THRESHOLD, xytext=(-2, 2), textcoords="offset points",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}, zorder=4)
    top = max([*heights, summary.threshold])
    if 0.0 <= min(heights) and top <= 1.0:
        ax.set_ylim(0.0, 1.08)  # a [0, 1] metric reads best on its full scale
    ax.grid(axis="y", alpha=0.3, zorder=0)


def _curve_keys(history: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in history:
        for key, value in row.items():
            if key not in NOT_CURVES and key not in keys and _finite(value):
                keys.append(key)
    return keys


def _curves_panel(ax: Axes, summary: RunSummary) -> None:
    best: TrialRecord | None = summary.best
    if best is None:
        ax.set_title("learning curves")
        _empty(ax, "no trial produced a metric")
        return
    ax.set_title(f"learning curves of trial {best.number} (best)")
    history = best.history
    keys = _curve_keys(history)
    if not keys:
        _empty(ax, "no per-epoch history\n(the model trained in one step,\nor reported no progress)")
        return
    ax.set_xlabel("epoch")
    # Losses and scores live on different scales: scores left, losses on a twin axis right.
    scores = [k for k in keys if "loss" not in k]
    losses = [k for k in keys if "loss" in k]
    handles = []
    loss_ax = ax.twinx() if scores and losses else ax
    # Explicit colours: the twin axis would otherwise restart the colour cycle.
    for i, key in enumerate(scores + losses):
        target, style = (ax, "-") if key in scores else (loss_ax, "--")
        handles += _plot_curve(target, history, key, style, CURVES[i % len(CURVES)])
    ax.set_ylabel(", ".join(scores) if scores else "loss")
    if loss_ax is not ax:
        loss_ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="center right", fontsize=8)


def _plot_curve(ax: Axes, history: list[dict[str, Any]], key: str, style: str, color: str) -> list[Any]:
    points = [(row.get("epoch", i + 1), row[key]) for i, row in enumerate(history) if _finite(row.get(key))]
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return list(ax.plot(xs, ys, style, color=color, marker="o", markersize=3, label=key))


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])
