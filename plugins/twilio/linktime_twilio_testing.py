"""A stand-in for Twilio's REST API on a loopback server, answering the way Twilio does: the
Messages API (``sms.send``) and the Calls API (``voice.call``) of one test account.

For tests only (it imports pytest). Use ``FakeTwilio`` on a ``linktime.testing.HttpReceiver``
and point the channels at it with ``LINKTIME_TWILIO_API_BASE``, or import the fixtures into a
``conftest.py``::

    from linktime_twilio_testing import credentials, twilio  # noqa: F401  (fixtures)

``twilio`` is the stand-in, with ``LINKTIME_TWILIO_API_BASE`` pointing at it; ``credentials``
is a ``twilio`` integration it accepts.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
from linktime.testing import HttpReceiver, Received, Reply

ACCOUNT_SID = "AC5ef8732a3c49700934481addd5ce1659"
AUTH_TOKEN = "9f3b1c2d4e5f60718293a4b5c6d7e8f9"
FROM = "+14155550123"
SERVICE_SID = "MG0123456789abcdef0123456789abcdef"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CALLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"

# Twilio's test numbers (https://www.twilio.com/docs/iam/test-credentials): messages and calls
# to these, the real API refuses as below.
MESSAGE_REFUSED = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
CALL_REFUSED = {
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
class Sent:
    """A message Twilio accepted: the form fields it received."""

    to: str
    body: str
    from_: str | None
    messaging_service_sid: str | None
    sid: str


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


def _created(kind: str, sid: str, fields: dict[str, Any]) -> Reply:
    """A 201 with the created resource, as Twilio answers a create."""
    answer = {
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "direction": "outbound-api",
        "price": None,
        "sid": sid,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/{kind}/{sid}.json",
        **fields,
    }
    return Reply(201, json.dumps(answer), {"Content-Type": "application/json"})


class FakeTwilio:
    """Checks HTTP Basic auth against ``ACCOUNT_SID``/``AUTH_TOKEN``, the required form fields
    and Twilio's test numbers; records what it accepted in ``sent`` (messages) and ``calls``."""

    ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID = ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID
    error = staticmethod(twilio_error)

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self.url = receiver.url
        self.sent: list[Sent] = []
        self.calls: list[Placed] = []
        self._next: deque[Reply] = deque()
        receiver.handler = self.handle

    def fail_next(self, *replies: Reply) -> None:
        """Answer the next Messages or Calls requests with ``replies`` (auth and fields
        unchecked), then answer as Twilio again."""
        self._next.extend(replies)

    def handle(self, req: Received) -> Reply:
        found = re.fullmatch(r"/2010-04-01/Accounts/(AC\w+)/(Messages|Calls)\.json", req.path)
        if req.method != "POST" or found is None:
            return twilio_error(404, 20404, f"The requested resource {req.path} was not found")
        if self._next:
            return self._next.popleft()
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if req.headers.get("authorization") != f"Basic {expected}" or found[1] != ACCOUNT_SID:
            return twilio_error(401, 20003, "Authenticate")
        form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        if found[2] == "Messages":
            return self._message(form)
        return self._call(form)

    def _message(self, form: dict[str, str]) -> Reply:
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
        if to in MESSAGE_REFUSED:
            return twilio_error(400, *MESSAGE_REFUSED[to])
        sid = "SM" + secrets.token_hex(16)
        self.sent.append(Sent(to, body, sender, service, sid))
        fields = {
            "body": body,
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "1",
            "price_unit": "USD",
            "status": "accepted" if service and not sender else "queued",
            "to": to,
        }
        return _created("Messages", sid, fields)

    def _call(self, form: dict[str, str]) -> Reply:
        to, sender, twiml = form.get("To"), form.get("From"), form.get("Twiml")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not sender:
            return twilio_error(400, 21213, "No 'From' number is specified")
        if not (twiml or form.get("Url") or form.get("ApplicationSid")):
            return twilio_error(400, 21205, "Url parameter is required.")
        if to in CALL_REFUSED:
            return twilio_error(400, *CALL_REFUSED[to])
        sid = "CA" + secrets.token_hex(16)
        self.calls.append(Placed(to, sender, twiml or "", sid))
        fields = {"answered_by": None, "duration": None, "from": sender, "status": "queued"}
        return _created("Calls", sid, {**fields, "to": to})


@pytest.fixture
def twilio(http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    """The stand-in Twilio, with the Twilio channels pointed at it."""
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", http_receiver.url)
    yield FakeTwilio(http_receiver)


@pytest.fixture
def credentials() -> dict[str, str]:
    """A ``twilio`` integration the stand-in accepts."""
    return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM}
