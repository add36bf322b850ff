"""Build the run email: subject, text and HTML parts (jinja2), the plot inline.

Only the summary and two settings (From, and nothing else) reach the message:
no other setting is read here, so no secret can leak into an email.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from mlchain.fileio import last_lines
from mlchain.gate import comparison, format_threshold, passes

if TYPE_CHECKING:
    from mlchain.config import Settings
    from mlchain.summary import RunSummary, TrialRecord

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
RUN_HEADER = "X-Mlchain-Run"
STATUS_HEADER = "X-Mlchain-Status"
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 6000
PARAMS_TEXT_WIDTH = 70

# How the email is serialised, by SMTP and into the outbox alike. CRLF line ends; 7-bit
# bodies (quoted-printable or base64 when needed) for servers without 8BITMIME; and headers
# folded only past RFC 5322's hard limit, because Python folds a subject of 70-odd characters
# onto its own continuation line, which its own parser then reads back with a leading space.
MAIL_POLICY = policy.SMTP.clone(cte_type="7bit", max_line_length=998)

STATUS_LABEL = {"passed": "PASSED", "budget_spent": "FAILED", "failed": "FAILED"}
STATUS_TITLE = {
    "passed": "the gate passed",
    "budget_spent": "the gate was not reached and the budget is spent",
    "failed": "the chain failed",
}
# Banner colours (background, text) per status.
STATUS_COLOURS = {"passed": ("#e6f4ea", "#1e6b3a"), "budget_spent": ("#fff4e0", "#8a5300"),
                  "failed": ("#fdecea", "#a12622")}
# user:password@ inside a URI (a PostgreSQL tracking store, say) must not reach an email.
URI_PASSWORD = re.compile(r"(://[^/:@\s]+):[^@/\s]+@")
# A clone URL may carry a token as its user part (https://TOKEN@host/...): drop it whole.
URI_USERINFO = re.compile(r"(://)[^/@\s]+@")


@dataclass(frozen=True)
class TrialRow:
    """One trial as the templates show it: every value already formatted."""

    number: int
    status: str
    failed: bool
    metric: str
    meets_gate: bool
    restarts: int
    duration: str
    params: str
    params_short: str
    run_id: str | None
    run_url: str | None
    is_best: bool


def build_message(summary: RunSummary, settings: Settings) -> EmailMessage:
    """The run email: multipart/alternative (text, related(HTML, plot PNG)), headers set.

    With no recipients the message has no To header; send_message then keeps it in
    the outbox and says why, so the caller never has to special-case it here.
    """
    context = message_context(summary)
    plot = _plot_or_none(summary)
    plot_cid = make_msgid(domain=_domain(settings.mail_from))
    context["plot_cid"] = plot_cid[1:-1] if plot is not None else None
    text = _env().get_template("email.txt.j2").render(context)
    html = _env().get_template("email.html.j2").render(context)

    msg = EmailMessage(policy=MAIL_POLICY)
    msg["Subject"] = subject_line(summary)
    msg["From"] = settings.mail_from
    if summary.recipients:
        msg["To"] = ", ".join(summary.recipients)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=_domain(settings.mail_from))
    msg[RUN_HEADER] = _one_line(summary.run_id)
    msg[STATUS_HEADER] = _one_line(summary.status)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    if plot is not None:
        html_part = msg.get_body(("html",))
        assert isinstance(html_part, EmailMessage)  # we just added it
        html_part.add_related(plot, "image", "png", cid=plot_cid, filename=_plot_filename(summary),
                              disposition="inline")
    return msg


def subject_line(summary: RunSummary) -> str:
    """`[mlchain] PASSED repo@ref: accuracy 0.9712 >= 0.80 (trial 3 of 3)` or the FAILED form."""
    where = f"{summary.repo_name}@{short_ref(summary.branch or summary.ref)}"
    label = STATUS_LABEL.get(summary.status, summary.status.upper())
    best = summary.best
    count = len(summary.trials)
    threshold = format_threshold(summary.threshold)
    if summary.passed and best is not None and best.metric is not None:
        return _one_line(f"[mlchain] {label} {where}: {summary.metric_name} {fmt_metric(best.metric)}"
                         f" {comparison(summary.direction, passed=True)} {threshold} (trial {best.number} of {count})")
    if best is not None and best.metric is not None:
        reached = f"best {fmt_metric(best.metric)} {comparison(summary.direction, passed=False)} {threshold}"
    else:
        reached = f"no {summary.metric_name} reached"
    reason = _short_reason(summary)
    tail = f" ({reason})" if reason else ""
    return _one_line(f"[mlchain] {label} {where}: {reached} after {count} trial{'s' * (count != 1)}{tail}")


def message_context(summary: RunSummary) -> dict[str, Any]:
    """Everything the templates show, formatted once so text and HTML agree."""
    best = summary.best
    ui = summary.mlflow_ui_url.rstrip("/") if summary.mlflow_ui_url else None
    reg = summary.registered
    background, foreground = STATUS_COLOURS.get(summary.status, ("#eeeeee", "#333333"))
    return {
        "s": summary,
        "label": STATUS_LABEL.get(summary.status, summary.status.upper()),
        "title": STATUS_TITLE.get(summary.status, summary.status),
        "headline": headline(summary),
        "banner_bg": background,
        "banner_fg": foreground,
        "ref": short_ref(summary.branch or summary.ref),
        # Only web addresses become links: a local path or an odd scheme stays plain text.
        "repo_url": strip_userinfo(summary.repo_url),
        "repo_link": strip_userinfo(summary.repo_url) if re.match(r"https?://", summary.repo_url) else None,
        "commit": (summary.commit or "")[:12] or None,
        "threshold": format_threshold(summary.threshold),
        "op_pass": comparison(summary.direction, passed=True),
        "best": best,
        "best_metric": fmt_metric(best.metric) if best is not None else None,
        "best_params": [(k, fmt_value(v)) for k, v in sorted(best.params.items())] if best else [],
        "best_run_url": _run_url(ui, best.mlflow_run_id) if best else None,
        "best_changes": best.code_changes if best else [],
        "best_diff": best.code_diff.rstrip("\n") if best else "",
        "rows": [_row(t, summary, ui) for t in summary.trials],
        "registered": reg,
        "registered_url": _model_url(ui, reg),
        "previous_champion": fmt_metric(reg.get("previous_champion_metric")) if reg else None,
        "restarts": [e for e in summary.events if e.kind in ("restart", "give_up")],
        "log_tail": None if summary.passed else log_tail(summary.failure_log_tail),
        "error_message": (summary.error or {}).get("message"),
        "hint": summary.hint,
        "notes": summary.notes,
        "reason": summary.reason,
        "dataset": Path(summary.dataset).name if summary.dataset else None,
        "search_notes": summary.search_notes,
        "run_ids": summary.mlflow_run_ids,
        "ui_url": ui,
        "ui_command": redact_uri(summary.mlflow_ui_command()),
        "tracking_uri": redact_uri(summary.tracking_uri),
    }


def headline(summary: RunSummary) -> str:
    """One sentence: what was reached against what was asked, and why the loop stopped."""
    best = summary.best
    threshold = format_threshold(summary.threshold)
    count = len(summary.trials)
    trials = f"{count} trial{'s' * (count != 1)}"
    if best is None or best.metric is None:
        reached = f"No trial produced {summary.metric_name} ({trials} run)."
    elif summary.passed:
        reached = (f"Trial {best.number} reached {summary.metric_name} {fmt_metric(best.metric)}"
                   f" {comparison(summary.direction, passed=True)} {threshold} after {trials}.")
    else:
        reached = (f"The best {summary.metric_name} was {fmt_metric(best.metric)} (trial {best.number})"
                   f" {comparison(summary.direction, passed=False)} {threshold}, after {trials}.")
    why = f" The loop stopped: {summary.stop_reason}." if summary.stop_reason else ""
    where = f" Failed job: {summary.failed_job}." if summary.failed_job else ""
    return reached + why + where


# Formatting ------------------------------------------------------------------

def fmt_metric(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}"
    return "–"


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(params.items()))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def short_ref(ref: str | None) -> str:
    if not ref:
        return "HEAD"
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix)
    return ref


def log_tail(log_text: str | None) -> str | None:
    """The last lines of a failing log: enough to see the error, short enough for an email."""
    if not log_text:
        return None
    tail = "\n".join(last_lines(log_text.rstrip(), LOG_TAIL_LINES))
    return tail[-LOG_TAIL_CHARS:]


def redact_uri(text: str) -> str:
    return URI_PASSWORD.sub(r"\1:***@", text)


def strip_userinfo(url: str) -> str:
    return URI_USERINFO.sub(r"\1", url)


# Helpers ---------------------------------------------------------------------

def _short_reason(summary: RunSummary) -> str | None:
    """'max_trials reached (6)' -> 'max_trials reached': the subject already says how many."""
    if summary.stop_reason:
        return re.sub(r"\s*\(\d+\)$", "", summary.stop_reason)
    if summary.failed_job:
        return f"{summary.failed_job} failed"
    return None


def _row(trial: TrialRecord, summary: RunSummary, ui: str | None) -> TrialRow:
    status = trial.status_text
    params = fmt_params(trial.params)
    short = params if len(params) <= PARAMS_TEXT_WIDTH else params[:PARAMS_TEXT_WIDTH - 3] + "..."
    return TrialRow(
        number=trial.number, status=status, failed=trial.status == "failed" or bool(trial.failure_kind),
        metric=fmt_metric(trial.metric), meets_gate=passes(trial.metric, summary.threshold, summary.direction), restarts=trial.restarts,
        duration=fmt_duration(trial.duration_s), params=params, params_short=short,
        run_id=trial.mlflow_run_id, run_url=_run_url(ui, trial.mlflow_run_id),
        is_best=summary.best is not None and trial.number == summary.best.number,
    )


def _run_url(ui: str | None, run_id: str | None) -> str | None:
    # MLflow's UI resolves the experiment itself from this direct route.
    return f"{ui}/#/runs/{run_id}" if ui and run_id else None


def _model_url(ui: str | None, registered: dict[str, Any] | None) -> str | None:
    if not ui or not registered or not registered.get("name"):
        return None
    from urllib.parse import quote

    url = f"{ui}/#/models/{quote(str(registered['name']), safe='')}"
    return f"{url}/versions/{registered['version']}" if registered.get("version") is not None else url


def _plot_or_none(summary: RunSummary) -> bytes | None:
    """The plot is a nicety: if it cannot be drawn the email still goes, without it."""
    from mlchain.notify.plot import render_plot

    try:
        return render_plot(summary)
    except Exception:  # matplotlib raising on odd data must not cost the run its email
        log.warning("could not draw the run plot; sending the email without it", exc_info=True)
        return None


def _plot_filename(summary: RunSummary) -> str:
    name = f"{summary.repo_name}-{summary.run_id[:12]}" if summary.run_id else summary.repo_name
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "run") + ".png"


def _domain(address: str) -> str:
    _, addr = parseaddr(address)
    domain = addr.rpartition("@")[2]
    # Without a domain make_msgid would ask DNS for our FQDN, which can hang for seconds.
    return domain if domain and re.fullmatch(r"[A-Za-z0-9.-]+", domain) else "mlchain.localdomain"


def _one_line(text: str) -> str:
    """Header values must not carry line breaks (they could inject headers)."""
    return " ".join(text.split())


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
