"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives and answers as
scripted (MAIL FROM, per-recipient RCPT and DATA replies, a slow DATA), with STARTTLS, implicit
TLS and AUTH when asked, and a throwaway CA for its certificate."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Delivered:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    login: str | None  # the authenticated user, if any

    @property
    def message(self) -> EmailMessage:
        # As a mailbox stores it: the wire's CRLF line ends become LF.
        content = self.content.replace(b"\r\n", b"\n")
        return message_from_bytes(content, policy=policy.default)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class SmtpPeer:
    """An aiosmtpd ``Controller`` on 127.0.0.1 whose handler is this object."""

    def __init__(self, **controller_kwargs: Any) -> None:
        self.delivered: list[Delivered] = []
        self.rcpt_replies: dict[str, deque[str]] = defaultdict(deque)
        self.mail_replies: deque[str] = deque()
        self.data_replies: deque[str] = deque()
        self.data_delay = 0.0
        self.port = free_port()
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, **controller_kwargs
        )
        self.controller.start()

    def answer_mail(self, *replies: str) -> None:
        """Answer the next MAIL FROMs with ``replies`` (then accept the sender)."""
        self.mail_replies.extend(replies)

    def answer_rcpt(self, address: str, *replies: str) -> None:
        """Answer the next RCPT TOs for ``address`` with ``replies`` (then accept it)."""
        self.rcpt_replies[address].extend(replies)

    def answer_data(self, *replies: str) -> None:
        """Answer the next DATAs with ``replies`` (then accept and record the message)."""
        self.data_replies.extend(replies)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        scripted = self.rcpt_replies.get(address)
        if scripted:
            return scripted.popleft()
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.data_delay)
        if self.data_replies:
            return self.data_replies.popleft()
        assert envelope.mail_from is not None and isinstance(envelope.content, bytes)
        assert server.transport is not None
        self.delivered.append(
            Delivered(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.content,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=session.auth_data if session.authenticated else None,
            )
        )
        return f"250 2.0.0 Ok: queued as Q{len(self.delivered)}"

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def make_peer() -> Iterator[Callable[..., SmtpPeer]]:
    started: list[SmtpPeer] = []

    def make(**controller_kwargs: Any) -> SmtpPeer:
        started.append(SmtpPeer(**controller_kwargs))
        return started[-1]

    try:
        yield make
    finally:
        for peer in started:
            peer.close()


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell exports."""
    for name in list(os.environ):
        if name.startswith("LINKTIME_EMAIL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@dataclass(frozen=True)
class TestCA:
    ca_file: Path  # trust this (SSL_CERT_FILE) to accept the server
    server: ssl.SSLContext  # a server context whose certificate names 127.0.0.1


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A throwaway CA, and a certificate for the IP 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> Any:
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

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        builder("linktime-email test CA", "linktime-email test CA", ca_key)
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
        builder("127.0.0.1", "linktime-email test CA", key)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (folder / "server.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "server.pem")
    return TestCA(folder / "ca.pem", server)
