"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives and answers as
scripted (MAIL FROM, per-recipient RCPT and DATA replies, a slow DATA), for tests of
``email.send`` (the plugin's own, and any other that runs it).

For tests only: it imports pytest and aiosmtpd (``pip install 'linktime-email[test]'``).
``SmtpPeer(**controller_kwargs)`` starts one (the keyword arguments go to aiosmtpd's
``Controller``: ``tls_context``, ``require_starttls``, ``authenticator``, ``auth_require_tls``…)
on a free port; point the plugin at it with ``LINKTIME_EMAIL_SMTP_HOST=127.0.0.1`` and
``LINKTIME_EMAIL_SMTP_PORT=peer.port``. The ``make_peer`` fixture starts them and stops them
after the test; import it into a ``conftest.py``::

    from linktime_email_testing import make_peer

    __all__ = ["make_peer"]  # fixtures
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
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
    at: float = field(default_factory=time.time)  # when it was accepted (time.time())

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
