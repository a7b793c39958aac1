"""voice.call through the official twilio client against a stand-in Twilio on loopback."""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

import pytest
from linktime import integrations, workflows
from linktime.accounts import create_account
from linktime.actions import Outcome, Result
from linktime.errors import InputError
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.testing import RunAction, event_with

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime_twilio_testing import FakeTwilio

SCRIPT = (
    "Hello {{ attendee_first_name }} & co: your <{{ event_type.title }}> "
    "is on {{ booking.start | localtime }}."
)
SAID = "Hello Grace & co: your <Intro call> is on Tuesday, December 1, 2026 10:00 AM EST."
AGENT_URL = "wss://agent.example.com/twilio/stream?tenant=acme&v=2"


def say(**settings: Any) -> dict[str, Any]:
    return {"mode": "say", "script": SCRIPT, **settings}


# --- the two modes -------------------------------------------------------------------------------


def test_say_speaks_the_rendered_script(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    settings = say(voice="Polly.Joanna", language="en-US")
    result = run_action("voice.call", settings, credentials=credentials)

    [call] = twilio.calls
    assert (call.to, call.from_) == ("+14155550101", twilio.FROM)
    assert call.twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Say language="en-US" voice="Polly.Joanna">'
        "Hello Grace &amp; co: your &lt;Intro call&gt; "
        "is on Tuesday, December 1, 2026 10:00 AM EST."
        "</Say></Response>"
    )
    [spoken] = call.response
    assert (spoken.tag, spoken.text) == ("Say", SAID)
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.external_id, result.http_status) == (call.sid, 201)
    assert result.external_id.startswith("CA")


def test_say_without_voice_or_language_leaves_twilio_defaults(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    run_action("voice.call", say(to="host"), credentials=credentials)
    [call] = twilio.calls
    assert call.to == "+14155550100"
    [spoken] = call.response
    assert spoken.attrib == {}


def test_agent_mode_streams_the_call_with_the_booking(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINKTIME_VOICE_AGENT_URL", AGENT_URL)
    event = event_with(invitee={"name": 'Grace "Amazing" O\'Hara & Co'})
    result = run_action("voice.call", {"mode": "agent"}, event, credentials=credentials)

    assert result.outcome is Outcome.SUCCEEDED, result.error
    [call] = twilio.calls
    [connect] = call.response
    [stream] = connect
    assert (connect.tag, stream.tag, stream.get("url")) == ("Connect", "Stream", AGENT_URL)
    assert 'url="wss://agent.example.com/twilio/stream?tenant=acme&amp;v=2"' in call.twiml
    parameters = {p.get("name"): p.get("value") for p in stream}
    assert [p.tag for p in stream] == ["Parameter"] * len(parameters)
    assert parameters == {
        "booking_uid": "bk_sample",
        "invitee_name": 'Grace "Amazing" O\'Hara & Co',
        "start_time": "2026-12-01T10:00:00-05:00",
        "timezone": "America/New_York",
        "event_type": "Intro call",
        "workflow_id": "wf_test",
        "trigger": "booking.created",
    }


def test_agent_mode_without_an_agent_url_fails_clearly(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    result = run_action("voice.call", {"mode": "agent"}, credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "agent_not_configured")
    assert result.error == (
        "AI voice agent calls are not available: the operator has not set LINKTIME_VOICE_AGENT_URL"
    )
    assert twilio.receiver.requests == []


def test_an_agent_url_that_is_not_wss_is_an_operator_error(
    run_action: RunAction, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_VOICE_AGENT_URL", "https://agent.example.com/stream")
    result = run_action("voice.call", {"mode": "agent"}, credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "operator_settings")
    assert result.error is not None and "must be a wss:// URL" in result.error


# --- credentials -----------------------------------------------------------------------------


def test_not_connected_fails_permanently(run_action: RunAction, twilio: FakeTwilio) -> None:
    result = run_action("voice.call", say(), credentials=None)
    assert result.outcome is Outcome.FAILED
    assert result.error == "Twilio is not connected: connect it in Settings."
    assert result.error_code == "not_connected"
    assert twilio.receiver.requests == []


@pytest.mark.parametrize(
    "sender",
    [{"from_number": None, "messaging_service_sid": "MG" + "ab" * 16}, {"from_number": "LinkTime"}],
    ids=["messaging-service", "sender-id"],
)
def test_calls_need_a_phone_number_to_call_from(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str], sender: dict[str, Any]
) -> None:
    creds = {k: v for k, v in {**credentials, **sender}.items() if v is not None}
    result = run_action("voice.call", say(), credentials=creds)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "no_from_number")
    assert result.error is not None and "set from_number (E.164)" in result.error
    assert twilio.receiver.requests == []


# --- numbers and countries -----------------------------------------------------------------------


def save(hub: Hub, settings: dict[str, Any]) -> InputError | None:
    """Save a one-step workflow through the core, as POST /v1/workflows does; its refusal."""
    account = create_account(hub, "Acme", "business")
    step = workflows.StepIn(action="voice.call", settings=settings)
    spec = workflows.WorkflowIn(name="Call", trigger="booking.created", steps=[step])
    try:
        workflows.create(hub, account.id, spec)
    except InputError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        (say(to="number", number="+81 3-1234-5678"), "number", "+81312345678 is a JP number"),
        (say(to="number", number="0049 30 123456"), "number", "international format"),
        ({"mode": "say"}, "script", "Enter the script for the call to say"),
        (say(script="{{ invitee.shoe_size }}"), "script", "unknown field 'shoe_size'"),
        (say(language="en US"), "language", "should match pattern"),
    ],
)
def test_bad_settings_are_refused_on_save(
    linktime_hub: Hub, settings: dict[str, Any], field: str, message: str
) -> None:
    refused = save(linktime_hub, settings)
    assert refused is not None
    [problem] = refused.fields
    assert problem.field == f"steps.0.settings.{field}"
    assert message in problem.message


def test_agent_mode_needs_no_script(linktime_hub: Hub) -> None:
    assert save(linktime_hub, {"mode": "agent", "to": "host"}) is None


def test_voice_has_its_own_supported_countries(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINKTIME_SMS_SUPPORTED_COUNTRIES", "US")
    monkeypatch.setenv("LINKTIME_VOICE_SUPPORTED_COUNTRIES", "GB,IE")
    gb = run_action(
        "voice.call", say(to="number", number="+44 20 7946 0000"), credentials=credentials
    )
    us = run_action("voice.call", say(), credentials=credentials)

    assert gb.outcome is Outcome.SUCCEEDED
    assert (us.outcome, us.error_code) == (Outcome.FAILED, "unsupported_country")
    assert us.error == "+14155550101 is a US number; this service sends only to GB, IE"
    assert [c.to for c in twilio.calls] == ["+442079460000"]


def test_an_invitee_without_a_phone_is_not_called(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    event = event_with(invitee={"phone": None})
    result = run_action("voice.call", say(), event, credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "no_phone_number")
    assert twilio.receiver.requests == []


# --- through the core ----------------------------------------------------------------------------
# How Twilio's answers (401, refusals, 429 and 5xx, connection errors) become results, and the
# twilio integration's rules, are the shared linktime-twilio's, tested there.


def test_end_to_end_through_the_core(
    linktime_hub: Hub,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connect Twilio as PUT /v1/integrations/twilio does, save a workflow, emit a booking."""
    monkeypatch.setenv("LINKTIME_VOICE_AGENT_URL", AGENT_URL)
    account = create_account(linktime_hub, "Acme", "business")
    shown = integrations.connect(linktime_hub, account.id, "twilio", credentials)
    assert shown.settings is not None and shown.settings["auth_token"] == "********"
    spec = workflows.WorkflowIn(
        name="Agent calls the invitee",
        trigger="booking.created",
        enabled=True,
        steps=[workflows.StepIn(action="voice.call", settings={"mode": "agent"})],
    )
    workflow, _ = workflows.create(linktime_hub, account.id, spec)

    [run_id] = linktime_hub.emit(sample_event(), account_id=account.id).run_ids
    linktime_hub.process_run(run_id)

    [call] = twilio.calls
    parameters = {p.get("name"): p.get("value") for p in call.response.iter("Parameter")}
    assert parameters["workflow_id"] == workflow.id
    [step] = get_run(linktime_hub, account.id, run_id).steps
    assert (step.status, step.external_id) == ("succeeded", call.sid)


def test_no_secret_reaches_logs_or_results(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "0badc0ffee0badc0ffee0badc0ffee00"
    results: list[Result] = [run_action("voice.call", say(), credentials=credentials)]
    results.append(
        run_action("voice.call", say(), credentials={**credentials, "auth_token": wrong})
    )
    twilio.fail_next(twilio.error(500, 20500, "Internal Server Error"))
    results.append(run_action("voice.call", say(), credentials=credentials))
    refused = say(to="number", number="+15005550003")
    results.append(run_action("voice.call", refused, credentials=credentials))
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", "http://127.0.0.1:1")
    results.append(run_action("voice.call", say(), credentials=credentials))

    assert [r.outcome for r in results] == [
        Outcome.SUCCEEDED,
        Outcome.FAILED,
        Outcome.RETRY,
        Outcome.FAILED,
        Outcome.RETRY,
    ]
    assert caplog.records, "the twilio client logs its requests"
    basic = base64.b64encode(f"{twilio.ACCOUNT_SID}:{twilio.AUTH_TOKEN}".encode()).decode()
    for secret in (twilio.AUTH_TOKEN, wrong, basic):
        assert secret not in caplog.text
        for result in results:
            assert secret not in repr(result)
