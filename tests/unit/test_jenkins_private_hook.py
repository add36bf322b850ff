"""Pins the one private API of python-jenkins that mlchain relies on: every answer passes
through ``Jenkins._response_handler`` (overridden in mlchain.jenkins.client to keep the last
failed answer, whose body names what to fix). If a python-jenkins release stops calling it,
this fails here, before the deploy messages quietly lose their reasons."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlchain.jenkins.client import Failure, _Client

BODY = "java.lang.ClassNotFoundException: au.com.example.MissingView"


class _Broken(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = BODY.encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_controller() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_python_jenkins_passes_every_answer_through_response_handler(broken_controller: str) -> None:
    client = _Client(broken_controller, timeout=5)
    with pytest.raises(Exception):  # noqa: B017 - python-jenkins' own exception types vary by call
        client.get_job_config("anything")
    assert client.last_failure == Failure(500, BODY)
