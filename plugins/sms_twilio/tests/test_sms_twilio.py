"""sms.send through the official twilio client against a stand-in Twilio on loopback."""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

import linktime_sms_twilio
import pytest
from linktime import integrations, workflows
from linktime.accounts import create_account
from linktime.actions import Outcome, Result
from linktime.errors import InputError
from linktime.models import BookingEvent, sample_event
from linktime.runs import get_run
from linktime.testing import Reply, RunAction, event_with

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime_twilio_testing import FakeTwilio

TEXT = "Hi {{ attendee_first_name }}, {{ event_type.title }} is on {{ booking.start | localtime }}"
RENDERED = "Hi Grace, Intro call is on Tuesday, December 1, 2026 10:00 AM EST"


def sms(**settings: Any) -> dict[str, Any]:
    return {"text": TEXT, **settings}


# --- sending ---------------------------------------------------------------------------------


def test_texts_the_invitee_the_rendered_message(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    result = run_action("sms.send", sms(), credentials=credentials)

    [sent] = twilio.sent
    assert (sent.to, sent.from_, sent.messaging_service_sid) == ("+14155550101", twilio.FROM, None)
    assert sent.body == RENDERED
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.external_id, result.http_status) == (sent.sid, 201)
    assert result.external_id.startswith("SM")
    assert result.response_excerpt is not None and sent.sid in result.response_excerpt
    [request] = twilio.receiver.requests
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert f"linktime-sms-twilio/{linktime_sms_twilio.__version__}" in request.headers["user-agent"]


@pytest.mark.parametrize(
    ("settings", "event", "to"),
    [
        ({"to": "host"}, None, "+14155550100"),
        ({"to": "number", "number": "+44 20 7946 0000"}, None, "+442079460000"),
        ({"to": "invitee"}, event_with(invitee={"phone": "+1 (415) 555-0199"}), "+14155550199"),
        (
            {},
            event_with(
                invitee=None,
                invitees=[{"name": "Grace", "phone": "+1 415 555 0177", "timezone": "UTC"}],
            ),
            "+14155550177",
        ),
    ],
    ids=["host", "number", "formatted-phone", "first-of-invitees"],
)
def test_recipient_is_sent_in_e164(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    settings: dict[str, Any],
    event: BookingEvent | None,
    to: str,
) -> None:
    result = run_action("sms.send", sms(**settings), event, credentials=credentials)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert [s.to for s in twilio.sent] == [to]


def test_a_messaging_service_sends_without_a_from_number(
    run_action: RunAction, twilio: FakeTwilio
) -> None:
    creds = {
        "account_sid": twilio.ACCOUNT_SID,
        "auth_token": twilio.AUTH_TOKEN,
        "messaging_service_sid": twilio.SERVICE_SID,
    }
    result = run_action("sms.send", sms(), credentials=creds)
    assert result.outcome is Outcome.SUCCEEDED
    [sent] = twilio.sent
    assert (sent.from_, sent.messaging_service_sid) == (None, twilio.SERVICE_SID)


def test_not_connected_fails_permanently(run_action: RunAction, twilio: FakeTwilio) -> None:
    result = run_action("sms.send", sms(), credentials=None)
    assert result.outcome is Outcome.FAILED
    assert result.error == "Twilio is not connected: connect it in Settings."
    assert result.error_code == "not_connected"
    assert twilio.receiver.requests == []


# --- Twilio's answers ----------------------------------------------------------------------------
# How each answer (401, refusals, 429 and 5xx, connection errors) becomes a result is the shared
# call_twilio's, tested in linktime-twilio; here, what only SMS sees.


def test_geo_permission_refusal_is_permanent(
    run_action: RunAction, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    twilio.fail_next(twilio.error(400, 21408, "Permission to send an SMS has not been enabled"))
    result = run_action("sms.send", sms(), credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "twilio_21408")


def test_a_slow_twilio_is_retried(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINKTIME_SMS_TIMEOUT", "0.3")
    twilio.fail_next(Reply(201, "{}", delay=1.5))
    result = run_action("sms.send", sms(), credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")
    assert result.error == "no answer from Twilio within 0.3s"


# --- numbers and countries -----------------------------------------------------------------------


def save(hub: Hub, steps: list[dict[str, Any]]) -> InputError | None:
    """Save a workflow through the core, as POST /v1/workflows does; its refusal, if any."""
    account = create_account(hub, "Acme", "pro")
    spec = workflows.WorkflowIn(name="SMS", trigger="booking.created", steps=steps)
    try:
        workflows.create(hub, account.id, spec)
    except InputError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("number", "countries", "message"),
    [
        ("+81 3-1234-5678", None, "+81312345678 is a JP number; this service sends only to AU, CA"),
        (
            "+44 20 7946 0000",
            "US,CA",
            "+442079460000 is a GB number; this service sends only to CA, US",
        ),
        ("12345", None, "not a phone number in international format"),
        ("+1 415 555", None, "is not a valid phone number"),
        (None, None, "Enter the phone number to reach"),
    ],
)
def test_a_listed_number_is_refused_on_save(
    linktime_hub: Hub,
    monkeypatch: pytest.MonkeyPatch,
    number: str | None,
    countries: str | None,
    message: str,
) -> None:
    if countries:
        monkeypatch.setenv("LINKTIME_SMS_SUPPORTED_COUNTRIES", countries)
    refused = save(
        linktime_hub, [{"action": "sms.send", "settings": sms(to="number", number=number)}]
    )
    assert refused is not None
    [problem] = refused.fields
    assert problem.field == "steps.0.settings.number"
    assert message in problem.message


def test_a_supported_number_is_saved_in_e164(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_SMS_SUPPORTED_COUNTRIES", "jp, us")
    settings = linktime_sms_twilio.SmsStepSettings(to="number", number="+81 3-1234-5678", text="x")
    assert settings.number == "+81312345678"


def test_an_unknown_template_field_is_refused_on_save(linktime_hub: Hub) -> None:
    refused = save(linktime_hub, [{"action": "sms.send", "settings": {"text": "{{ nope }}"}}])
    assert refused is not None
    assert [(f.field, f.message) for f in refused.fields] == [
        ("steps.0.settings.text", "Value error, line 1: unknown field 'nope'")
    ]


@pytest.mark.parametrize(
    ("invitee", "code", "message"),
    [
        ({"phone": "+81 3-1234-5678"}, "unsupported_country", "+81312345678 is a JP number"),
        ({"phone": "555-0101"}, "invalid_number", "not a phone number in international format"),
        ({"phone": None}, "no_phone_number", "the booking's invitee has no phone number"),
    ],
)
def test_a_recipient_outside_the_rules_is_refused_at_send(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    invitee: dict[str, Any],
    code: str,
    message: str,
) -> None:
    result = run_action("sms.send", sms(), event_with(invitee=invitee), credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, code)
    assert result.error is not None and message in result.error
    assert twilio.receiver.requests == []


def test_the_supported_countries_apply_at_send_too(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINKTIME_SMS_SUPPORTED_COUNTRIES", "GB")
    result = run_action("sms.send", sms(to="host"), credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "unsupported_country")
    assert result.error == "+14155550100 is a US number; this service sends only to GB"
    assert twilio.receiver.requests == []


def test_bad_operator_settings_are_retried(
    run_action: RunAction, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_SMS_SUPPORTED_COUNTRIES", "US,XX")
    result = run_action("sms.send", sms(to="host"), credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "operator_settings")
    assert result.error is not None and "XX" in result.error


# --- the twilio integration ----------------------------------------------------------------------


def test_end_to_end_through_the_core(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    """Connect Twilio as PUT /v1/integrations/twilio does, save a workflow, emit a booking."""
    account = create_account(linktime_hub, "Acme", "pro")
    shown = integrations.connect(linktime_hub, account.id, "twilio", credentials)
    assert shown.connected and "sms.send" in shown.actions
    assert shown.settings is not None and shown.settings["auth_token"] == "********"
    spec = workflows.WorkflowIn(
        name="Text the invitee",
        trigger="booking.created",
        enabled=True,
        steps=[workflows.StepIn(action="sms.send", settings=sms())],
    )
    workflows.create(linktime_hub, account.id, spec)

    [run_id] = linktime_hub.emit(sample_event(), account_id=account.id).run_ids
    linktime_hub.process_run(run_id)

    [sent] = twilio.sent
    assert (sent.to, sent.body) == ("+14155550101", RENDERED)
    [step] = get_run(linktime_hub, account.id, run_id).steps
    assert (step.status, step.external_id) == ("succeeded", sent.sid)


def test_no_secret_reaches_logs_or_results(
    run_action: RunAction,
    twilio: FakeTwilio,
    credentials: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "0badc0ffee0badc0ffee0badc0ffee00"
    results: list[Result] = [run_action("sms.send", sms(), credentials=credentials)]
    results.append(run_action("sms.send", sms(), credentials={**credentials, "auth_token": wrong}))
    twilio.fail_next(twilio.error(500, 20500, "Internal Server Error"))
    results.append(run_action("sms.send", sms(), credentials=credentials))
    results.append(
        run_action("sms.send", sms(to="number", number="+15005550001"), credentials=credentials)
    )
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", "http://127.0.0.1:1")
    results.append(run_action("sms.send", sms(), credentials=credentials))

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
