"""Pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

- ``booking_event``: a realistic ``BookingEvent``.
- ``run_action``: run one action (installed, by name, or an ``ActionType``) against an event,
  as the engine would, and get its ``Result``.
- ``linktime_hub``: a ``Hub`` on a fresh SQLite database that also saves workflows through the
  API (``save``, ``refused``: see ``linktime.testing_hub``).
- ``linktime_server``: that hub served over HTTP on loopback (uvicorn), with an account: connect
  a booking source and post a provider's payload to it signed as the provider signs it
  (``connect``, ``post_signed``; see ``linktime.testing_hub.LinktimeServer``).
- ``http_receiver``: a real HTTP server on loopback that records what it receives and answers
  as scripted, standing in for a webhook endpoint or a provider's API.

Helpers: ``test_certificates`` (a throwaway CA and a server certificate signed by it, for TLS
tests) and ``scratch_database`` (a fresh PostgreSQL database, dropped afterwards).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .actions import ActionType, Result
    from .models import BookingEvent
    from .testing_hub import LinktimeHub, LinktimeServer


@pytest.fixture
def booking_event() -> BookingEvent:
    from .models import sample_event

    return sample_event()


RunAction = Callable[..., "Result"]


def event_with(**booking: Any) -> BookingEvent:
    """The sample booking event with some booking fields changed (a dict is merged into a
    dict, e.g. ``event_with(invitee={"phone": "+442071838750"})``)."""
    from .models import BookingEvent, sample_event

    data = sample_event().model_dump(mode="json")
    for key, value in booking.items():
        current = data["booking"].get(key)
        merge = isinstance(current, dict) and isinstance(value, dict)
        data["booking"][key] = {**current, **value} if merge else value
    return BookingEvent.model_validate(data)


def run_action(
    action: str | ActionType,
    settings: dict[str, Any],
    event: BookingEvent | None = None,
    *,
    attempt: int = 1,
    trigger: str | None = None,
    credentials: dict[str, Any] | None = None,
    step_id: str = "stp_test",
) -> Result:
    """Validate ``settings`` with the action's model and run one attempt against ``event``.
    ``action`` is an installed action's name, or an ``ActionType`` (installed or not)."""
    from . import plugins
    from .actions import ActionContext, WorkflowRef
    from .engine import run_attempt
    from .models import sample_event

    action_type = plugins.load().action(action) if isinstance(action, str) else action
    event = event or sample_event()
    creds = None
    if action_type.credentials is not None and credentials is not None:
        creds = action_type.credentials.model_validate(credentials)
    ctx = ActionContext(
        event=event,
        trigger=trigger or event.type,
        workflow=WorkflowRef("wf_test", "Test workflow"),
        account_id="acc_test",
        plan="business",
        run_id="run_test",
        step_id=step_id,
        position=0,
        attempt=attempt,
        settings=action_type.settings.model_validate(settings),
        credentials=creds,
    )
    return run_attempt(action_type, ctx)


@pytest.fixture(name="run_action")
def run_action_fixture() -> RunAction:
    return run_action


@pytest.fixture
def linktime_hub(tmp_path: Path) -> Iterator[LinktimeHub]:
    from .settings import Settings
    from .testing_hub import LinktimeHub

    hub = LinktimeHub(Settings(data_dir=tmp_path, secret_key="test-secret"))
    hub.migrate()
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def linktime_server(linktime_hub: LinktimeHub) -> Iterator[LinktimeServer]:
    from .testing_hub import serve

    with serve(linktime_hub) as served:
        yield served


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class HttpReceiver:
    """Records every request; answers each path from its script, then from ``handler`` (a
    function of the request, for a stand-in API), else with ``default``. A request is recorded
    once its reply's delay has passed."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default = Reply()
        self.handler: Callable[[Received], Reply] | None = None
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                received = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                    time.time(),
                )
                with receiver._lock:
                    script = receiver._scripts.get(self.path.split("?")[0])
                    if script:
                        reply = script.popleft()
                    elif receiver.handler is not None:
                        reply = receiver.handler(received)
                    else:
                        reply = receiver.default
                if reply.delay:
                    time.sleep(reply.delay)
                with receiver._lock:
                    receiver.requests.append(received)
                    receiver._lock.notify_all()
                payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval keeps shutdown, once per test, quick.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, in order."""
        with self._lock:
            self._scripts[path].extend(replies)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` requests have arrived; fail the test if they do not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} requests within {timeout}s, got {len(self.requests)}"
                    )
                self._lock.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    """A receiver that ``linktime.http`` may reach: for this test the operator's allow-list
    (``LINKTIME_HTTP_ALLOWED_NETWORKS``, or its older name) also lets 127.0.0.1 through; the
    rest of loopback (``http://127.0.0.2/``) is still refused."""
    from . import http

    allowed = [str(network) for network in http.settings().allowed_networks]
    monkeypatch.setenv(http.ALLOWED_NETWORKS_ENV, ",".join([*allowed, "127.0.0.1/32"]))
    receiver = HttpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


@dataclass(frozen=True)
class TestCertificates:
    """A throwaway CA and a server certificate it signed (PEM files in one folder)."""

    __test__ = False  # not a test class, should a test module import it

    ca_file: Path  # trust this (e.g. SSL_CERT_FILE) to accept the server
    server_file: Path  # the server's private key followed by its certificate
    server: ssl.SSLContext  # a server context presenting that certificate


def test_certificates(tmp_dir: Path, names: Sequence[str]) -> TestCertificates:
    """Write a throwaway CA and a certificate for ``names`` (host names or IP addresses; the
    first is also its common name) signed by it into ``tmp_dir``; valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def alt_name(value: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            return x509.DNSName(value)

    def builder(
        subject: str, issuer: str, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )

    ca_name = "linktime test CA"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        builder(names[0], ca_name, key)
        .add_extension(x509.SubjectAlternativeName([alt_name(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, server_file = tmp_dir / "ca.pem", tmp_dir / "server.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    server_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(server_file)
    return TestCertificates(ca_file, server_file, server)


test_certificates.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str = "lt_test_") -> Iterator[str]:
    """Create a fresh, empty PostgreSQL database next to ``admin_url``'s (a server where that
    role may CREATE DATABASE), yield its URL, and drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
