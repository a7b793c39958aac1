"""The SMTP server from ``linktime_email_testing`` (shipped with this plugin), clean operator
settings, and a throwaway CA whose certificate the server can present (STARTTLS, implicit TLS)."""

from __future__ import annotations

import os

import pytest
from linktime.testing import TestCertificates, test_certificates
from linktime_email_testing import free_port, make_peer

__all__ = ["make_peer"]  # fixtures


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
