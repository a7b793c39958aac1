"""The stand-in Slack (``linktime_slack_testing``, shipped with this plugin), and no proxies."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from linktime_slack_testing import slack

__all__ = ["slack"]  # fixtures


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack-sdk sends through HTTPS_PROXY/HTTP_PROXY when set; tests talk to loopback only.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port
