"""The six ready-made workflows end to end: each template, made into a workflow and enabled on
a business account with Twilio, Slack and email connected, runs on a running system (PostgreSQL,
Redis, an in-process worker and the scheduler, with a clock the test moves) and delivers its
rendered message to the loopback peers of ``test_channels_e2e``: the SMTP relay, the stand-in
Twilio and the stand-in Slack."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from linktime import workflows
from linktime.accounts import NewAccount
from linktime.api import create_app
from linktime.models import BookingEvent
from linktime.runs import get_run
from linktime.storage import Run
from litestar.testing import TestClient

from .conftest import Clock, System
from .test_channels_e2e import Peers, booking, connect_all
from .test_channels_e2e import peers as peers  # the loopback peers (fixture)

# The booking of ``test_channels_e2e.booking``: Katherine Johnson (America/New_York) books
# "Orbit review" with Ada Lovelace, 14:00-14:45 UTC on December 3, 2026.
START = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
END = START + timedelta(minutes=45)
T0 = START - timedelta(hours=5)  # the test clock's start
DATE, TIME, ZONE = "Thursday, December 3, 2026", "9:00 AM", "America/New_York"
MEETING_URL = "https://meet.example.com/orbit"
RESCHEDULE_URL = "https://linktime.example.com/reschedule/bk_orbit"
REASON = "The launch window moved"


def event(kind: str, at: datetime) -> BookingEvent:
    """The booking's ``kind`` event: a payment with payment.received, a reason when cancelled."""
    data = booking(f"evt_{kind}").model_dump(mode="json")
    data["booking"].update(
        uid="bk_orbit",
        title="Orbit review",
        meeting_url=MEETING_URL,
        reschedule_url=RESCHEDULE_URL,
        cancellation_reason=REASON if kind == "booking.cancelled" else None,
        payment=None,
    )
    if kind == "payment.received":
        data["booking"]["payment"] = {
            "amount": "149.00",
            "currency": "EUR",
            "reference": "pi_orbit_42",
        }
    return BookingEvent.model_validate({**data, "type": kind, "occurred_at": at})


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def running(
    make_system: Callable[..., System], clock: Clock, allow_loopback: None, peers: Peers
) -> System:
    system = make_system(clock=clock)
    system.start()
    return system


@pytest.fixture
def account(running: System) -> NewAccount:
    """A business account with the twilio, slack and email integrations connected."""
    acc = running.account("business")
    connect_all(running, acc)
    return acc


def from_template(system: System, account: NewAccount, name: str) -> None:
    """Create the workflow from the template (it starts disabled), then enable it."""
    created, _ = workflows.create_from_template(system.hub, account.id, name)
    assert not created.enabled
    assert workflows.set_enabled(system.hub, account.id, created.id, True).enabled


def happen(system: System, account: NewAccount, clock: Clock, *kinds: str) -> Run:
    """The booking's events in turn, a minute apart: only the last starts a run; its outcome."""
    started: list[list[str]] = []
    for kind in kinds:
        started.append(system.hub.emit(event(kind, clock.now), account_id=account.id).run_ids)
        clock.advance(minutes=1)
    *before, [run_id] = started
    assert before == [[]] * len(before), kinds
    run = system.wait_run(account, run_id)
    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    return run


def test_a_business_account_is_offered_the_six_templates(
    running: System, account: NewAccount
) -> None:
    with TestClient(create_app(running.hub)) as client:
        answer = client.get("/v1/templates", headers={"Authorization": f"Bearer {account.api_key}"})
    assert answer.status_code == 200, answer.text
    offered = {t["name"]: (t["trigger"], t["offset_minutes"], t["actions"]) for t in answer.json()}
    assert offered == {
        "thank-you-email": ("booking.created", 0, ["email.send"]),
        "payment-confirmation": ("payment.received", 0, ["email.send"]),
        "cancellation-follow-up": ("booking.cancelled", 0, ["email.send"]),
        "post-meeting-survey": ("meeting.after", 30, ["email.send"]),
        "meeting-reminder": ("meeting.before", 60, ["sms.send"]),
        "team-notification": ("booking.created", 0, ["slack.post"]),
    }
    assert set(running.hub.registry.templates) == set(offered)


@pytest.mark.parametrize(
    ("template", "kinds", "subject", "says"),
    [
        pytest.param(
            "thank-you-email",
            ["booking.created"],
            "Thanks for booking Orbit review",
            [
                "Hi Katherine,",
                f"Orbit review with Ada Lovelace on {DATE} at {TIME} ({ZONE})",
                f"Join: {MEETING_URL}",
                f"Reschedule: {RESCHEDULE_URL}",
            ],
            id="thank-you-email",
        ),
        pytest.param(
            "payment-confirmation",
            ["booking.created", "payment.received"],
            "Payment received for Orbit review",
            [
                "Hi Katherine,",
                "your payment of 149.00 EUR (reference pi_orbit_42) for Orbit review",
                DATE,
            ],
            id="payment-confirmation",
        ),
        pytest.param(
            "cancellation-follow-up",
            ["booking.created", "booking.cancelled"],
            "Your booking Orbit review was cancelled",
            [
                "Hi Katherine,",
                f"Orbit review on {DATE} was cancelled ({REASON}).",
                f"Book another time: {RESCHEDULE_URL}",
            ],
            id="cancellation-follow-up",
        ),
    ],
)
def test_email_template_sends_the_rendered_email_on_its_event(
    running: System,
    account: NewAccount,
    clock: Clock,
    peers: Peers,
    template: str,
    kinds: list[str],
    subject: str,
    says: list[str],
) -> None:
    from_template(running, account, template)

    happen(running, account, clock, *kinds)

    [mail] = peers.smtp.delivered
    assert mail.rcpt_tos == ["katherine@example.com"]
    assert mail.message["Subject"] == subject
    text = mail.message.get_content()
    assert [line for line in says if line not in text] == [], text


def test_team_notification_posts_the_booking_to_slack(
    running: System, account: NewAccount, clock: Clock, peers: Peers
) -> None:
    peers.slack.channels["#bookings"] = "C0BOOKINGS"  # the template's channel; the bot is in it
    from_template(running, account, "team-notification")

    happen(running, account, clock, "booking.created")

    [posted] = peers.slack.received()
    assert posted["channel"] == "#bookings"
    assert posted["text"] == (
        f"New booking: Orbit review with Katherine Johnson on {DATE} at {TIME} ({ZONE})"
    )


def survey_emails(peers: Peers) -> list[str]:
    return [
        f"{m.rcpt_tos} {m.message['Subject']}\n{m.message.get_content()}"
        for m in peers.smtp.delivered
    ]


def reminder_texts(peers: Peers) -> list[str]:
    return [f"{s.to} {s.body}" for s in peers.twilio.sent]


@pytest.mark.parametrize(
    ("template", "due", "outbox", "says"),
    [
        pytest.param(
            "post-meeting-survey",
            END + timedelta(minutes=30),
            survey_emails,
            [
                "['katherine@example.com'] How was Orbit review?",
                "Hi Katherine,",
                "thanks for meeting Ada Lovelace. How did it go?",
            ],
            id="post-meeting-survey-30-min-after-the-end",
        ),
        pytest.param(
            "meeting-reminder",
            START - timedelta(minutes=60),
            reminder_texts,
            [
                "+14155550142 Reminder: Orbit review with Ada Lovelace at "
                f"{TIME} ({ZONE}). {MEETING_URL}"
            ],
            id="meeting-reminder-sms-60-min-before-the-start",
        ),
    ],
)
def test_timed_template_delivers_at_its_due_time_and_not_before(
    running: System,
    account: NewAccount,
    clock: Clock,
    peers: Peers,
    template: str,
    due: datetime,
    outbox: Callable[[Peers], list[str]],
    says: list[str],
) -> None:
    from_template(running, account, template)

    answer: dict[str, Any] = running.hub.emit(
        event("booking.created", clock.now), account_id=account.id
    ).answer
    [planned] = answer["runs"]
    assert planned["status"] == "scheduled"
    assert planned["due_at"] == due.isoformat().replace("+00:00", "Z")

    clock.now = due - timedelta(seconds=1)
    running.settle()
    assert outbox(peers) == []
    assert get_run(running.hub, account.id, planned["id"]).status == "scheduled"

    clock.now = due
    run = running.wait_run(account, planned["id"])
    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    [message] = outbox(peers)
    assert [line for line in says if line not in message] == [], message
