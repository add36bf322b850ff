"""job5's email: build it from the run summary, send it by SMTP or keep it in the outbox.

    delivery = send_run_email(summary, settings)
    delivery.summary   # one line for the run summary
    delivery.delivered # False when SMTP failed or nobody was named: the .eml is in the outbox
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlchain.notify.build import build_message, subject_line
from mlchain.notify.send import Delivery, flush_outbox, send_message, send_once

if TYPE_CHECKING:
    from mlchain.config import Settings
    from mlchain.summary import RunSummary

__all__ = ["Delivery", "build_message", "flush_outbox", "send_message", "send_once", "send_run_email",
           "subject_line"]


def send_run_email(summary: RunSummary, settings: Settings, once: bool = False) -> Delivery:
    """Build the run's email and send it (or keep it in the outbox, saying why); ``once``: at
    most once per run, across a kill of the sending job (job5)."""
    msg = build_message(summary, settings)
    return send_once(msg, settings, key=summary.run_id) if once else send_message(msg, settings)
