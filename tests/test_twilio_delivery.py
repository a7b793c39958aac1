"""Twilio's delivery reports and opt-outs end to end: the product runs as a real server on
loopback (uvicorn, ``LINKTIME_PUBLIC_URL`` pointing at it) with a worker on PostgreSQL and Redis;
sms.send and voice.call reach the loopback stand-in Twilio through the official ``twilio``
client, and the stand-in posts status callbacks and inbound messages back, signed as Twilio
signs them (``RequestValidator``'s algorithm). What a user sees is read through the API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from linktime.accounts import NewAccount
from linktime.api import create_app
from linktime.models import sample_event
from linktime.services import account_key
from linktime_twilio_testing import ACCOUNT_SID, AUTH_TOKEN, FROM, MESSAGES, FakeTwilio
from linktime_twilio_testing import credentials as credentials
from linktime_twilio_testing import twilio as twilio

from .conftest import System
from .procs import free_port

INVITEE = "+14155550101"  # the sample booking's invitee
HOST = "+14155550100"  # and its host
SMS = {"action": "sms.send", "settings": {"text": "Hi {{ invitee.name }}, see you soon"}}
TO_HOST = {"action": "sms.send", "settings": {"to": "host", "text": "Booked: {{ invitee.name }}"}}
CALL = {"action": "voice.call", "settings": {"script": "Hello {{ invitee.name }}"}}


@dataclass
class Live:
    system: System
    url: str
    http: httpx.Client

    def account(self) -> tuple[NewAccount, dict[str, str]]:
        account = self.system.account("business")
        return account, {"Authorization": f"Bearer {account.api_key}"}

    def connect(self, headers: dict[str, str], **changes: str) -> httpx.Response:
        settings = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM}
        return self.http.put(
            "/v1/integrations/twilio", json={**settings, **changes}, headers=headers
        )

    def run(self, account: NewAccount, headers: dict[str, str], event_id: str) -> dict[str, Any]:
        """Emit a booking for ``account`` through the API; its one run, once finished."""
        event = sample_event().model_dump(mode="json") | {"id": event_id}
        answer = self.http.post("/v1/events", json=event, headers=headers)
        assert answer.status_code == 202, answer.text
        [run_id] = [r["id"] for r in answer.json()["runs"]]
        self.system.wait_run(account, run_id)
        return self.get_run(headers, run_id)

    def get_run(self, headers: dict[str, str], run_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/runs/{run_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        run: dict[str, Any] = answer.json()
        return run

    def callback_url(self, account: NewAccount) -> str:
        key = account_key(self.system.hub.secret_key(), account.id)
        return f"{self.url}/v1/callbacks/twilio/{key}"

    def suppressed(self, headers: dict[str, str]) -> dict[str, str]:
        answer = self.http.get("/v1/suppressions", headers=headers)
        assert answer.status_code == 200, answer.text
        return {item["address"]: item["source"] for item in answer.json()["items"]}


@pytest.fixture
def live(
    make_system: Callable[..., System], allow_loopback: None, twilio: FakeTwilio
) -> Iterator[Live]:
    """The product as a real server on loopback, its public URL that address."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    system = make_system(public_url=url)
    system.start()
    config = uvicorn.Config(
        create_app(system.hub), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as http:
            yield Live(system, url, http)
    finally:
        server.should_exit = True
        thread.join(10)


def attempt(run: dict[str, Any], position: int = 0) -> dict[str, Any]:
    last: dict[str, Any] = run["steps"][position]["attempt_log"][-1]
    return last


def delivery(live: Live, headers: dict[str, str], run: dict[str, Any]) -> tuple[Any, ...]:
    """The first step's delivery status, error code and when it last changed, as read now."""
    now = attempt(live.get_run(headers, run["id"]))
    return now["delivery_status"], now["delivery_error_code"], now["delivery_updated_at"]


def test_sms_reports_land_in_the_attempt_forged_replayed_and_late_ones_change_nothing(
    live: Live, twilio: FakeTwilio
) -> None:
    account, headers = live.account()
    assert live.connect(headers).status_code == 200
    live.system.workflow(account, [SMS, TO_HOST])
    run = live.run(account, headers, "evt_twilio_report")
    [sent, to_host] = twilio.sent
    assert sent.status_callback == live.callback_url(account)
    assert (attempt(run)["external_id"], attempt(run)["delivery_status"]) == (sent.sid, "accepted")

    assert [r.status_code for r in twilio.report(sent.sid, "queued", "sent")] == [200, 200]
    status, _, sent_at = delivery(live, headers, run)
    assert status == "sent" and sent_at is not None

    # A forged report (signed with another token) answers 403 and changes nothing.
    params = twilio.report_params(sent.sid, "undelivered", 30003)
    forged = twilio.post(sent.status_callback or "", params, signature="bm90IFR3aWxpbw==")
    assert forged.status_code == 403
    assert delivery(live, headers, run) == ("sent", None, sent_at)

    [delivered] = twilio.report(sent.sid, "delivered")
    assert delivered.status_code == 200
    status, code, delivered_at = delivery(live, headers, run)
    assert (status, code) == ("delivered", None) and delivered_at >= sent_at

    # Twilio retries and reorders its callbacks: a replay or an earlier status changes nothing.
    replayed = twilio.report(
        sent.sid, "delivered", "sent", "queued", "undelivered", error_code=30003
    )
    assert [r.status_code for r in replayed] == [200] * 4
    assert delivery(live, headers, run) == ("delivered", None, delivered_at)

    # The host's text did not arrive: the step still succeeded (Twilio took it), and says why.
    twilio.report(to_host.sid, "queued", "sent", "undelivered", error_code=30003)
    now = attempt(live.get_run(headers, run["id"]), 1)
    assert (now["status"], now["delivery_status"], now["delivery_error_code"]) == (
        "succeeded",
        "undelivered",
        "twilio_30003",
    )
    assert "unreachable handset" in now["delivery_error"]


def test_call_statuses_land_in_the_attempt(live: Live, twilio: FakeTwilio) -> None:
    account, headers = live.account()
    assert live.connect(headers).status_code == 200
    live.system.workflow(account, [CALL])
    run = live.run(account, headers, "evt_twilio_call")
    [call] = twilio.calls
    assert call.status_callback == live.callback_url(account)
    assert call.status_callback_event == ("initiated", "ringing", "answered", "completed")

    twilio.report(call.sid, "initiated", "ringing")
    assert delivery(live, headers, run)[0] == "sent"
    twilio.report(call.sid, "in-progress", "completed")
    assert delivery(live, headers, run)[:2] == ("delivered", None)


def test_stop_then_a_workflow_sends_nothing_to_that_number_and_goes_on(
    live: Live, twilio: FakeTwilio
) -> None:
    account, headers = live.account()
    assert live.connect(headers).status_code == 200
    live.system.workflow(account, [SMS, TO_HOST])

    # A STOP not signed with the account's auth token is refused and changes nothing.
    url = live.callback_url(account)
    params = {"From": INVITEE, "To": FROM, "Body": "STOP", "MessageSid": "SM" + "2" * 32}
    assert twilio.post(url, params, signature=twilio.sign(url + "x", params)).status_code == 403
    assert live.suppressed(headers) == {}

    replied = twilio.inbound(url, INVITEE, " Stop ")
    assert replied.status_code == 200
    assert replied.headers["content-type"].startswith("text/xml")
    assert replied.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert live.suppressed(headers) == {INVITEE: "sms_stop"}

    run = live.run(account, headers, "evt_twilio_stopped")

    assert [s["status"] for s in run["steps"]] == ["opted_out", "succeeded"]
    assert attempt(run)["delivery_status"] == "opted_out"
    assert [s.to for s in twilio.sent] == [HOST]
    assert [
        r for r in twilio.receiver.requests if r.path == MESSAGES and INVITEE[1:] in r.body.decode()
    ] == []

    # START takes the number off the list: the next booking texts it again.
    assert twilio.inbound(live.callback_url(account), INVITEE, "start").status_code == 200
    assert live.suppressed(headers) == {}
    run = live.run(account, headers, "evt_twilio_started")
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
    assert [s.to for s in twilio.sent] == [HOST, INVITEE, HOST]


def test_twilio_refusing_an_unsubscribed_number_puts_it_on_the_list(
    live: Live, twilio: FakeTwilio
) -> None:
    account, headers = live.account()
    assert live.connect(headers).status_code == 200
    live.system.workflow(account, [SMS, TO_HOST])
    twilio.unsubscribed.add(INVITEE)  # it texted STOP to the Twilio number directly

    run = live.run(account, headers, "evt_twilio_21610")

    assert [s["status"] for s in run["steps"]] == ["opted_out", "succeeded"]
    assert attempt(run)["error_code"] == "twilio_21610"
    assert live.suppressed(headers) == {INVITEE: "provider"}
    asked = len(twilio.receiver.requests)
    run = live.run(account, headers, "evt_twilio_21610_again")
    assert [s["status"] for s in run["steps"]] == ["opted_out", "succeeded"]
    assert len(twilio.receiver.requests) == asked + 1  # the host's text only


REFUSED = [
    ({"auth_token": "0badc0ffee0badc0ffee0badc0ffee00"}, "auth_token", "Twilio refused"),
    # Twilio answers an account SID it does not know as a wrong token: 401.
    ({"account_sid": "AC" + "1" * 32}, "auth_token", "account SID and auth token"),
    ({"from_number": "+14155550142"}, "from_number", "not one of this Twilio account's"),
    ({"from_number": "+442079460000"}, "from_number", "is a GB number"),
]


def test_connect_refuses_what_twilio_refuses_and_stores_nothing(
    live: Live, twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_SMS_SUPPORTED_COUNTRIES", "US,CA")
    monkeypatch.setenv("LINKTIME_VOICE_SUPPORTED_COUNTRIES", "US,CA")
    twilio.numbers.add("+442079460000")  # owned, but in a country this server does not serve
    _, headers = live.account()

    for changes, field, said in REFUSED:
        answer = live.connect(headers, **changes)

        assert answer.status_code == 422, answer.text
        fields = {f["field"]: f["message"] for f in answer.json()["fields"]}
        assert list(fields) == [field] and said in fields[field], changes
        assert AUTH_TOKEN not in answer.text
        shown = live.http.get("/v1/integrations/twilio", headers=headers).json()
        assert shown["connected"] is False
    assert live.connect(headers).status_code == 200
