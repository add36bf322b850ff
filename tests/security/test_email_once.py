"""One email per run, whatever moment a kill lands on (issue 13, item 10).

A real aiosmtpd server; the sender is a real process (what job5 runs: notify.send_once
keyed by the run), SIGKILLed while the server holds it at a chosen point of the SMTP
dialogue, then run again as a resumed job5 would. The server counts what it accepted.

Kill points tried: before DATA, after the server stored the message (its reply not yet
sent), after the outcome was recorded, and in the middle of an outbox retry: 4.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from mlchain.config import Settings
from mlchain.notify.send import HELD_DIR, IN_FLIGHT, journal_path

SENDER = textwrap.dedent("""
    import json, sys
    from email.message import EmailMessage
    from pathlib import Path
    from mlchain.config import Settings
    from mlchain.notify.send import flush_outbox, send_once

    home, port, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = Settings(home=Path(home), smtp_host="127.0.0.1", smtp_port=port, smtp_timeout_s=60)
    if what == "flush":
        print(json.dumps([d.to_dict() for d in flush_outbox(settings)]))
    else:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "mlchain@example.com", "ana@example.com", "run-7 passed"
        msg["Message-ID"] = sys.argv[4]
        msg["X-Mlchain-Run"] = "run-7"
        msg.set_content("accuracy 0.97")
        print(json.dumps(send_once(msg, settings, key="run-7").to_dict()))
""")


class Server:
    """Accepts and counts emails; ``hold_at`` ('rcpt' or 'stored') blocks the dialogue there
    once, setting ``holding``, until ``release``."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.hold_at: str | None = None
        self.holding = threading.Event()
        self.released = threading.Event()

    async def _hold(self, point: str) -> None:
        if self.hold_at == point:
            self.hold_at = None
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await self._hold("rcpt")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(message_from_bytes(envelope.content, policy=policy.default))
        await self._hold("stored")  # stored: from here on, the email has arrived
        return "250 OK"


@pytest.fixture()
def server() -> Iterator[tuple[Server, int]]:
    from aiosmtpd.controller import Controller

    handler = Server()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        handler.released.set()
        controller.stop()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _sender(home: Path, port: int, what: str = "send", message_id: str = "<run-7.1@example.com>") -> list[str]:
    return [sys.executable, "-c", SENDER, str(home), str(port), what, message_id]


def _killed_at(handler: Server, point: str, argv: list[str]) -> None:
    """Start the sender, SIGKILL it once the server holds it at ``point``, then let the server go on."""
    handler.hold_at = point
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert handler.holding.wait(60), proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        handler.released.set()


def _run(argv: list[str]) -> Any:
    import json

    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _settings(home: Path, port: int) -> Settings:
    return Settings(home=home, smtp_host="127.0.0.1", smtp_port=port)


def test_killed_before_data_the_resume_sends_it_once(tmp_path: Path, server: tuple[Server, int]) -> None:
    handler, port = server
    home = tmp_path / "home"
    _killed_at(handler, "rcpt", _sender(home, port))
    assert handler.received == []
    # The resumed job builds its message anew (a new Message-ID); the journal's is the one sent.
    delivery = _run(_sender(home, port, message_id="<run-7.2@example.com>"))
    assert delivery["delivered"] is True and delivery["method"] == "smtp"
    assert [m["Message-ID"] for m in handler.received] == ["<run-7.1@example.com>"]
    again = _run(_sender(home, port))
    assert again["summary"].startswith("already handled (Message-ID <run-7.1@example.com>)")
    assert len(handler.received) == 1


def test_killed_after_the_server_stored_it_no_second_email(tmp_path: Path, server: tuple[Server, int]) -> None:
    handler, port = server
    home = tmp_path / "home"
    _killed_at(handler, "stored", _sender(home, port))
    assert len(handler.received) == 1  # it arrived; the sender never heard the reply
    delivery = _run(_sender(home, port))
    assert len(handler.received) == 1
    assert delivery["delivered"] is False and delivery["error"] == IN_FLIGHT
    assert "may have arrived, so it is not sent again" in delivery["summary"]
    assert "<run-7.1@example.com>" in delivery["summary"]
    held = Path(delivery["path"])
    assert held.parent == _settings(home, port).outbox_dir / HELD_DIR
    assert message_from_bytes(held.read_bytes(), policy=policy.default)["Message-ID"] == "<run-7.1@example.com>"
    # Held copies are the operator's to look at: a later job5's flush does not send them.
    assert _run(_sender(home, port, "flush")) == []
    assert len(handler.received) == 1


def test_after_the_outcome_is_recorded_a_rerun_sends_nothing(tmp_path: Path, server: tuple[Server, int]) -> None:
    handler, port = server
    home = tmp_path / "home"
    first = _run(_sender(home, port))
    second = _run(_sender(home, port))
    assert first["delivered"] is True and len(handler.received) == 1
    assert second["summary"] == f"already handled (Message-ID <run-7.1@example.com>): {first['summary']}"
    assert journal_path(_settings(home, port), "run-7").is_file()


def test_a_retry_from_the_outbox_killed_in_flight_is_not_sent_again(tmp_path: Path,
                                                                     server: tuple[Server, int]) -> None:
    handler, port = server
    home = tmp_path / "home"
    down = free_port()  # nothing listens: the first send keeps the email in the outbox
    kept = _run(_sender(home, down))
    assert kept["delivered"] is False and Path(kept["path"]).is_file()
    _killed_at(handler, "stored", _sender(home, port, "flush"))
    assert len(handler.received) == 1
    assert not Path(kept["path"]).exists()
    assert (Path(kept["path"]).parent / HELD_DIR / Path(kept["path"]).name).is_file()
    assert _run(_sender(home, port, "flush")) == []
    assert len(handler.received) == 1
