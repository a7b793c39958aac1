"""Every channel end to end: one booking event runs email → SMS → Slack → voice on a running
system (PostgreSQL, a Redis broker, an in-process Dramatiq worker and the scheduler) against
real peers on loopback: an aiosmtpd SMTP server that requires a login, the stand-in Twilio
(``linktime_twilio_testing``) and the stand-in Slack (``linktime_slack_testing``). Then: no
secret in any log line, API answer or stored attempt, also when Twilio and Slack refuse."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from linktime import integrations
from linktime.accounts import NewAccount
from linktime.api import create_app
from linktime.models import BookingEvent, sample_event
from linktime.storage import Run
from linktime.testing import HttpReceiver, Reply
from linktime_email_testing import SmtpPeer
from linktime_slack_testing import TOKEN as SLACK_TOKEN
from linktime_slack_testing import FakeSlack
from linktime_twilio_testing import ACCOUNT_SID, AUTH_TOKEN, CALLS, FROM, MESSAGES, FakeTwilio
from litestar.testing import TestClient

from .conftest import System

SENDER = "bookings@linktime.example"
SMTP_USER = "relay-user"
SMTP_PASSWORD = "e2e-Relay-Pa55word-4f1c"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"e2e webhook signing key, 32 b!!").decode()
# What an account with wrong credentials (and a relay login gone stale) brings along.
WRONG_TWILIO_TOKEN = "0badc0ffee0badc0ffee0badc0ffee00"
WRONG_SLACK_TOKEN = "xoxb-9999-8888-Wr0ngB0tT0kenQ"
WRONG_SMTP_PASSWORD = "e2e-Stale-Pa55word-9d2e"
WRONG_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"another signing key, 32 bytes!!").decode()

WHEN = "Thursday, December 3, 2026 9:00 AM EST"  # the start in the invitee's timezone
STEPS: list[dict[str, Any]] = [
    {
        "action": "email.send",
        "settings": {
            "to_invitee": True,
            "subject": "Confirmed: {{ event_type.title }} with {{ host.name }}",
            "text": "Hi {{ attendee_first_name }}, see you on {{ booking.start | localtime }}.",
        },
    },
    {
        "action": "sms.send",
        "settings": {
            "to": "invitee",
            "text": "Hi {{ attendee_first_name }}, {{ event_type.title }}: "
            "{{ booking.start | localtime }}",
        },
    },
    {
        "action": "slack.post",
        "settings": {
            "channel": "#sales",
            "text": "New booking: {{ attendee_name }}, {{ event_type.title }}, "
            "{{ booking.start | localtime }}",
        },
    },
    {
        "action": "voice.call",
        "settings": {
            "mode": "say",
            "script": "Hello {{ attendee_first_name }}, a reminder of your "
            "{{ event_type.title }} on {{ booking.start | localtime }}.",
        },
    },
]


def booking(event_id: str) -> BookingEvent:
    """The sample booking, made distinct: another invitee, event type and time."""
    data = sample_event().model_dump(mode="json")
    data["id"] = event_id
    data["booking"].update(
        uid=f"bk_{event_id}",
        event_type={"id": "et_9", "slug": "orbit-review", "title": "Orbit review"},
        start="2026-12-03T14:00:00Z",
        end="2026-12-03T14:45:00Z",
        invitee={
            "name": "Katherine Johnson",
            "email": "katherine@example.com",
            "phone": "+1 415 555 0142",
            "timezone": "America/New_York",
        },
    )
    return BookingEvent.model_validate(data)


def relay_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """The relay accepts SMTP_USER with SMTP_PASSWORD (aiosmtpd's authenticator)."""
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (SMTP_USER, SMTP_PASSWORD)
    return AuthResult(success=ok, handled=False, auth_data=SMTP_USER if ok else None)


@dataclass
class Peers:
    smtp: SmtpPeer
    twilio: FakeTwilio
    slack: FakeSlack


@pytest.fixture
def peers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Peers]:
    """The three providers on loopback, and every channel's operator settings pointing at them."""
    prefixes = ("LINKTIME_EMAIL_", "LINKTIME_SMS_", "LINKTIME_VOICE_", "LINKTIME_SLACK_")
    for name in list(os.environ):
        if name.startswith(prefixes) or name.lower() in ("https_proxy", "http_proxy"):
            monkeypatch.delenv(name)
    # Plain SMTP with a login: the relay takes AUTH without TLS here (loopback only).
    smtp = SmtpPeer(authenticator=relay_login, auth_require_tls=False)
    twilio, slack = HttpReceiver(), HttpReceiver()
    try:
        fake_slack = FakeSlack(slack)
        for name, value in {
            "LINKTIME_EMAIL_SMTP_HOST": "127.0.0.1",
            "LINKTIME_EMAIL_SMTP_PORT": str(smtp.port),
            "LINKTIME_EMAIL_SMTP_USER": SMTP_USER,
            "LINKTIME_EMAIL_SMTP_PASSWORD": SMTP_PASSWORD,
            "LINKTIME_EMAIL_FROM_ADDRESS": SENDER,
            "LINKTIME_EMAIL_TIMEOUT": "5",
            "LINKTIME_TWILIO_API_BASE": twilio.url,
            "LINKTIME_SMS_TIMEOUT": "5",
            "LINKTIME_VOICE_TIMEOUT": "5",
            "LINKTIME_SLACK_API_BASE": fake_slack.api_base,
            "LINKTIME_SLACK_TIMEOUT": "5",
        }.items():
            monkeypatch.setenv(name, value)
        yield Peers(smtp, FakeTwilio(twilio), fake_slack)
    finally:
        smtp.close()
        twilio.close()
        slack.close()


def connect_all(
    system: System,
    account: NewAccount,
    twilio_token: str = AUTH_TOKEN,
    slack_token: str = SLACK_TOKEN,
) -> None:
    """Connect the account's integrations, as PUT /v1/integrations/{name} does."""
    hub = system.hub
    twilio = {"account_sid": ACCOUNT_SID, "auth_token": twilio_token, "from_number": FROM}
    integrations.connect(hub, account.id, "twilio", twilio)
    integrations.connect(hub, account.id, "slack", {"bot_token": slack_token})
    email = {"from_name": "Acme Bookings", "reply_to": "help@acme.example"}
    integrations.connect(hub, account.id, "email", email)


def run_once(system: System, account: NewAccount, event: BookingEvent) -> list[Run]:
    """Emit ``event`` and wait for every run it starts to finish."""
    run_ids = system.hub.emit(event, account_id=account.id).run_ids
    assert run_ids
    return [system.wait_run(account, run_id) for run_id in run_ids]


def test_one_booking_goes_out_by_email_sms_slack_and_voice_in_order(
    system: System, peers: Peers
) -> None:
    account = system.account("business")
    connect_all(system, account)
    system.workflow(account, STEPS, name="Confirm everywhere")

    [run] = run_once(system, account, booking("evt_e2e_all"))

    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    assert [(s.action, s.status) for s in run.steps] == [
        (step["action"], "succeeded") for step in STEPS
    ]

    # Each peer got its one message, rendered from this booking.
    [mail] = peers.smtp.delivered
    message = mail.message
    assert (mail.mail_from, mail.rcpt_tos, mail.login) == (
        SENDER,
        ["katherine@example.com"],
        SMTP_USER,
    )
    assert message["Subject"] == "Confirmed: Orbit review with Ada Lovelace"
    assert message["From"] == f"Acme Bookings <{SENDER}>"
    assert message["Reply-To"] == "help@acme.example"
    assert message.get_content().strip() == f"Hi Katherine, see you on {WHEN}."
    [sms] = peers.twilio.sent
    assert (sms.to, sms.from_, sms.body) == (
        "+14155550142",
        FROM,
        f"Hi Katherine, Orbit review: {WHEN}",
    )
    [posted] = peers.slack.received()
    assert posted["channel"] == "#sales"
    assert posted["text"] == f"New booking: Katherine Johnson, Orbit review, {WHEN}"
    [call] = peers.twilio.calls
    [said] = call.response
    assert (call.to, call.from_) == ("+14155550142", FROM)
    assert (said.tag, said.text) == (
        "Say",
        f"Hello Katherine, a reminder of your Orbit review on {WHEN}.",
    )

    # ... in the workflow's order.
    [sms_request] = [r for r in peers.twilio.receiver.requests if r.path == MESSAGES]
    [call_request] = [r for r in peers.twilio.receiver.requests if r.path == CALLS]
    [slack_request] = peers.slack.receiver.requests
    assert mail.at < sms_request.at < slack_request.at < call_request.at

    # Every attempt is logged with the provider's id for what it sent.
    for step in run.steps:
        [attempt] = step.attempt_log
        assert (attempt.number, attempt.status, attempt.error) == (1, "succeeded", None)
        assert attempt.external_id == step.external_id
    ids = {s.action: s.attempt_log[0].external_id for s in run.steps}
    assert ids == {
        "email.send": message["Message-ID"],
        "sms.send": sms.sid,
        "slack.post": f"C0SALES01/{1764601200 + peers.slack.posted}.000100",
        "voice.call": call.sid,
    }
    assert sms.sid.startswith("SM") and call.sid.startswith("CA")
    assert [s.attempt_log[0].http_status for s in run.steps] == [None, 201, 200, 201]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SECRETS = {
    "twilio auth token": AUTH_TOKEN,
    "wrong twilio auth token": WRONG_TWILIO_TOKEN,
    "twilio basic auth": b64(f"{ACCOUNT_SID}:{AUTH_TOKEN}"),
    "wrong twilio basic auth": b64(f"{ACCOUNT_SID}:{WRONG_TWILIO_TOKEN}"),
    "slack bot token": SLACK_TOKEN,
    "wrong slack bot token": WRONG_SLACK_TOKEN,
    "smtp password": SMTP_PASSWORD,
    "wrong smtp password": WRONG_SMTP_PASSWORD,
    "smtp AUTH LOGIN password": b64(SMTP_PASSWORD),
    "smtp AUTH PLAIN": b64(f"\0{SMTP_USER}\0{SMTP_PASSWORD}"),
    "webhook signing secret": WEBHOOK_SECRET,
    "webhook signing key": WEBHOOK_SECRET.removeprefix("whsec_"),
    "wrong webhook signing secret": WRONG_WEBHOOK_SECRET,
}


def leaked(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_no_secret_in_logs_api_answers_or_stored_attempts(
    system: System,
    peers: Peers,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    http_receiver.script("/refuses", Reply(401, "signature does not verify"))
    webhook = {"action": "webhook.call"}

    # An account whose every step succeeds, a webhook last.
    good = system.account("business")
    connect_all(system, good)
    hook = {**webhook, "settings": {"url": f"{http_receiver.url}/hooks", "secret": WEBHOOK_SECRET}}
    system.workflow(good, [*STEPS, hook], name="Everywhere")
    [good_run] = run_once(system, good, booking("evt_e2e_good"))
    assert good_run.status == "succeeded", [(s.action, s.error) for s in good_run.steps]

    # An account with a wrong Twilio token and a revoked Slack token, while the relay login has
    # gone stale and the webhook receiver refuses: one workflow per channel, so each fails.
    bad = system.account("business")
    # The Twilio token was right when connected (Twilio checks it then), and has since been
    # changed on Twilio's console.
    peers.twilio.auth_token = WRONG_TWILIO_TOKEN
    connect_all(system, bad, twilio_token=WRONG_TWILIO_TOKEN, slack_token=WRONG_SLACK_TOKEN)
    peers.twilio.auth_token = AUTH_TOKEN
    refused = {"url": f"{http_receiver.url}/refuses", "secret": WRONG_WEBHOOK_SECRET}
    for step in [*STEPS, {**webhook, "settings": refused}]:
        system.workflow(bad, [step], name=f"Only {step['action']}")
    monkeypatch.setenv("LINKTIME_EMAIL_SMTP_PASSWORD", WRONG_SMTP_PASSWORD)
    bad_runs = run_once(system, bad, booking("evt_e2e_bad"))

    outcomes = sorted((r.steps[0].action, r.status, r.steps[0].error_code) for r in bad_runs)
    assert outcomes == [
        ("email.send", "failed", "auth_failed"),
        ("slack.post", "failed", "slack_invalid_auth"),
        ("sms.send", "failed", "twilio_20003"),
        ("voice.call", "failed", "twilio_20003"),
        ("webhook.call", "failed", "http_401"),
    ]

    # The logs: every record of the whole run, formatted, with its arguments.
    assert any(r.name.startswith("twilio") for r in caplog.records), "worker logs are captured"
    assert leaked(caplog.text) == []
    for record in caplog.records:
        assert leaked(f"{record.getMessage()} {record.args!r} {record.exc_text}") == [], record

    # The API: the runs with their attempts, the workflows, the integrations.
    answers: dict[str, str] = {}
    with TestClient(create_app(system.hub)) as client:
        for account, runs in ((good, [good_run]), (bad, bad_runs)):
            auth = {"Authorization": f"Bearer {account.api_key}"}
            paths = [f"/v1/runs/{run.id}" for run in runs]
            paths += ["/v1/workflows", "/v1/integrations", "/v1/integrations/twilio"]
            for path in paths:
                answer = client.get(path, headers=auth)
                assert answer.status_code == 200, (path, answer.text)
                answers[f"{account.id} {path}"] = answer.text
    assert {where: leaked(text) for where, text in answers.items() if leaked(text)} == {}
    assert "Twilio authentication failed" in "".join(answers.values())
    assert '"auth_token":"********"' in "".join(answers.values())

    # The database: every attempt row (errors, response excerpts, ids), step and run.
    with system.hub.db.connect() as conn:
        query = "SELECT row_to_json(a)::text FROM attempts a"
        attempts: list[str] = list(conn.exec_driver_sql(query).scalars())
        others = conn.exec_driver_sql(
            "SELECT row_to_json(s)::text FROM run_steps s "
            "UNION ALL SELECT row_to_json(r)::text FROM runs r"
        ).scalars()
        rows = [*attempts, *others]
    assert len(attempts) >= 10
    assert any("invalid_auth" in row for row in attempts)
    assert any("Twilio authentication failed" in row for row in attempts)
    assert [row for row in rows if leaked(row)] == []
