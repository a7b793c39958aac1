"""The live test run ("send a test to me") reaches the tester and nobody else, runs the draft
when given one, and refuses recipients that are wrong or missing: in the core, the API and the
dashboard alike. Real peers on loopback (SMTP, the stand-in Twilio and Slack), a running system
on PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from linktime import testruns, workflows
from linktime.api import create_app
from linktime.errors import InputError
from linktime.storage import Run
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .conftest import System
from .test_channels_e2e import Peers, connect_all, peers  # noqa: F401 (the peers fixture)
from .test_dashboard import Form, field_error, open_dash  # noqa: F401 (a fixture, by name)

TESTER_EMAIL, TESTER_PHONE = "qa@example.com", "+14155550123"
OTHER_PHONE = "+14155550142"
# Each names people of its own: none of them may get a test.
FIXED_RECIPIENTS: list[dict[str, Any]] = [
    {
        "action": "email.send",
        "settings": {"addresses": ["boss@example.com"], "subject": "Hi", "text": "Booked"},
    },
    {"action": "sms.send", "settings": {"to": "number", "number": OTHER_PHONE, "text": "Hi"}},
    {"action": "voice.call", "settings": {"to": "number", "number": OTHER_PHONE, "script": "Hi"}},
    {"action": "slack.post", "settings": {"channel": "#sales", "text": "Booked"}},
]


@pytest.fixture
def api(system: System) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(system.hub)) as client:
        yield client


def runs_started(system: System) -> int:
    with Session(system.hub.db) as session:
        return session.scalar(select(func.count()).select_from(Run)) or 0


def test_a_live_test_sends_to_the_tester_instead_of_every_fixed_recipient(
    system: System,
    peers: Peers,  # noqa: F811
) -> None:
    account = system.account("business")
    connect_all(system, account)
    wf_id = system.workflow(account, FIXED_RECIPIENTS, enabled=False)

    out = testruns.live(
        system.hub,
        account.id,
        wf_id,
        testruns.TestRecipients(email=TESTER_EMAIL, phone=TESTER_PHONE),
    )

    run = system.wait_run(account, out.run_id or "")
    assert [s.status for s in run.steps] == ["succeeded"] * 4, [s.error for s in run.steps]
    assert [m.rcpt_tos for m in peers.smtp.delivered] == [[TESTER_EMAIL]]
    assert [m.to for m in peers.twilio.sent] == [TESTER_PHONE]
    assert [c.to for c in peers.twilio.calls] == [TESTER_PHONE]
    # The workflow itself still names its own people.
    saved = workflows.get(system.hub, account.id, wf_id)
    assert saved.steps[0].settings["addresses"] == ["boss@example.com"]


def test_a_live_test_of_a_draft_sends_the_draft_not_the_saved_version(
    system: System,
    peers: Peers,  # noqa: F811
) -> None:
    account = system.account("business")
    saved = {
        "action": "email.send",
        "settings": {"to_invitee": True, "subject": "Old", "text": "x"},
    }
    wf_id = system.workflow(account, [saved], enabled=False)
    step_id = workflows.get(system.hub, account.id, wf_id).steps[0].id
    edited = {"to_invitee": True, "subject": "New {{ attendee_name }}", "text": "y"}
    draft = workflows.WorkflowIn.model_validate(
        {
            "name": "Edited",
            "trigger": "booking.created",
            "steps": [{"id": step_id, "action": "email.send", "settings": edited}],
        }
    )

    out = testruns.live(
        system.hub, account.id, wf_id, testruns.TestRecipients(email=TESTER_EMAIL), draft=draft
    )

    run = system.wait_run(account, out.run_id or "")
    assert run.status == "succeeded"
    assert run.workflow_name == "Edited"
    [mail] = peers.smtp.delivered
    assert mail.message["Subject"] == "New Test Recipient"
    assert workflows.get(system.hub, account.id, wf_id).steps[0].settings["subject"] == "Old"


def test_a_live_test_without_a_recipient_starts_nothing(system: System) -> None:
    account = system.account("business")
    wf_id = system.workflow(account, FIXED_RECIPIENTS[:1], enabled=False)

    with pytest.raises(InputError) as refused:
        testruns.live(system.hub, account.id, wf_id, testruns.TestRecipients())

    assert [f.message for f in refused.value.fields] == [
        "Enter an email address or a phone number to send to."
    ]
    assert runs_started(system) == 0


@pytest.mark.parametrize(
    ("recipients", "fields"),
    [
        (
            {"email": "nope", "phone": "abc"},
            {
                "recipients.email": "Enter an email address like you@example.com.",
                "recipients.phone": "Enter the phone number in international format, "
                "like +14155550123.",
            },
        ),
        (
            {"email": "a" * 320 + "@example.com"},
            {"recipients.email": "An email address has at most 320 characters."},
        ),
        ({}, {"recipients": "Enter an email address or a phone number to send to."}),
    ],
)
def test_the_apis_live_test_refuses_wrong_or_missing_recipients(
    system: System,
    api: TestClient[Any],
    recipients: dict[str, str],
    fields: dict[str, str],
) -> None:
    account = system.account("business")
    wf_id = system.workflow(account, FIXED_RECIPIENTS[:1], enabled=False)

    r = api.post(
        f"/v1/workflows/{wf_id}/test",
        json={"mode": "live", "recipients": recipients},
        headers={"Authorization": f"Bearer {account.api_key}"},
    )

    assert r.status_code == 422, r.text
    assert {f["field"]: f["message"] for f in r.json()["fields"]} == fields
    assert runs_started(system) == 0


def test_the_apis_live_test_takes_a_phone_as_people_write_it(
    system: System, api: TestClient[Any]
) -> None:
    account = system.account("business")
    wf_id = system.workflow(account, FIXED_RECIPIENTS[:1], enabled=False)

    r = api.post(
        f"/v1/workflows/{wf_id}/test",
        json={"mode": "live", "recipients": {"phone": "+1 (415) 555-0123"}},
        headers={"Authorization": f"Bearer {account.api_key}"},
    )

    assert r.status_code == 200, r.text
    assert r.json()["event"]["booking"]["invitee"]["phone"] == TESTER_PHONE


def test_the_editors_send_without_javascript_keeps_the_draft_and_saves_nothing(
    system: System,
    peers: Peers,  # noqa: F811
    open_dash: Any,  # noqa: F811
) -> None:
    account = system.account("business")
    wf_id = system.workflow(account, FIXED_RECIPIENTS[:1], name="Stored", enabled=False)
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    location = f"/workflows/{wf_id}"
    form = Form(dash.get(location).text).values()
    form.update({"name": "Edited", "steps.0.settings.subject": "Draft", "op": "send"})

    def answer(posted: dict[str, str]) -> str:
        """The page the browser shows after the post (following a redirect, if any)."""
        response = dash.post(location, posted)
        if response.status_code == 303:
            response = dash.get(response.headers["location"])
        text: str = response.text
        return text

    refused = answer({**form, "test_email": "nope", "test_phone": ""})

    assert field_error(refused, "test-email") == "Enter an email address like you@example.com."
    kept = Form(refused).values()
    assert (kept["name"], kept["steps.0.settings.subject"]) == ("Edited", "Draft")
    assert runs_started(system) == 0

    sent = answer({**form, "test_email": TESTER_EMAIL, "test_phone": ""})

    assert "The test run has started." in sent
    assert Form(sent).values()["steps.0.settings.subject"] == "Draft"
    assert workflows.get(system.hub, account.id, wf_id).name == "Stored"  # nothing saved
    assert runs_started(system) == 1

    # A workflow never saved has no row for a run: it says to save first, and starts nothing.
    new = Form(dash.get("/workflows/new?action=email.send").text).values()
    new.update({"name": "New", "steps.0.settings.subject": "S", "steps.0.settings.text": "T"})
    new.update({"steps.0.settings.to_invitee": "on", "op": "send", "test_email": TESTER_EMAIL})
    location = "/workflows/new"
    assert "Save the workflow first to send yourself a test." in answer(new)
    assert runs_started(system) == 1
