"""A stand-in for Twilio's Messages API on a loopback server, answering the way Twilio does."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import pytest
from linktime.testing import HttpReceiver, Received, Reply

ACCOUNT_SID = "AC5ef8732a3c49700934481addd5ce1659"
AUTH_TOKEN = "9f3b1c2d4e5f60718293a4b5c6d7e8f9"
FROM = "+14155550123"
SERVICE_SID = "MG0123456789abcdef0123456789abcdef"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"

# Twilio's test numbers (https://www.twilio.com/docs/iam/test-credentials): To these, the real
# API refuses as below.
REFUSED = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}


def twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Reply:
    """An error answer in Twilio's JSON shape."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})


@dataclass(frozen=True)
class Sent:
    """A message Twilio accepted: the form fields it received."""

    to: str
    body: str
    from_: str | None
    messaging_service_sid: str | None
    sid: str


class FakeTwilio:
    # For the tests, which cannot import this conftest (pytest's importlib mode).
    ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID = ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID
    error = staticmethod(twilio_error)

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self.url = receiver.url
        self.sent: list[Sent] = []
        receiver.handler = self.handle

    def fail_next(self, *replies: Reply) -> None:
        """Answer the next Messages requests with ``replies`` (auth and fields unchecked)."""
        self.receiver.script(MESSAGES, *replies)

    def handle(self, req: Received) -> Reply:
        found = re.fullmatch(r"/2010-04-01/Accounts/(AC\w+)/Messages\.json", req.path)
        if req.method != "POST" or found is None:
            return twilio_error(404, 20404, f"The requested resource {req.path} was not found")
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if req.headers.get("authorization") != f"Basic {expected}" or found[1] != ACCOUNT_SID:
            return twilio_error(401, 20003, "Authenticate")
        form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        to, body = form.get("To"), form.get("Body")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not (sender or service):
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if to in REFUSED:
            return twilio_error(400, *REFUSED[to])
        sid = "SM" + secrets.token_hex(16)
        self.sent.append(Sent(to, body, sender, service, sid))
        answer = {
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": body,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service and not sender else "queued",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
        }
        return Reply(201, json.dumps(answer), {"Content-Type": "application/json"})


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell exports."""
    for name in ("SUPPORTED_COUNTRIES", "TIMEOUT"):
        monkeypatch.delenv(f"LINKTIME_SMS_{name}", raising=False)
    monkeypatch.delenv("LINKTIME_TWILIO_API_BASE", raising=False)


@pytest.fixture
def twilio(http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    """The stand-in Twilio, with the plugin pointed at it."""
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", http_receiver.url)
    yield FakeTwilio(http_receiver)


@pytest.fixture
def credentials() -> dict[str, str]:
    return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM}
