"""Test before you enable, told truly: each step's readiness (installed, plan, integration
connected, the plugin's own checks) in the dry run of the API and of a draft, and a step said
ready really sent by the live test run."""

from __future__ import annotations

from typing import Any

import pytest
from linktime import integrations, testruns, workflows
from linktime.accounts import create_account, get_preferences
from linktime.api import create_app
from linktime.crypto import MASK
from linktime.engine import Hub
from linktime.models import BookingEvent
from linktime.segments import SmsCount, sms_count
from linktime.storage import Run
from linktime.testing import event_with
from linktime_email_testing import SmtpPeer
from linktime_twilio_testing import FakeTwilio, credentials, twilio
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from .conftest import System
from .test_dashboard import Dash

# The stand-in Twilio: connecting Twilio checks the credentials with it.
__all__ = ["credentials", "twilio"]

SLACK = {"action": "slack.post", "settings": {"channel": "#bookings", "text": "New booking"}}
EMAIL = {
    "action": "email.send",
    "settings": {"to_invitee": True, "subject": "See you", "text": "Hi {{ attendee_name }}"},
}
SMS = {"action": "sms.send", "settings": {"to": "invitee", "text": "See you {{ event_time }}"}}


@pytest.fixture
def from_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_EMAIL_FROM_ADDRESS", "bookings@example.com")


def dry_run_of(client: TestClient[Any], key: str, wf_id: str, **test: Any) -> list[dict[str, Any]]:
    """The steps of the API's dry run of a stored workflow."""
    r = client.post(
        f"/v1/workflows/{wf_id}/test",
        json={"mode": "dry_run", **test},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    steps: list[dict[str, Any]] = r.json()["steps"]
    return steps


def dry_run(
    client: TestClient[Any], key: str, steps: list[dict[str, Any]], **test: Any
) -> list[dict[str, Any]]:
    """Store a workflow of ``steps`` and dry-run it."""
    wf = client.post(
        "/v1/workflows",
        json={"name": "t", "trigger": "booking.created", "steps": steps},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert wf.status_code == 201, wf.text
    return dry_run_of(client, key, wf.json()["id"], **test)


def test_slack_to_a_channel_without_the_slack_connection_is_not_ready(
    running_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = running_api
    account = system.account("free")

    [step] = dry_run(client, account.api_key, [SLACK])

    assert step["error"] is None  # it renders: only the connection is missing
    assert step["ready"] is False
    assert step["problems"] == [
        {
            "message": "Slack is not connected.",
            "fix": "Connect Slack in Settings.",
            "link": "/settings/integrations#slack",
        }
    ]
    integrations.connect(system.hub, account.id, "slack", {"bot_token": "xoxb-1-abc"})
    [step] = dry_run(client, account.api_key, [SLACK])
    assert (step["ready"], step["problems"]) == (True, [])


def test_email_without_the_servers_from_address_is_not_ready_and_names_no_variable(
    running_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, client = running_api
    monkeypatch.delenv("LINKTIME_EMAIL_FROM_ADDRESS", raising=False)
    key = system.account("free").api_key

    [step] = dry_run(client, key, [EMAIL])

    assert step["ready"] is False
    assert step["problems"] == [
        {
            "message": "Email sending is not set up on this server.",
            "fix": "Contact your administrator.",
            "link": None,
        }
    ]
    assert "LINKTIME_" not in str(step)
    monkeypatch.setenv("LINKTIME_EMAIL_FROM_ADDRESS", "bookings@example.com")
    [step] = dry_run(client, key, [EMAIL])
    assert (step["ready"], step["output"]["from"]) == (True, "bookings@example.com")


def test_a_follow_up_email_is_ready_only_where_it_can_carry_an_unsubscribe_link(
    running_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, client = running_api
    monkeypatch.setenv("LINKTIME_EMAIL_FROM_ADDRESS", "bookings@example.com")
    key = system.account("free").api_key
    follow_up = {**EMAIL, "settings": {**EMAIL["settings"], "follow_up": True}}
    system.hub.settings.public_url = None

    [step] = dry_run(client, key, [follow_up])

    assert step["ready"] is False
    assert [p["message"] for p in step["problems"]] == [
        "This follow-up would go without an unsubscribe link: unsubscribing is not set up on "
        "this server."
    ]
    system.hub.settings.public_url = "https://hub.example.com"
    [step] = dry_run(client, key, [follow_up])
    assert (step["ready"], step["problems"]) == (True, [])


def test_sms_to_an_invitee_without_a_phone_is_not_ready(
    running_api: tuple[System, TestClient[Any]], twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    system, client = running_api
    account = system.account("pro")
    integrations.connect(system.hub, account.id, "twilio", credentials)
    no_phone = event_with(invitee={"phone": None}).model_dump(mode="json")

    [step] = dry_run(client, account.api_key, [SMS], event=no_phone)

    assert step["ready"] is False
    assert step["problems"] == [
        {
            "message": "The booking's invitee has no phone number.",
            "fix": "Ask for a phone number on the booking form, or send to a fixed number.",
            "link": None,
        }
    ]
    assert step["output"]["to"] == "The invitee (no phone number)"
    [step] = dry_run(client, account.api_key, [SMS])  # the sample invitee has one
    assert (step["ready"], step["output"]["to"]) == (True, "+14155550101")


def test_a_step_the_plan_does_not_include_is_not_ready_and_says_which_plans_do(
    running_api: tuple[System, TestClient[Any]], twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    system, client = running_api
    account = system.account("pro")
    integrations.connect(system.hub, account.id, "twilio", credentials)
    wf_id = system.workflow(account, [SMS], enabled=False)
    [step] = dry_run_of(client, account.api_key, wf_id)
    assert step["ready"] is True
    system.hub.settings.plans["pro"].capabilities.remove("sms")  # the operator changed it

    [step] = dry_run_of(client, account.api_key, wf_id)

    assert step["ready"] is False
    assert step["problems"] == [
        {
            "message": "Your Pro plan does not include Send SMS.",
            "fix": "Upgrade to Business to use it.",
            "link": "/account#plan",
        }
    ]


def test_a_step_said_ready_is_really_sent_by_the_live_test_run(
    running_api: tuple[System, TestClient[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, client = running_api
    smtp = SmtpPeer()
    try:
        monkeypatch.setenv("LINKTIME_EMAIL_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("LINKTIME_EMAIL_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("LINKTIME_EMAIL_FROM_ADDRESS", "bookings@example.com")
        account = system.account("free")
        [step] = dry_run(client, account.api_key, [EMAIL])
        assert step["ready"] is True
        wf_id = system.workflow(account, [EMAIL], enabled=False)

        out = testruns.live(
            system.hub, account.id, wf_id, testruns.TestRecipients(email="qa@example.com")
        )

        run = system.wait_run(account, out.run_id or "")
        assert run.status == "succeeded"
        [delivered] = smtp.delivered
        assert delivered.rcpt_tos == ["qa@example.com"]
        assert delivered.message["Subject"] == "See you"
    finally:
        smtp.close()


# --- the draft's dry run (unit, on SQLite) --------------------------------------------------------


def test_a_draft_keeps_the_stored_secrets_it_leaves_out_and_shows_them_masked(
    linktime_hub: Hub, allow_loopback: None
) -> None:
    account = create_account(linktime_hub, "a", "free")
    hook = {
        "action": "webhook.call",
        "settings": {"url": "https://hooks.example.com/in", "headers": {"X-Token": "s3cret"}},
    }
    saved, _ = workflows.create(
        linktime_hub,
        account.id,
        workflows.WorkflowIn(name="w", trigger="booking.created", steps=[hook]),  # type: ignore[list-item]
    )
    step_id = saved.steps[0].id
    edited = {"url": "https://hooks.example.com/other", "headers": {"X-Token": MASK}}
    draft = workflows.WorkflowIn.model_validate(
        {
            "name": "w (edited)",
            "trigger": "booking.created",
            "steps": [{"id": step_id, "action": "webhook.call", "settings": edited}],
        }
    )

    out = testruns.dry_run_draft(linktime_hub, account.id, draft, saved.id)

    [step] = out.steps
    assert (step.error, step.ready, step.kind) == (None, True, "webhook")
    assert step.output["url"] == "https://hooks.example.com/other"  # the draft, not the saved
    assert step.output["headers"]["X-Token"] == MASK
    assert step.output["body"]["data"]["workflow"]["name"] == "w (edited)"
    # A new step has no stored secret for the mask to stand for: named, nothing previewed.
    new = draft.model_copy(
        update={"steps": [workflows.StepIn(action="webhook.call", settings=edited)]}
    )
    [step] = testruns.dry_run_draft(linktime_hub, account.id, new, saved.id).steps
    assert step.ready is False
    assert step.error is not None and "none is stored" in step.error


def test_a_new_drafts_dry_run_checks_every_step(linktime_hub: Hub, from_address: None) -> None:
    account = create_account(linktime_hub, "a", "free")
    draft = workflows.WorkflowIn.model_validate(
        {"name": "new", "trigger": "booking.created", "steps": [EMAIL, SLACK, SMS]}
    )

    out = testruns.dry_run_draft(linktime_hub, account.id, draft)

    assert out.workflow_id is None
    email, slack, sms = out.steps
    assert email.ready and email.kind == "email"
    assert email.output["to"] == ["Grace Hopper <grace@example.com>"]
    assert [p.link for p in slack.problems] == ["/settings/integrations#slack"]
    assert [p.message for p in sms.problems] == [
        "Your Free plan does not include Send SMS.",
        "Twilio is not connected.",
    ]
    assert not slack.ready and not sms.ready


@pytest.mark.parametrize(
    ("text", "characters", "segments", "encoding"),
    [
        ("a" * 160, 160, 1, "GSM-7"),
        ("a" * 161, 161, 2, "GSM-7"),  # parts of 153
        ("a" * 306, 306, 2, "GSM-7"),
        ("a" * 307, 307, 3, "GSM-7"),
        ("€" * 80, 80, 1, "GSM-7"),  # an extension character counts twice
        ("€" * 81, 81, 2, "GSM-7"),
        ("ć" * 70, 70, 1, "UCS-2"),  # one character outside GSM-7 makes it all UCS-2
        ("ć" + "a" * 70, 71, 2, "UCS-2"),  # parts of 67
        ("🙂" * 35, 35, 1, "UCS-2"),  # two UTF-16 units each
        ("🙂" * 36, 36, 2, "UCS-2"),
    ],
)
def test_an_sms_preview_counts_characters_and_messages(
    text: str, characters: int, segments: int, encoding: str
) -> None:
    assert sms_count(text) == SmsCount(characters, segments, encoding)


def test_send_a_test_to_me_refuses_what_is_wrong_and_stores_nothing_then_remembers(
    running_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = running_api
    mine, other = system.account("free"), system.account("free")
    wf_id = system.workflow(mine, [EMAIL], enabled=False)
    theirs = system.workflow(other, [EMAIL], enabled=False)
    dash = Dash(client)
    dash.sign_in(mine.api_key)
    dash.get(f"/workflows/{wf_id}/test")

    def started() -> int:
        with Session(system.hub.db) as session:
            return len(session.scalars(select(Run.id)).all())

    bad = dash.post(
        f"/workflows/{wf_id}/test/send", {"test_email": "me@example.com", "test_phone": "12"}
    )
    assert bad.status_code == 422
    assert "Enter the phone number in international format, like +14155550123." in bad.text
    assert 'value="me@example.com"' in bad.text  # what was typed stays
    nothing = dash.post(f"/workflows/{wf_id}/test/send", {"test_email": "", "test_phone": ""})
    assert nothing.status_code == 422
    assert "Enter an email address or a phone number to send to." in nothing.text
    assert (
        dash.post(f"/workflows/{theirs}/test/send", {"test_email": "me@example.com"}).status_code
        == 404
    )
    # Too long is refused as it is, not cut to fit and then checked.
    long = dash.post(f"/workflows/{wf_id}/test/send", {"test_email": "a" * 320 + "@example.com"})
    assert long.status_code == 422
    assert "An email address has at most 320 characters." in long.text
    assert get_preferences(system.hub, mine.id).test_email is None
    assert started() == 0

    sent = dash.post(
        f"/workflows/{wf_id}/test/send",
        {"test_email": "me@example.com", "test_phone": "+1 (415) 555-0123"},
    )

    assert sent.status_code == 303
    assert sent.headers["location"].startswith(f"/workflows/{wf_id}/test?run=run_")
    assert started() == 1
    prefs = get_preferences(system.hub, mine.id)
    assert (prefs.test_email, prefs.test_phone) == ("me@example.com", "+14155550123")
    page = dash.get(sent.headers["location"]).text
    assert 'value="+14155550123"' in page
    assert f'href="/runs/{sent.headers["location"].split("run=")[1]}"' in page


def test_a_webhook_to_a_private_address_is_not_ready_unless_the_server_allows_it(
    linktime_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = create_account(linktime_hub, "a", "free")
    hook = {"action": "webhook.call", "settings": {"url": "http://127.0.0.1:9/in"}}
    draft = workflows.WorkflowIn.model_validate(
        {"name": "w", "trigger": "booking.created", "steps": [hook]}
    )
    monkeypatch.delenv("LINKTIME_HTTP_ALLOWED_NETWORKS", raising=False)

    [step] = testruns.dry_run_draft(linktime_hub, account.id, draft).steps

    assert step.ready is False
    assert [p.message for p in step.problems] == [
        "127.0.0.1 is a private address: this server does not call it."
    ]
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")
    [step] = testruns.dry_run_draft(linktime_hub, account.id, draft).steps
    assert (step.ready, step.problems) == (True, [])


def test_an_email_to_an_invitee_without_an_address_is_not_ready(
    linktime_hub: Hub, from_address: None
) -> None:
    account = create_account(linktime_hub, "a", "free")
    draft = workflows.WorkflowIn.model_validate(
        {"name": "w", "trigger": "booking.created", "steps": [EMAIL]}
    )
    no_email = event_with(invitee={"email": None})

    [step] = testruns.dry_run_draft(linktime_hub, account.id, draft, None, no_email).steps

    assert step.ready is False
    assert [(p.message, p.fix) for p in step.problems] == [
        (
            "Nobody would receive this email for this booking "
            "(invitee 'Grace Hopper' has no email address).",
            "Add an address, or send it to someone who has one.",
        )
    ]
    assert step.output["to"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9/in",
        "http://hooks.localhost/in",
        "http://2130706433/in",  # 127.0.0.1 as one number
        "http://0x7f.1/in",
        "http://127.1/in",
    ],
)
def test_a_webhook_to_localhost_or_a_numeric_form_of_an_address_is_not_ready(
    linktime_hub: Hub, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.delenv("LINKTIME_HTTP_ALLOWED_NETWORKS", raising=False)
    account = create_account(linktime_hub, "a", "free")
    hook = {"action": "webhook.call", "settings": {"url": url}}
    draft = workflows.WorkflowIn.model_validate(
        {"name": "w", "trigger": "booking.created", "steps": [hook]}
    )

    [step] = testruns.dry_run_draft(linktime_hub, account.id, draft).steps

    assert step.ready is False
    [problem] = step.problems
    assert problem.message.endswith("is a private address: this server does not call it.")


def test_the_webhook_preview_lists_every_header_that_is_sent(linktime_hub: Hub) -> None:
    account = create_account(linktime_hub, "a", "free")
    hook = {
        "action": "webhook.call",
        "settings": {"url": "https://hooks.example.com/in", "headers": {"X-Token": "s3cret"}},
    }
    draft = workflows.WorkflowIn.model_validate(
        {"name": "w", "trigger": "booking.created", "steps": [hook]}
    )

    [step] = testruns.dry_run_draft(linktime_hub, account.id, draft).steps

    assert step.output["headers"] == {
        "User-Agent": step.output["headers"]["User-Agent"],
        "X-Token": MASK,
        "Content-Type": "application/json",
        "webhook-id": "msg_dry0",
        "webhook-timestamp": "set when sent",
        "webhook-signature": "computed when sent",
    }
    assert step.output["headers"]["User-Agent"].startswith("LinkTime-Webhooks/")


def test_the_sample_chooser_offers_recent_bookings_and_readiness_reads_the_one_chosen(
    system: System, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    account = system.account("business")
    integrations.connect(system.hub, account.id, "twilio", credentials)
    wf_id = system.workflow(account, [SMS], enabled=False)
    no_phone = event_with(invitee={"phone": None})
    data = no_phone.model_dump(mode="json")
    data.update(id="evt_no_phone")
    data["booking"].update(uid="bk_no_phone", title="Demo with Lin")
    system.hub.emit(BookingEvent.model_validate(data), account_id=account.id)
    with TestClient(create_app(system.hub)) as client:
        dash = Dash(client)
        dash.sign_in(account.api_key)
        sample = dash.get(f"/workflows/{wf_id}/test").text
        chosen = dash.get(f"/workflows/{wf_id}/test?event_type=booking:evt_no_phone").text

    assert '<option value="booking:evt_no_phone">Demo with Lin · Grace Hopper</option>' in sample
    assert "has no phone number" not in sample  # the sample booking has one
    assert '<option value="booking:evt_no_phone" selected>' in chosen
    assert "The booking&#39;s invitee has no phone number." in chosen
    assert "Not ready" in chosen
