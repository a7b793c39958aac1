"""A stand-in for Twilio's REST API on a loopback server, answering the way Twilio does: the
Messages API (``sms.send``) and the Calls API (``voice.call``) of one test account, the fetches
a connect checks the settings with (the account, its incoming phone numbers, its messaging
services), and Twilio's side of the callbacks: signed status reports of what it accepted
(``report``) and signed inbound messages (``inbound``), posted as Twilio posts them.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
import requests
from linktime import integrations, suppressions, workflows
from linktime.accounts import create_account
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.storage import Run
from linktime.testing import HttpReceiver, Received, Reply
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

ACCOUNT_SID = "AC5ef8732a3c49700934481addd5ce1659"
AUTH_TOKEN = "9f3b1c2d4e5f60718293a4b5c6d7e8f9"
FROM = "+14155550123"
SERVICE_SID = "MG0123456789abcdef0123456789abcdef"
ACCOUNT = f"/2010-04-01/Accounts/{ACCOUNT_SID}.json"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CALLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
NUMBERS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers.json"
# What Twilio does itself with an inbound message (its default opt-out handling).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})

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
    status_callback: str | None = None


@dataclass(frozen=True)
class Placed:
    """A call Twilio accepted: the form fields it received, the TwiML parsed."""

    to: str
    from_: str
    twiml: str
    sid: str
    status_callback: str | None = None
    status_callback_event: tuple[str, ...] = ()

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
    """Checks HTTP Basic auth against ``ACCOUNT_SID`` and ``auth_token`` (``AUTH_TOKEN`` until a
    test changes it, as a token changed on Twilio's console), the required form fields and
    Twilio's test numbers; records what it accepted in ``sent`` (messages) and ``calls``, each
    with the ``StatusCallback`` it was given. ``numbers`` are the account's incoming phone
    numbers, ``services`` its messaging services; messages to a number in ``unsubscribed``
    (one that texted STOP to ``inbound``) are refused with 21610, as Twilio refuses them."""

    ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID = ACCOUNT_SID, AUTH_TOKEN, FROM, SERVICE_SID
    error = staticmethod(twilio_error)

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self.url = receiver.url
        self.auth_token = AUTH_TOKEN
        self.numbers = {FROM}
        self.services = {SERVICE_SID}
        self.unsubscribed: set[str] = set()
        self.sent: list[Sent] = []
        self.calls: list[Placed] = []
        self._next: deque[Reply] = deque()
        # Twilio's callbacks are posted without a proxy, straight to the product on loopback.
        self._session = requests.Session()
        self._session.trust_env = False
        receiver.handler = self.handle

    def fail_next(self, *replies: Reply) -> None:
        """Answer the next requests (any endpoint) with ``replies`` (auth and fields
        unchecked), then answer as Twilio again."""
        self._next.extend(replies)

    def handle(self, req: Received) -> Reply:
        path, _, query = req.path.partition("?")
        if self._next:
            return self._next.popleft()
        expected = base64.b64encode(f"{ACCOUNT_SID}:{self.auth_token}".encode()).decode()
        if req.headers.get("authorization") != f"Basic {expected}":
            return twilio_error(401, 20003, "Authenticate")
        form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        found = re.fullmatch(r"/2010-04-01/Accounts/(AC\w+)(/\w+)?\.json", path)
        service = re.fullmatch(r"/v1/Services/(MG\w+)", path)
        if found is not None and found[1] == ACCOUNT_SID:
            if (req.method, found[2]) == ("GET", None):
                return _json(200, {"sid": ACCOUNT_SID, "status": "active", "type": "Full"})
            if (req.method, found[2]) == ("GET", "/IncomingPhoneNumbers"):
                return self._numbers(parse_qs(query).get("PhoneNumber", [None])[0])
            if (req.method, found[2]) == ("POST", "/Messages"):
                return self._message(form, req.headers)
            if (req.method, found[2]) == ("POST", "/Calls"):
                return self._call(form, parse_qs(req.body.decode()).get("StatusCallbackEvent", []))
        if service is not None and req.method == "GET" and service[1] in self.services:
            return _json(200, {"sid": service[1], "account_sid": ACCOUNT_SID})
        return twilio_error(404, 20404, f"The requested resource {path} was not found")

    def _numbers(self, number: str | None) -> Reply:
        owned = [n for n in sorted(self.numbers) if number in (None, n)]
        listed = [{"phone_number": n, "account_sid": ACCOUNT_SID} for n in owned]
        return _json(200, {"incoming_phone_numbers": listed, "page": 0, "page_size": 50})

    def _message(self, form: dict[str, str], headers: Mapping[str, str]) -> Reply:
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
        if to.removeprefix("whatsapp:") in self.unsubscribed:
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = "SM" + secrets.token_hex(16)
        self.sent.append(Sent(to, body, sender, service, sid, form.get("StatusCallback")))
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

    def _call(self, form: dict[str, str], events: list[str]) -> Reply:
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
        callback = form.get("StatusCallback")
        self.calls.append(Placed(to, sender, twiml or "", sid, callback, tuple(events)))
        fields = {"answered_by": None, "duration": None, "from": sender, "status": "queued"}
        return _created("Calls", sid, {**fields, "to": to})

    # --- Twilio's side of the callbacks ------------------------------------------------------

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """``X-Twilio-Signature`` as Twilio computes it: HMAC-SHA1 with the auth token over the
        URL followed by each parameter's name and value, sorted by name."""
        return str(RequestValidator(self.auth_token).compute_signature(url, dict(params)))

    def post(
        self, url: str, params: Mapping[str, str], *, signature: str | None = None
    ) -> requests.Response:
        """Post ``params`` as Twilio posts a webhook: a form, signed (or with ``signature``)."""
        headers = {
            "X-Twilio-Signature": self.sign(url, params) if signature is None else signature,
            "User-Agent": "TwilioProxy/1.1",
        }
        return self._session.post(url, data=dict(params), headers=headers, timeout=10)

    def report_params(self, sid: str, status: str, error_code: int | None = None) -> dict[str, str]:
        """The form of Twilio's status callback of the message or call ``sid`` at ``status``
        (MessageStatus or CallStatus), with ``ErrorCode`` when given."""
        if sid.startswith("CA"):
            [call] = [c for c in self.calls if c.sid == sid]
            params = {"CallSid": sid, "CallStatus": status, "To": call.to, "From": call.from_}
            params |= {"Direction": "outbound-api", "CallbackSource": "call-progress-events"}
        else:
            [message] = [m for m in self.sent if m.sid == sid]
            params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status}
            params |= {"SmsStatus": status, "To": message.to, "From": message.from_ or ""}
        params |= {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01"}
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    def report(
        self, sid: str, *statuses: str, error_code: int | None = None
    ) -> list[requests.Response]:
        """Post, one after another, Twilio's signed status callbacks of the message or call
        ``sid`` to the ``StatusCallback`` it was created with: e.g. ``"queued", "sent",
        "delivered"``, or ``"undelivered"`` with ``error_code=30003`` (the code goes with
        undelivered, failed, busy and no-answer)."""
        accepted: list[Sent | Placed] = [*self.sent, *self.calls]
        [url] = [m.status_callback for m in accepted if m.sid == sid]
        assert url is not None, f"{sid} was created without a StatusCallback"
        ended = {"undelivered", "failed", "busy", "no-answer"}
        return [
            self.post(url, self.report_params(sid, s, error_code if s in ended else None))
            for s in statuses
        ]

    def inbound(
        self, url: str, from_: str, body: str, *, to: str = FROM, **extra: str
    ) -> requests.Response:
        """Post a signed inbound message (From, To, Body and ``extra`` params such as
        ``OptOutType``) to ``url``, as Twilio does to the number's webhook; like Twilio's
        default opt-out handling, STOP makes it refuse later messages to ``from_`` (21610)
        and START lifts that."""
        word = body.strip().upper()
        number = from_.removeprefix("whatsapp:")
        if word in STOP_WORDS:
            self.unsubscribed.add(number)
        elif word in START_WORDS:
            self.unsubscribed.discard(number)
        sid = "SM" + secrets.token_hex(16)
        params = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": ACCOUNT_SID}
        params |= {"From": from_, "To": to, "Body": body, "NumMedia": "0", "SmsStatus": "received"}
        return self.post(url, {**params, "ApiVersion": "2010-04-01", **extra})


def run_workflow(
    hub: Hub,
    credentials: dict[str, str],
    steps: list[workflows.StepIn],
    *,
    plan: str,
    stopped: str | None = None,
) -> Run:
    """Through the core: an account on ``plan`` with Twilio connected and an enabled workflow of
    ``steps``, ``stopped`` (a number) on its opt-out list as a STOP reply puts it, then a
    booking: its run, processed, with its steps and attempts."""
    account = create_account(hub, "Acme", plan)
    integrations.connect(hub, account.id, "twilio", credentials)
    spec = workflows.WorkflowIn(name="Twilio", trigger="booking.created", enabled=True, steps=steps)
    workflows.create(hub, account.id, spec)
    if stopped is not None:
        with hub.db.begin() as conn:
            reason = "replied STOP"
            suppressions.add(conn, account.id, stopped, reason, suppressions.SMS_STOP, hub.clock())
    [run_id] = hub.emit(sample_event(), account_id=account.id).run_ids
    hub.process_run(run_id)
    return get_run(hub, account.id, run_id)


def _json(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, json.dumps(body), {"Content-Type": "application/json"})


@pytest.fixture
def twilio(http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    """The stand-in Twilio, with the Twilio channels pointed at it."""
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", http_receiver.url)
    yield FakeTwilio(http_receiver)


@pytest.fixture
def credentials() -> dict[str, str]:
    """A ``twilio`` integration the stand-in accepts."""
    return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM}
