"""The SMTP server from ``linktime_email_testing`` (shipped with this plugin), clean operator
settings, and a throwaway CA whose certificate the server can present (STARTTLS, implicit TLS)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from linktime.testing import TestCertificates, test_certificates
from linktime_email_testing import SmtpPeer, free_port, make_peer

__all__ = ["make_peer"]  # fixtures

FROM = "bookings@linktime.example"  # the operator's sending address in every test


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


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A throwaway CA, and a certificate for the IP 127.0.0.1 signed by it."""
    return test_certificates(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])


@pytest.fixture
def relay_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the operator settings at a loopback port: ``relay_env(peer.port, smtp_user=…)``."""

    def point(port: int, **extra: str) -> None:
        monkeypatch.setenv("LINKTIME_EMAIL_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("LINKTIME_EMAIL_SMTP_PORT", str(port))
        monkeypatch.setenv("LINKTIME_EMAIL_FROM_ADDRESS", FROM)
        monkeypatch.setenv("LINKTIME_EMAIL_TIMEOUT", "5")
        for name, value in extra.items():
            monkeypatch.setenv(f"LINKTIME_EMAIL_{name.upper()}", value)

    return point


@pytest.fixture
def peer(make_peer: Callable[..., SmtpPeer], relay_env: Callable[..., None]) -> SmtpPeer:
    """A plain SMTP server, with the operator settings pointing at it."""
    server = make_peer()
    relay_env(server.port)
    return server
