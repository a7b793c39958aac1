"""The eight ready-made workflows end to end: each template, made into a workflow over the API
and enabled on a business account with Twilio, Slack and email connected, runs on a running
system (PostgreSQL, Redis, an in-process worker and the scheduler, with a clock the test moves)
and delivers its rendered message to the loopback peers of ``test_channels_e2e``: the SMTP
relay, the stand-in Twilio and the stand-in Slack. The two with logic steps (no-show follow-up,
unpaid booking reminder) send only when the booking, as it stands when they get there, calls
for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
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


def event(kind: str, at: datetime, *, priced: bool = False) -> BookingEvent:
    """The booking's ``kind`` event: a payment with payment.received (its price, to be paid,
    when ``priced``), a reason when cancelled."""
    data = booking(f"evt_{kind}").model_dump(mode="json")
    data["booking"].update(
        uid="bk_orbit",
        title="Orbit review",
        meeting_url=MEETING_URL,
        reschedule_url=RESCHEDULE_URL,
        cancellation_reason=REASON if kind == "booking.cancelled" else None,
        payment=None,
    )
    if priced:
        data["booking"]["payment"] = {"amount": "149.00", "currency": "EUR"}
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
    """Over the API, as a user does: create the workflow from the template (it starts
    disabled), see every step ready in a dry run, then enable it."""
    headers = {"Authorization": f"Bearer {account.api_key}"}
    with TestClient(create_app(system.hub)) as client:
        created = client.post(f"/v1/templates/{name}/workflows", headers=headers)
        assert created.status_code == 201, created.text
        workflow = created.json()
        assert not workflow["enabled"]
        url = f"/v1/workflows/{workflow['id']}"
        tried = client.post(f"{url}/test", json={"mode": "dry_run"}, headers=headers)
        assert tried.status_code == 200, tried.text
        assert [s["error"] for s in tried.json()["steps"]] == [None] * len(workflow["steps"])
        enabled = client.post(f"{url}/enable", headers=headers)
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["enabled"]


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


def test_a_business_account_is_offered_the_eight_templates(
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
        "no-show-follow-up": ("meeting.after", 30, ["logic.filter", "email.send"]),
        "unpaid-booking-reminder": (
            "booking.created",
            0,
            ["logic.delay", "logic.filter", "email.send"],
        ),
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

    planned = book(running, account, clock)
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


def book(
    system: System, account: NewAccount, clock: Clock, *, priced: bool = False
) -> dict[str, Any]:
    """The booking is made now: the one run it starts or plans, as the event's answer shows."""
    made = event("booking.created", clock.now, priced=priced)
    answer = system.hub.emit(made, account_id=account.id).answer
    [run] = answer["runs"]
    assert isinstance(run, dict)
    return run


def statuses(run: Run) -> list[str]:
    return [s.status for s in run.steps]


def mailed(peers: Peers) -> list[tuple[list[str], str, str]]:
    """What reached the SMTP relay: recipients, subject and text of each message."""
    return [
        (m.rcpt_tos, m.message["Subject"], m.message.get_content()) for m in peers.smtp.delivered
    ]


@pytest.mark.parametrize("no_show", [True, False], ids=["marked-a-no-show", "attended"])
def test_no_show_follow_up_emails_only_an_invitee_marked_a_no_show(
    running: System, account: NewAccount, clock: Clock, peers: Peers, no_show: bool
) -> None:
    from_template(running, account, "no-show-follow-up")
    run_id = book(running, account, clock)["id"]
    assert get_run(running.hub, account.id, run_id).due_at == END + timedelta(minutes=30)

    clock.now = END + timedelta(minutes=5)
    if no_show:  # the host marks it after the meeting; it starts no run of its own
        assert (
            running.hub.emit(event("booking.no_show", clock.now), account_id=account.id).run_ids
            == []
        )
    clock.now = END + timedelta(minutes=30)
    run = running.wait_run(account, run_id)

    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    if no_show:
        assert statuses(run) == ["succeeded", "succeeded"]
        [(to, subject, text)] = mailed(peers)
        assert (to, subject) == (["katherine@example.com"], "Sorry we missed you at Orbit review")
        says = [
            "Hi Katherine,",
            f"we missed you at Orbit review with Ada Lovelace on {DATE} at {TIME} ({ZONE}).",
            f"Book it here: {RESCHEDULE_URL}",
        ]
        assert [line for line in says if line not in text] == [], text
    else:
        assert statuses(run) == ["stopped", "skipped"]
        assert "booking.no_show" in (run.steps[0].error or "")
        running.settle()  # the run ended without its email, and nothing else is due
        assert mailed(peers) == []


@pytest.mark.parametrize(
    ("priced", "paid"),
    [(True, False), (True, True), (False, False)],
    ids=["unpaid", "paid-during-the-day", "free"],
)
def test_unpaid_booking_reminder_emails_a_day_later_unless_paid_by_then(
    running: System, account: NewAccount, clock: Clock, peers: Peers, priced: bool, paid: bool
) -> None:
    from_template(running, account, "unpaid-booking-reminder")
    due = clock.now + timedelta(hours=24)
    run_id = book(running, account, clock, priced=priced)["id"]
    running.settle()  # the run reached its delay and is parked there
    parked = get_run(running.hub, account.id, run_id)
    assert (parked.status, parked.due_at, statuses(parked)[0]) == ("waiting", due, "waiting")

    if paid:
        clock.advance(hours=3)
        assert (
            running.hub.emit(event("payment.received", clock.now), account_id=account.id).run_ids
            == []
        )
    clock.now = due - timedelta(seconds=1)
    running.settle()
    assert get_run(running.hub, account.id, run_id).status == "waiting"
    assert mailed(peers) == []

    clock.now = due
    run = running.wait_run(account, run_id)

    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    if paid or not priced:  # paid meanwhile, or nothing to pay: the filter stops the run
        assert statuses(run) == ["succeeded", "stopped", "skipped"]
        assert ("booking.paid" if paid else "payment.amount") in (run.steps[1].error or "")
        running.settle()
        assert mailed(peers) == []
    else:
        assert statuses(run) == ["succeeded", "succeeded", "succeeded"]
        [(to, subject, text)] = mailed(peers)
        assert (to, subject) == (
            ["katherine@example.com"],
            "Complete your payment for Orbit review",
        )
        says = [
            "Hi Katherine,",
            f"your booking Orbit review with Ada Lovelace on {DATE} at {TIME} ({ZONE}) is not "
            "paid yet. Please complete your payment to keep it.",
        ]
        assert [line for line in says if line not in text] == [], text
