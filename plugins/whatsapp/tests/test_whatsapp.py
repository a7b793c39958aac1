"""whatsapp.send through the official twilio client against a stand-in Twilio on loopback."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import linktime_whatsapp
import pytest
from linktime import integrations, suppressions, testruns, workflows
from linktime.accounts import create_account
from linktime.actions import Outcome
from linktime.api import create_app
from linktime.models import sample_event
from linktime.runs import RunOut, get_run
from linktime.services import account_key
from linktime.storage import Account
from linktime.testing import RunAction
from litestar.testing import TestClient
from sqlalchemy import update

from .conftest import PUBLIC_URL

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime.testing_hub import LinktimeHub

    from .conftest import WhatsAppTwilio

TEXT = "Hi {{ invitee.first_name }}, {{ event_type.title }} is on {{ booking.start | localtime }}"
RENDERED = "Hi Grace, Intro call is on Tuesday, December 1, 2026 10:00 AM EST"
TEMPLATE = "HX" + "0123456789abcdef" * 2
VARIABLES = {"1": "{{ invitee.first_name }}", "2": "{{ booking.start | localtime }}"}
INVITEE, HOST = "+14155550101", "+14155550100"


def message(**settings: Any) -> dict[str, Any]:
    return {"text": TEXT, **settings}


def messages_posted(twilio: WhatsAppTwilio) -> list[dict[str, str]]:
    """The form of each request that reached Twilio's Messages API."""
    return [
        {k: v[0] for k, v in parse_qs(r.body.decode()).items()}
        for r in twilio.receiver.requests
        if r.method == "POST" and r.path.endswith("/Messages.json")
    ]


# --- sending ---------------------------------------------------------------------------------


def test_freeform_text_goes_from_whatsapp_to_whatsapp(
    run_action: RunAction, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    result = run_action("whatsapp.send", message(), credentials=credentials)

    [sent] = twilio.sent
    assert (sent.to, sent.from_, sent.body) == (
        f"whatsapp:{INVITEE}",
        f"whatsapp:{twilio.FROM}",
        RENDERED,
    )
    assert (result.outcome, result.external_id, result.http_status) == (
        Outcome.SUCCEEDED,
        sent.sid,
        201,
    )
    [form] = messages_posted(twilio)
    assert "ContentSid" not in form and "StatusCallback" not in form
    [request] = twilio.receiver.requests
    assert f"linktime-whatsapp/{linktime_whatsapp.__version__}" in request.headers["user-agent"]


def test_a_content_template_is_sent_with_the_bookings_fields_as_its_variables(
    run_action: RunAction, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    settings = message(to="host", content_sid=TEMPLATE, content_variables=VARIABLES)
    result = run_action("whatsapp.send", settings, credentials=credentials)

    assert result.outcome is Outcome.SUCCEEDED, result.error
    [sent] = twilio.sent
    assert sent.to == f"whatsapp:{HOST}"
    assert twilio.templates[sent.sid] == (
        TEMPLATE,
        {"1": "Grace", "2": "Tuesday, December 1, 2026 10:00 AM EST"},
    )
    # With a template the freeform text is not sent: outside the 24-hour window it would fail.
    [form] = messages_posted(twilio)
    assert "Body" not in form
    assert json.loads(form["ContentVariables"])["1"] == "Grace"


def test_a_template_without_variables_and_a_messaging_service_sender(
    run_action: RunAction, twilio: WhatsAppTwilio
) -> None:
    creds = {
        "account_sid": twilio.ACCOUNT_SID,
        "auth_token": twilio.AUTH_TOKEN,
        "messaging_service_sid": twilio.SERVICE_SID,
    }
    result = run_action("whatsapp.send", {"content_sid": TEMPLATE}, credentials=creds)

    assert result.outcome is Outcome.SUCCEEDED, result.error
    [form] = messages_posted(twilio)
    assert form == {
        "To": f"whatsapp:{INVITEE}",
        "MessagingServiceSid": twilio.SERVICE_SID,
        "ContentSid": TEMPLATE,
    }


def test_a_sender_id_cannot_send_whatsapp(
    run_action: RunAction, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    creds = {**credentials, "from_number": "LinkTime"}
    result = run_action("whatsapp.send", message(), credentials=creds)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "no_whatsapp_sender")
    assert result.error is not None and "WhatsApp-enabled Twilio number" in result.error
    assert twilio.receiver.requests == []


def test_not_connected_fails_permanently(run_action: RunAction, twilio: WhatsAppTwilio) -> None:
    result = run_action("whatsapp.send", message(), credentials=None)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "not_connected")
    assert twilio.receiver.requests == []


# --- WhatsApp's 24-hour window and opt-outs ----------------------------------------------------


def test_freeform_outside_the_24_hour_window_fails_asking_for_a_template(
    run_action: RunAction, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    said = "Failed to send freeform message because you are outside the allowed window."
    twilio.fail_next(twilio.error(400, 63016, said))
    result = run_action("whatsapp.send", message(), credentials=credentials)

    assert (result.outcome, result.error_code) == (Outcome.FAILED, "whatsapp_outside_window")
    assert result.error is not None
    assert result.error.startswith(
        "WhatsApp refused a freeform message: the recipient has not written to you in the last "
        "24 hours, so only an approved template may start the conversation. Name an approved "
        "content template (content_sid, HX…) in this step."
    )
    assert "error 63016" in result.error and result.http_status == 400


def test_a_template_refused_outside_the_window_is_named(
    run_action: RunAction, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    twilio.fail_next(twilio.error(400, 63016, "Outside messaging window."))
    result = run_action("whatsapp.send", {"content_sid": TEMPLATE}, credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "whatsapp_outside_window")
    assert result.error is not None
    assert result.error.startswith(f"WhatsApp refused the template {TEMPLATE} outside the 24-hour")


def test_twilio_21610_is_an_opt_out_that_suppresses_the_number(
    run_action: RunAction, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    twilio.unsubscribed.add(INVITEE)
    result = run_action("whatsapp.send", message(), credentials=credentials)
    assert (result.outcome, result.suppress) == (Outcome.OPTED_OUT, INVITEE)
    assert result.error_code == "twilio_21610"
    assert twilio.sent == []


# --- through the core ----------------------------------------------------------------------------


def setup(hub: Hub, credentials: dict[str, str], *steps: dict[str, Any]) -> tuple[str, str]:
    """A pro account with Twilio connected and an enabled workflow of these WhatsApp steps:
    their ids."""
    account = create_account(hub, "Acme", "pro")
    shown = integrations.connect(hub, account.id, "twilio", credentials)
    assert "whatsapp.send" in shown.actions
    spec = workflows.WorkflowIn(
        name="WhatsApp the invitee",
        trigger="booking.created",
        enabled=True,
        steps=[workflows.StepIn(action="whatsapp.send", settings=s) for s in steps],
    )
    workflow, _ = workflows.create(hub, account.id, spec)
    return account.id, workflow.id


def book(hub: Hub, account_id: str) -> RunOut:
    """A booking arrives; its run goes through."""
    [run_id] = hub.emit(sample_event(), account_id=account_id).run_ids
    hub.process_run(run_id)
    return get_run(hub, account_id, run_id)


def test_an_opted_out_number_gets_nothing_and_the_run_goes_on(
    linktime_hub: Hub, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    account_id, _ = setup(linktime_hub, credentials, message(), message(to="host"))
    with linktime_hub.db.begin() as conn:
        suppressions.add(
            conn, account_id, INVITEE, "replied STOP", suppressions.SMS_STOP, linktime_hub.clock()
        )

    run = book(linktime_hub, account_id)

    invitee, host = run.steps
    assert (invitee.status, host.status, run.status) == ("opted_out", "succeeded", "succeeded")
    assert invitee.attempt_log[0].delivery_status == "opted_out"
    assert [m["To"] for m in messages_posted(twilio)] == [f"whatsapp:{HOST}"]


def test_twilio_21610_puts_the_number_on_the_suppression_list(
    linktime_hub: Hub, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    account_id, _ = setup(linktime_hub, credentials, message())
    twilio.unsubscribed.add(INVITEE)

    [step] = book(linktime_hub, account_id).steps

    assert (step.status, step.error_code) == ("opted_out", "twilio_21610")
    with linktime_hub.db.connect() as conn:
        entry = suppressions.lookup(conn, account_id, f"whatsapp:{INVITEE}")
    assert entry is not None and entry.source == suppressions.PROVIDER


def test_status_callbacks_are_asked_for_when_the_server_has_a_public_url(
    public_hub: LinktimeHub, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    account_id, _ = setup(public_hub, credentials, message(content_sid=TEMPLATE))

    [step] = book(public_hub, account_id).steps

    assert step.status == "succeeded"
    [sent] = twilio.sent
    key = account_key(public_hub.secret_key(), account_id)
    assert sent.status_callback == f"{PUBLIC_URL}/v1/callbacks/twilio/{key}"
    assert step.attempt_log[0].delivery_status == "accepted"


def test_a_freeform_message_twilio_could_not_deliver_outside_the_window_shows_why(
    public_hub: LinktimeHub, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    """Twilio often accepts the message and reports 63016 later, in its status callback: the
    attempt then says it was not delivered, and why."""
    account_id, _ = setup(public_hub, credentials, message())
    run = book(public_hub, account_id)
    [sent] = twilio.sent
    assert sent.status_callback is not None
    path = sent.status_callback.removeprefix(PUBLIC_URL)

    with TestClient(create_app(public_hub)) as client:
        for status in ("sent", "undelivered"):
            params = twilio.report_params(sent.sid, status, 63016 if status != "sent" else None)
            signature = twilio.sign(sent.status_callback, params)
            answer = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
            assert answer.status_code == 200, answer.text

    [step] = get_run(public_hub, account_id, run.id).steps
    [attempt] = step.attempt_log
    assert step.status == "succeeded"  # Twilio took it: the step was sent
    assert (attempt.delivery_status, attempt.delivery_error_code) == ("undelivered", "twilio_63016")
    assert attempt.delivery_error is not None and "approved template" in attempt.delivery_error


def test_whatsapp_needs_a_plan_with_it(
    linktime_hub: LinktimeHub, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    step = {"action": "whatsapp.send", "settings": message()}
    assert linktime_hub.refused(
        {"trigger": "booking.created", "steps": [step]}, plan="free", status=403
    ) == {"steps.0.action": "the free plan does not include whatsapp.send (capability whatsapp)"}
    # A pro account downgraded to free: its step is blocked at run time, Twilio not asked.
    account_id, _ = setup(linktime_hub, credentials, message())
    with linktime_hub.db.begin() as conn:
        conn.execute(update(Account).where(Account.id == account_id).values(plan="free"))

    [blocked] = book(linktime_hub, account_id).steps

    assert blocked.status == "blocked_by_plan"
    assert messages_posted(twilio) == []


# --- settings ------------------------------------------------------------------------------------


# Each bad step of one workflow, and the refusal the API answers for it.
REFUSED = [
    ({}, "steps.0.settings", "set text (a freeform message), content_sid (a template), or both"),
    ({"content_sid": "HX123"}, "steps.1.settings.content_sid", "should match pattern"),
    (
        {"text": "Hi", "content_variables": {"1": "x"}},
        "steps.2.settings",
        "content_variables need the content_sid of their template",
    ),
    (
        {"content_sid": TEMPLATE, "content_variables": {"1": "{{ shoe_size }}"}},
        "steps.3.settings.content_variables.1",
        "unknown field 'shoe_size'",
    ),
    (
        {"content_sid": TEMPLATE, "content_variables": {"first name": "x"}},
        "steps.4.settings.content_variables.first name.[key]",
        "should match pattern",
    ),
]


def test_bad_settings_are_refused_on_save_each_named(linktime_hub: LinktimeHub) -> None:
    steps = [{"action": "whatsapp.send", "settings": settings} for settings, _, _ in REFUSED]
    refused = linktime_hub.refused({"trigger": "booking.created", "steps": steps})
    assert sorted(refused) == sorted(field for _, field, _ in REFUSED)
    for _, field, said in REFUSED:
        assert said in refused[field], (field, refused[field])


def test_a_live_test_messages_the_invitee_instead_of_a_listed_number() -> None:
    settings = linktime_whatsapp.WhatsAppStepSettings(
        to="number", number="+44 20 7946 0000", text="x"
    )
    assert settings.number == "+442079460000"
    tested = linktime_whatsapp.to_the_invitee(settings)
    assert (tested.to, tested.number) == ("invitee", None)


def test_the_supported_countries_are_the_operators(
    run_action: RunAction,
    twilio: WhatsAppTwilio,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINKTIME_WHATSAPP_SUPPORTED_COUNTRIES", "GB")
    result = run_action("whatsapp.send", message(to="host"), credentials=credentials)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "unsupported_country")
    assert result.error == f"{HOST} is a US number; this service sends only to GB"
    assert twilio.receiver.requests == []


def test_the_dry_run_shows_the_chat_bubble_and_a_missing_whatsapp_sender(
    linktime_hub: Hub, twilio: WhatsAppTwilio, credentials: dict[str, str]
) -> None:
    template = {"content_sid": TEMPLATE, "content_variables": VARIABLES}
    account_id, workflow_id = setup(linktime_hub, credentials, template, message(to="host"))

    first, second = testruns.dry_run(linktime_hub, account_id, workflow_id).steps

    assert (first.kind, first.ready, second.ready) == ("sms", True, True)
    assert first.output == {
        "to": f"whatsapp:{INVITEE}",
        "text": f"Approved template {TEMPLATE} with {{{{1}}}} = Grace, "
        "{{2}} = Tuesday, December 1, 2026 10:00 AM EST",
    }
    assert second.output == {"to": f"whatsapp:{HOST}", "text": RENDERED}
    # An alphanumeric sender ID sends SMS, not WhatsApp: the dry run says so before any send.
    integrations.connect(linktime_hub, account_id, "twilio", {**credentials, "from_number": "Acme"})
    [problem] = testruns.dry_run(linktime_hub, account_id, workflow_id).steps[0].problems
    assert problem.message == "Twilio has no WhatsApp sender."
    assert twilio.sent == []
