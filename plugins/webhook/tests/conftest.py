"""Real loopback HTTP receivers for the webhook tests."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from linktime import http
from linktime.testing import TestCertificates, test_certificates

LOOPBACK = "127.0.0.0/8,::1/128"


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``delay`` seconds pass before it is sent."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    server_name: str | None = None  # TLS SNI of the connection it came on


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 that answers from a script and records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(
                    Received(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        getattr(self.connection, "sni_seen", None),
                    )
                )
                reply = receiver.replies.popleft() if receiver.replies else Reply()
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and hung up is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        # A short poll interval keeps shutdown (once per test) quick.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def reply(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Queue the answer to the next request (after that: 200 ``ok``)."""
        self.replies.append(Reply(status, body, headers or {}, delay))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(tls: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(tls))
        return started[-1]

    try:
        yield make
    finally:
        for server in started:
            server.close()


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    return make_receiver()


TLS_NAMES = ("hooks.example", "other.example")


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A throwaway CA file, and a server context for TLS_NAMES signed by it."""
    certificates = test_certificates(tmp_path_factory.mktemp("tls"), TLS_NAMES)

    def remember_server_name(sock: Any, server_name: str | None, _: ssl.SSLContext) -> None:
        sock.sni_seen = server_name

    certificates.server.sni_callback = remember_server_name
    return certificates


@pytest.fixture
def tls_receiver(make_receiver: Callable[..., Receiver], test_ca: TestCertificates) -> Receiver:
    return make_receiver(tls=test_ca.server)


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell exports."""
    for name in (
        "LINKTIME_HTTP_ALLOWED_NETWORKS",
        "LINKTIME_WEBHOOK_ALLOWED_NETWORKS",
        "LINKTIME_WEBHOOK_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", LOOPBACK)


@pytest.fixture
def fresh_clients() -> Iterator[None]:
    """linktime.http's clients made anew, with the TLS settings of this test, and closed after."""
    http.close()
    try:
        yield
    finally:
        http.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names to answer without real DNS: ``fake_dns["hooks.example"] = ["127.0.0.1"]``."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        out: list[Any] = []
        for ip in answers[host]:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sockaddr = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
            out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers
