"""Send a built email by SMTP, or keep it in the outbox: no email is ever dropped.

With no SMTP host configured the outbox *is* the destination (delivered=True).
When SMTP is configured but fails, or there is nobody to send to, the message is
written to the outbox and the Delivery says why (delivered=False); flush_outbox
retries those files once SMTP answers again.

A kill can land between a send and its record. ``send_once`` records the intent, with
the Message-ID, in a journal before anything leaves, marks the moment before the message's
end mark goes out (until then the server accepts nothing), and records the outcome: a
resumed job finds the outcome (nothing sent again), an intent that never got that far (sent
now, with the same Message-ID), or an email that was in flight (it may have arrived: not
sent again, a copy kept in ``outbox/held/`` and the summary says so). A retry from the outbox moves its file
to ``held/`` for the same moment, so an interrupted retry is not sent twice either.
"""

from __future__ import annotations

import copy
import json
import re
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from mlchain.errors import DeliveryError
from mlchain.fileio import atomic_write
from mlchain.notify.build import MAIL_POLICY, RUN_HEADER

if TYPE_CHECKING:
    from mlchain.config import Settings

NO_RECIPIENTS = "no recipients: set notify.recipients in mlchain.yaml or push with an email"
NO_SMTP = "no SMTP configured"
# Headers only the outbox copy carries: why it is there, and whom it still has to reach.
REASON_HEADER = "X-Mlchain-Outbox-Reason"
PENDING_HEADER = "X-Mlchain-Pending-To"
OUTBOX_HEADERS = (REASON_HEADER, PENDING_HEADER)
SENT_DIR = "sent"
HELD_DIR = "held"        # emails that were in flight when a job was killed: never re-sent by itself
JOURNAL_DIR = "journal"  # one record per send_once key: intent, in flight (end mark next), done
IN_FLIGHT = ("the job was interrupted while the SMTP server was receiving this email; it may have"
             " arrived, so it is not sent again")
# What a send can raise: smtplib's and ssl's errors, refused connections and timeouts are
# all OSErrors; a malformed address or a header that will not encode is a ValueError.
SEND_ERRORS = (OSError, ValueError)
END_MARK = b".\r\n"  # on a line of its own, it ends a message in SMTP DATA


@dataclass
class Delivery:
    """Where one email went; `summary` is the line the run summary shows."""

    method: Literal["smtp", "outbox"]
    delivered: bool
    path: str | None
    error: str | None
    recipients: list[str] = field(default_factory=list)
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Refused(smtplib.SMTPException):
    """Some recipients were refused while others got the email."""

    def __init__(self, refused: dict[str, tuple[int, bytes]]) -> None:
        self.refused = refused
        super().__init__(_refused_text(refused))


def send_message(msg: EmailMessage, settings: Settings, on_data: Callable[[], None] | None = None) -> Delivery:
    """Deliver `msg` to its To/Cc addresses by SMTP, else keep it in the outbox. ``on_data``
    is called just before the server starts receiving the message."""
    recipients = message_recipients(msg)
    if not recipients:
        path = write_outbox(msg, settings, reason=NO_RECIPIENTS)
        return Delivery("outbox", False, str(path), NO_RECIPIENTS, [],
                        f"not sent ({NO_RECIPIENTS}); kept in {path}")
    if not settings.smtp_host:
        path = write_outbox(msg, settings)
        return Delivery("outbox", True, str(path), None, recipients, f"written to {path} ({NO_SMTP})")
    try:
        smtp_send(msg, settings, recipients, on_data)
    except _Refused as exc:
        pending = list(exc.refused)
        error = redact(str(exc), settings)
        path = write_outbox(msg, settings, reason=error, pending=pending)
        return Delivery("smtp", False, str(path), error, recipients,
                        f"SMTP delivery to {', '.join(pending)} failed ({error}); kept in {path}")
    except SEND_ERRORS as exc:  # the outbox copy is what keeps the email
        error = redact(describe_error(exc), settings)
        path = write_outbox(msg, settings, reason=error)
        return Delivery("smtp", False, str(path), error, recipients,
                        f"SMTP delivery to {', '.join(recipients)} failed ({error}); kept in {path}")
    return Delivery("smtp", True, None, None, recipients,
                    f"sent by SMTP to {', '.join(recipients)} via {settings.smtp_host}:{settings.smtp_port}")


def flush_outbox(settings: Settings) -> list[Delivery]:
    """Retry every email waiting in the outbox; sent ones move to outbox/sent/.

    Does nothing without SMTP: with no SMTP configured the outbox is where email lives.
    """
    if not settings.smtp_host:
        return []
    return [_retry(path, settings) for path in pending_outbox(settings)]


def pending_outbox(settings: Settings) -> list[Path]:
    outbox = settings.outbox_dir
    if not outbox.is_dir():
        return []
    return sorted(p for p in outbox.glob("*.eml") if p.is_file())


def _retry(path: Path, settings: Settings) -> Delivery:
    msg = read_eml(path)
    pending = [a for _, a in getaddresses(msg.get_all(PENDING_HEADER, []))]
    recipients = pending or message_recipients(msg)
    if not recipients:
        return Delivery("outbox", False, str(path), NO_RECIPIENTS, [], f"still in {path} ({NO_RECIPIENTS})")
    for name in OUTBOX_HEADERS:
        del msg[name]
    held = settings.outbox_dir / HELD_DIR / path.name

    def in_flight() -> None:  # from here a kill leaves it in held/, not to be sent again
        held.parent.mkdir(parents=True, exist_ok=True)
        path.replace(held)

    try:
        smtp_send(msg, settings, recipients, in_flight)
    except _Refused as exc:
        # Keep it for the refused ones only, so the next flush does not send twice to the others.
        if held.exists():
            held.replace(path)
        _rewrite_pending(path, msg, list(exc.refused))
        error = redact(str(exc), settings)
        return Delivery("smtp", False, str(path), error, recipients,
                        f"SMTP delivery to {', '.join(exc.refused)} failed again ({error}); still in {path}")
    except SEND_ERRORS as exc:  # leave the file where it is; the next flush tries again
        if held.exists():
            held.replace(path)
        error = redact(describe_error(exc), settings)
        return Delivery("smtp", False, str(path), error, recipients,
                        f"SMTP delivery to {', '.join(recipients)} failed again ({error}); still in {path}")
    sent = settings.outbox_dir / SENT_DIR
    sent.mkdir(parents=True, exist_ok=True)
    moved = (held if held.exists() else path).replace(sent / path.name)
    return Delivery("smtp", True, str(moved), None, recipients,
                    f"sent from the outbox by SMTP to {', '.join(recipients)}"
                    f" via {settings.smtp_host}:{settings.smtp_port}")


# SMTP ------------------------------------------------------------------------

def smtp_send(msg: EmailMessage, settings: Settings, recipients: list[str],
              on_data: Callable[[], None] | None = None) -> None:
    """One SMTP session: connect (SSL or STARTTLS as set), log in if a user is set, send;
    ``on_data`` runs once the whole message but its end mark has gone out: until then a kill
    leaves nothing delivered, after it the server may have accepted the message."""
    host, port, timeout = settings.smtp_host or "localhost", settings.smtp_port, settings.smtp_timeout_s
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if settings.smtp_ssl:
        client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    with client:
        client.ehlo()
        if settings.smtp_starttls and not settings.smtp_ssl:
            client.starttls(context=context)
            client.ehlo()  # the server's capabilities change once the channel is encrypted
        if settings.smtp_user:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            client.login(settings.smtp_user, password)
        sender = parseaddr(settings.mail_from)[1] or settings.mail_from
        if on_data is not None:
            raw_send = client.send

            def send(payload: Any) -> None:
                # DATA's body goes out in one piece ending with the end mark: the server accepts
                # nothing before that mark, so a kill before it leaves nothing delivered.
                if isinstance(payload, bytes) and payload.endswith(b"\r\n" + END_MARK):
                    raw_send(payload[:-len(END_MARK)])
                    on_data()
                    payload = END_MARK
                raw_send(payload)

            client.send = send  # type: ignore[method-assign,assignment]  # smtplib: no hook before the end mark
        refused = client.send_message(msg, from_addr=sender, to_addrs=recipients)
    if refused:
        raise _Refused(refused)


def describe_error(exc: BaseException) -> str:
    """A one-line account of an SMTP failure, naming its kind."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _refused_text(exc.recipients)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return f"{type(exc).__name__}: {exc.smtp_code} {' '.join(text.split())}"
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _refused_text(refused: dict[str, tuple[int, bytes]]) -> str:
    parts = []
    for address, (code, reply) in refused.items():
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        parts.append(f"{address} ({code} {' '.join(text.split())})")
    return "recipients refused: " + "; ".join(parts)


def redact(text: str, settings: Settings) -> str:
    """Belt and braces: a server could echo what it was sent; the password never goes further."""
    secret = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    return text.replace(secret, "***") if secret else text


def message_recipients(msg: EmailMessage) -> list[str]:
    fields = [*msg.get_all("To", []), *msg.get_all("Cc", []), *msg.get_all("Bcc", [])]
    return [addr for _, addr in getaddresses([str(f) for f in fields]) if addr]


# Outbox ----------------------------------------------------------------------

def write_outbox(msg: EmailMessage, settings: Settings, *, reason: str | None = None,
                 pending: list[str] | None = None, folder: Path | None = None) -> Path:
    """Keep `msg` as an .eml in the outbox, with why it is there and whom it still has to reach."""
    outbox = folder or settings.outbox_dir
    target = outbox / outbox_name(str(msg.get(RUN_HEADER, "")))
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        atomic_write(target, _outbox_copy(msg, reason, pending))
    except OSError as exc:
        raise DeliveryError(f"could not write the email to the outbox {outbox}: {exc}",
                            hint="check that MLCHAIN_HOME is writable and the disk has room") from exc
    return target


def _rewrite_pending(path: Path, msg: EmailMessage, pending: list[str]) -> None:
    atomic_write(path, _outbox_copy(msg, f"recipients refused: {', '.join(pending)}", pending))


def _outbox_copy(msg: EmailMessage, reason: str | None, pending: list[str] | None) -> bytes:
    copy_msg = copy.deepcopy(msg)  # the caller's message stays as built
    for name in OUTBOX_HEADERS:
        del copy_msg[name]
    if reason:
        copy_msg[REASON_HEADER] = " ".join(reason.split())
    if pending:
        copy_msg[PENDING_HEADER] = ", ".join(pending)
    return copy_msg.as_bytes(policy=MAIL_POLICY)


def outbox_name(run_id: str) -> str:
    """Sortable by time, findable by run, unique even for two emails of one run in one second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._")[:40] or "run"
    return f"{stamp}-{run}-{uuid.uuid4().hex[:8]}.eml"


def read_eml(path: Path) -> EmailMessage:
    with path.open("rb") as fh:
        return cast(EmailMessage, BytesParser(_class=EmailMessage, policy=MAIL_POLICY).parse(fh))


# Exactly once across kills ---------------------------------------------------

def journal_path(settings: Settings, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._")[:120] or "email"
    return settings.outbox_dir / JOURNAL_DIR / f"{safe}.json"


def _record(path: Path, **values: Any) -> None:
    atomic_write(path, json.dumps(values, sort_keys=True).encode())  # creates the journal folder


def _in_outbox(settings: Settings, message_id: str) -> Path | None:
    """The outbox copy of this message, if one was written (kept, held or sent)."""
    outbox = settings.outbox_dir
    for folder in (outbox, outbox / HELD_DIR, outbox / SENT_DIR):
        for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
            if read_eml(path).get("Message-ID") == message_id:
                return path
    return None


def send_once(msg: EmailMessage, settings: Settings, key: str) -> Delivery:
    """``send_message``, at most once per ``key`` across kills and resumes (see the module doc)."""
    journal = journal_path(settings, key)
    try:
        record = json.loads(journal.read_text())
    except (FileNotFoundError, ValueError):
        record = None
    if record is not None:
        message_id = str(record.get("message_id") or "")
        if record.get("stage") == "done":
            done = Delivery(**record["delivery"])
            done.summary = f"already handled (Message-ID {message_id}): {done.summary}"
            return done
        del msg["Message-ID"]
        msg["Message-ID"] = message_id  # the same email as the interrupted attempt's
        recipients = message_recipients(msg)
        kept = _in_outbox(settings, message_id)
        delivery: Delivery | None
        if kept is not None:  # it reached the outbox before the kill: that was its delivery
            delivery = Delivery("outbox", not settings.smtp_host, str(kept), None, recipients,
                                f"already in {kept} (Message-ID {message_id})")
        elif record.get("stage") == "data":
            held = write_outbox(msg, settings, reason=IN_FLIGHT, folder=settings.outbox_dir / HELD_DIR)
            delivery = Delivery("smtp", False, str(held), IN_FLIGHT, recipients,
                                f"{IN_FLIGHT} (Message-ID {message_id}, to {', '.join(recipients)});"
                                f" a copy is in {held}")
        else:
            delivery = None  # the server never started receiving it: send it now
        if delivery is not None:
            _record(journal, stage="done", message_id=message_id, delivery=delivery.to_dict())
            return delivery
    message_id = str(msg.get("Message-ID", ""))
    _record(journal, stage="intent", message_id=message_id)
    delivery = send_message(msg, settings,
                            on_data=lambda: _record(journal, stage="data", message_id=message_id))
    _record(journal, stage="done", message_id=message_id, delivery=delivery.to_dict())
    return delivery
