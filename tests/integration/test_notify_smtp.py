"""The run email against a real SMTP server (aiosmtpd on loopback): sent, refused, down, or kept.

Every failure must leave the email in the outbox, parseable, with the Delivery saying why.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from mlchain.config import Settings, load_settings
from mlchain.notify import Delivery, build_message, flush_outbox, send_message, send_run_email, subject_line
from mlchain.notify.send import NO_RECIPIENTS, PENDING_HEADER, REASON_HEADER
from mlchain.summary import RunSummary, TrialRecord

HOST = "127.0.0.1"
USER, PASSWORD = "ci-bot", "smtp-pw-Kx93-secret"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    msg: EmailMessage


class Collector:
    """An aiosmtpd handler that keeps what it receives and refuses the addresses it is told to."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.received: list[Received] = []
        self.refuse = set(refuse)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        msg = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(content)
        assert isinstance(msg, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start aiosmtpd servers on demand; all are stopped at the end of the test."""
    controllers: list[Controller] = []

    def start(handler: Collector, port: int | None = None, **smtp_kwargs: Any) -> int:
        port = port or free_port()
        controller = Controller(handler, hostname=HOST, port=port, **smtp_kwargs)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def settings_for(tmp_path: Path, port: int | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {"home": tmp_path / "home", "mail_from": "mlchain@ci.example",
                              "smtp_timeout_s": 5.0}
    if port is not None:
        values |= {"smtp_host": HOST, "smtp_port": port}
    return Settings(**(values | extra))


def run_summary(recipients: list[str] | None = None) -> RunSummary:
    hist = [{"epoch": e, "epochs": 4, "accuracy": 0.7 + e / 20, "loss": 1 / e} for e in range(1, 5)]
    trials = [TrialRecord(1, {"filters": 16}, "succeeded", 0.71, mlflow_run_id="mlrun1"),
              TrialRecord(2, {"filters": 64}, "succeeded", 0.9123, mlflow_run_id="mlrun2", history=hist)]
    return RunSummary(
        run_id="r-smtp-1", repo_name="digits_cnn", repo_url="https://github.com/acme/digits_cnn",
        ref="main", commit="abc123", status="passed", stop_reason="gate passed", metric_name="accuracy",
        threshold=0.8, direction="maximize", framework="keras", trials=trials, best=trials[1],
        recipients=["ana@example.com"] if recipients is None else recipients,
        registered={"name": "digits_cnn", "version": 1, "champion": True, "previous_champion_metric": None},
        tracking_uri="sqlite:////tmp/mlflow.db",
    )


def outbox_files(settings: Settings) -> list[Path]:
    return sorted(settings.outbox_dir.glob("*.eml"))


def read_eml(path: Path) -> EmailMessage:
    msg = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(msg, EmailMessage)
    return msg


def assert_kept(delivery: Delivery, settings: Settings, subject: str) -> EmailMessage:
    """The email is in the outbox, whole, and the Delivery says where."""
    assert delivery.delivered is False
    assert delivery.path is not None and Path(delivery.path).is_file()
    assert outbox_files(settings) == [Path(delivery.path)]
    assert delivery.path in delivery.summary
    kept = read_eml(Path(delivery.path))
    assert kept["Subject"] == subject
    assert kept.get_body(("html",)) is not None
    assert not list(settings.outbox_dir.glob(".*.tmp"))  # the atomic write left nothing behind
    return kept


# Delivered -----------------------------------------------------------------------

def test_sent_by_smtp_and_parsed_back(tmp_path: Path, serve: Any) -> None:
    handler = Collector()
    settings = settings_for(tmp_path, serve(handler))
    summary = run_summary(["ana@example.com", "bo@example.com"])
    delivery = send_run_email(summary, settings)

    assert delivery.delivered and delivery.method == "smtp" and delivery.error is None
    assert delivery.recipients == ["ana@example.com", "bo@example.com"]
    assert delivery.summary == (f"sent by SMTP to ana@example.com, bo@example.com via {HOST}:{settings.smtp_port}")
    assert outbox_files(settings) == []
    [got] = handler.received
    assert got.mail_from == "mlchain@ci.example"
    assert got.rcpt_tos == ["ana@example.com", "bo@example.com"]
    msg = got.msg
    assert msg["Subject"] == "[mlchain] PASSED digits_cnn@main: accuracy 0.9123 >= 0.80 (trial 2 of 2)"
    assert msg["X-Mlchain-Run"] == "r-smtp-1"
    assert msg[REASON_HEADER] is None
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and "0.9123" in text.get_content()
    assert html is not None and "mlrun2" in html.get_content()
    [png] = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert png.get_content().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"cid:{str(png['Content-ID']).strip('<>')}" in html.get_content()
    assert delivery.to_dict()["method"] == "smtp"


def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
        and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 235/535 itself


PLAIN_AUTH = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@PLAIN_AUTH
def test_login_with_user_and_password(tmp_path: Path, serve: Any) -> None:
    handler = Collector()
    port = serve(handler, authenticator=authenticator, auth_require_tls=False, auth_required=True)
    # The password comes from the environment, as it would on a CI agent.
    settings = load_settings(flags={"home": str(tmp_path / "home")},
                             env={"MLCHAIN_SMTP_HOST": HOST, "MLCHAIN_SMTP_PORT": str(port),
                                  "MLCHAIN_SMTP_USER": USER, "MLCHAIN_SMTP_PASSWORD": PASSWORD})
    delivery = send_run_email(run_summary(), settings)
    assert delivery.delivered, delivery.summary
    assert len(handler.received) == 1


@PLAIN_AUTH
def test_wrong_password_keeps_the_email_and_never_shows_it(
        tmp_path: Path, serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    handler = Collector()
    port = serve(handler, authenticator=authenticator, auth_require_tls=False, auth_required=True)
    settings = settings_for(tmp_path, port, smtp_user=USER, smtp_password=SecretStr("wrong-pw-Zz7"))
    summary = run_summary()
    delivery = send_run_email(summary, settings)

    assert_kept(delivery, settings, subject_line(summary))
    assert delivery.error is not None and delivery.error.startswith("SMTPAuthenticationError: 535")
    assert handler.received == []
    for text in (delivery.error, delivery.summary, Path(str(delivery.path)).read_text(), repr(delivery),
                 caplog.text):
        assert "wrong-pw-Zz7" not in text


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made here: aiosmtpd needs one for STARTTLS."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_then_login(tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    handler = Collector()
    port = serve(handler, tls_context=server_tls, require_starttls=True, authenticator=authenticator,
                 auth_required=True)
    settings = settings_for(tmp_path, port, smtp_starttls=True, smtp_user=USER,
                            smtp_password=SecretStr(PASSWORD))

    # An untrusted certificate is a delivery failure like any other: the email is kept.
    refused = send_run_email(run_summary(), settings)
    assert not refused.delivered and refused.error and "SSLCertVerificationError" in refused.error
    assert handler.received == []

    # Trusting our own CA, the same settings deliver over the encrypted channel.
    monkeypatch.setattr(ssl, "create_default_context", partial(ssl.create_default_context, cafile=str(cert)))
    delivery = send_run_email(run_summary(), settings)
    assert delivery.delivered, delivery.summary
    assert len(handler.received) == 1


# Kept in the outbox ----------------------------------------------------------------

def test_server_down_keeps_the_email(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, free_port())  # nothing listens there
    summary = run_summary()
    delivery = send_run_email(summary, settings)

    kept = assert_kept(delivery, settings, subject_line(summary))
    assert delivery.method == "smtp"
    assert delivery.error is not None and delivery.error.startswith("ConnectionRefusedError")
    assert delivery.summary.startswith("SMTP delivery to ana@example.com failed (ConnectionRefusedError")
    assert kept[REASON_HEADER].startswith("ConnectionRefusedError")
    assert kept["To"] == "ana@example.com"


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never greets
        silent.bind((HOST, 0))
        silent.listen(1)
        settings = settings_for(tmp_path, silent.getsockname()[1], smtp_timeout_s=0.5)
        delivery = send_run_email(run_summary(), settings)
    assert not delivery.delivered and delivery.error is not None
    assert delivery.error.startswith(("TimeoutError", "SMTPServerDisconnected"))
    assert len(outbox_files(settings)) == 1


def test_refused_recipient_keeps_the_email(tmp_path: Path, serve: Any) -> None:
    handler = Collector(refuse=("ana@example.com",))
    settings = settings_for(tmp_path, serve(handler))
    summary = run_summary()
    delivery = send_run_email(summary, settings)

    assert_kept(delivery, settings, subject_line(summary))
    assert delivery.error == "recipients refused: ana@example.com (550 5.1.1 no such user here)"
    assert handler.received == []


def test_partly_refused_keeps_it_for_the_refused_only(tmp_path: Path, serve: Any) -> None:
    refusing = Collector(refuse=("bo@example.com",))
    port = serve(refusing)
    settings = settings_for(tmp_path, port)
    delivery = send_run_email(run_summary(["ana@example.com", "bo@example.com"]), settings)

    assert not delivery.delivered and delivery.error and "bo@example.com (550" in delivery.error
    assert [r.rcpt_tos for r in refusing.received] == [["ana@example.com"]]
    kept = read_eml(Path(str(delivery.path)))
    assert kept[PENDING_HEADER] == "bo@example.com"

    # When the mailbox exists again, a flush reaches bo alone: ana does not get it twice.
    accepting = Collector()
    settings = settings_for(tmp_path, serve(accepting))
    [retried] = flush_outbox(settings)
    assert retried.delivered and retried.recipients == ["bo@example.com"]
    assert [r.rcpt_tos for r in accepting.received] == [["bo@example.com"]]
    assert accepting.received[0].msg[PENDING_HEADER] is None


def test_no_smtp_configured_writes_the_outbox(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, None)
    summary = run_summary()
    delivery = send_run_email(summary, settings)

    assert delivery.method == "outbox" and delivery.delivered and delivery.error is None
    assert delivery.summary == f"written to {delivery.path} (no SMTP configured)"
    [path] = outbox_files(settings)
    assert str(path) == delivery.path
    assert path.name.endswith(".eml") and "r-smtp-1" in path.name
    assert read_eml(path)["Subject"] == subject_line(summary)
    assert flush_outbox(settings) == []  # without SMTP the outbox is the destination


def test_no_recipients_keeps_the_email_and_says_how_to_fix_it(tmp_path: Path, serve: Any) -> None:
    handler = Collector()
    settings = settings_for(tmp_path, serve(handler))
    summary = run_summary(recipients=[])
    delivery = send_run_email(summary, settings)

    kept = assert_kept(delivery, settings, subject_line(summary))
    assert delivery.error == NO_RECIPIENTS
    assert "notify.recipients" in delivery.summary
    assert kept["To"] is None and kept[REASON_HEADER] == NO_RECIPIENTS
    assert handler.received == []


def test_two_emails_of_one_run_do_not_overwrite_each_other(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, None)
    msg = build_message(run_summary(), settings)
    first, second = send_message(msg, settings), send_message(msg, settings)
    assert first.path != second.path
    assert len(outbox_files(settings)) == 2


def test_flush_sends_what_waited_once_the_server_is_back(tmp_path: Path, serve: Any) -> None:
    port = free_port()
    settings = settings_for(tmp_path, port)
    waiting = send_run_email(run_summary(), settings)
    assert not waiting.delivered

    handler = Collector()
    serve(handler, port=port)
    [delivery] = flush_outbox(settings)

    assert delivery.delivered and delivery.method == "smtp"
    assert outbox_files(settings) == []
    assert delivery.path is not None and Path(delivery.path).parent == settings.outbox_dir / "sent"
    [got] = handler.received
    assert got.rcpt_tos == ["ana@example.com"]
    assert got.msg["Subject"] == read_eml(Path(delivery.path))["Subject"]
    assert got.msg[REASON_HEADER] is None  # the outbox's own note is not sent on
    assert flush_outbox(settings) == []
