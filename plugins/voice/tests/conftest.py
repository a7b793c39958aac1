"""A stand-in for Twilio's Calls API on a loopback server, answering the way Twilio does."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
from linktime.testing import HttpReceiver, Received, Reply

ACCOUNT_SID = "AC5ef8732a3c49700934481addd5ce1659"
AUTH_TOKEN = "9f3b1c2d4e5f60718293a4b5c6d7e8f9"
FROM = "+14155550123"
SERVICE_SID = "MG0123456789abcdef0123456789abcdef"
CALLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"

# Twilio's test numbers (https://www.twilio.com/docs/iam/test-credentials): calls to these, the
# real API refuses as below.
REFUSED = {
    "+15005550001": (21217, "Phone number does not appear to be valid"),
    "+15005550002": (21214, "'To' phone number cannot be reached"),
    "+15005550003": (21215, "Account not authorized to call +15005550003."),
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
class Placed:
    """A call Twilio accepted: the form fields it received, the TwiML parsed."""

    to: str
    from_: str
    twiml: str
    sid: str

    @property
    def response(self) -> ElementTree.Element:
        return ElementTree.fromstring(self.twiml)


class FakeTwilio:
    # For the tests, which cannot import this conftest (pytest's importlib mode).
    ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID = ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID
    error = staticmethod(twilio_error)

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self.calls: list[Placed] = []
        receiver.handler = self.handle

    def fail_next(self, *replies: Reply) -> None:
        """Answer the next Calls requests with ``replies`` (auth and fields unchecked)."""
        self.receiver.script(CALLS, *replies)

    def handle(self, req: Received) -> Reply:
        found = re.fullmatch(r"/2010-04-01/Accounts/(AC\w+)/Calls\.json", req.path)
        if req.method != "POST" or found is None:
            return twilio_error(404, 20404, f"The requested resource {req.path} was not found")
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if req.headers.get("authorization") != f"Basic {expected}" or found[1] != ACCOUNT_SID:
            return twilio_error(401, 20003, "Authenticate")
        form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        to, sender, twiml = form.get("To"), form.get("From"), form.get("Twiml")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not sender:
            return twilio_error(400, 21213, "No 'From' number is specified")
        if not (twiml or form.get("Url") or form.get("ApplicationSid")):
            return twilio_error(400, 21205, "Url parameter is required.")
        if to in REFUSED:
            return twilio_error(400, *REFUSED[to])
        sid = "CA" + secrets.token_hex(16)
        self.calls.append(Placed(to, sender, twiml or "", sid))
        answer = {
            "account_sid": ACCOUNT_SID,
            "answered_by": None,
            "api_version": "2010-04-01",
            "direction": "outbound-api",
            "duration": None,
            "from": sender,
            "price": None,
            "sid": sid,
            "status": "queued",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json",
        }
        return Reply(201, json.dumps(answer), {"Content-Type": "application/json"})


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell exports."""
    for name in ("SUPPORTED_COUNTRIES", "TIMEOUT", "AGENT_URL"):
        monkeypatch.delenv(f"LINKTIME_VOICE_{name}", raising=False)
    monkeypatch.delenv("LINKTIME_TWILIO_API_BASE", raising=False)


@pytest.fixture
def twilio(http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    """The stand-in Twilio, with the plugin pointed at it."""
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", http_receiver.url)
    yield FakeTwilio(http_receiver)


@pytest.fixture
def credentials() -> dict[str, str]:
    return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM}
