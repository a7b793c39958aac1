"""A step's fallback end to end: an SMS step whose fallback is an email, on a running system
(PostgreSQL, a Redis broker, an in-process worker and the scheduler) with the real plugins:
``sms.send`` reaches the stand-in Twilio through the official ``twilio`` client, which refuses a
number as Twilio does (21211 for its test number +15005550001), and ``email.send`` reaches a
real SMTP server (aiosmtpd) on loopback. What a user checks: the step's attempts (which action
each ran), what arrived where, the run's outcome and the month's SMS credits."""

from __future__ import annotations

from typing import Any

from linktime import credits
from linktime.accounts import NewAccount
from linktime.models import BookingEvent
from linktime.storage import Run

from .conftest import System
from .test_channels_e2e import Peers, booking, connect_all
from .test_channels_e2e import peers as peers  # the loopback peers (fixture)

INVALID = "+15005550001"  # Twilio refuses a message to it: 21211, not a valid phone number
VALID = "+14155550142"
INVITEE = "katherine@example.com"
WHEN = "Thursday, December 3, 2026 9:00 AM EST"  # the booking's start, the invitee's time
EMAIL = {
    "action": "email.send",
    "settings": {
        "to_invitee": True,
        "subject": "Your {{ event_type.title }} with {{ host.name }}",
        "text": "Hi {{ attendee_first_name }}, we could not text you: "
        "see you on {{ booking.start | localtime }}.",
    },
}
SMS_OR_EMAIL = {
    "action": "sms.send",
    "settings": {"to": "invitee", "text": "Hi {{ attendee_first_name }}, see you soon"},
    "fallback": EMAIL,
}
THEN_SLACK = {"action": "slack.post", "settings": {"channel": "#sales", "text": "Booked"}}


def booked(event_id: str, phone: str) -> BookingEvent:
    """``test_channels_e2e``'s booking (Katherine Johnson), with the invitee's ``phone``."""
    data = booking(event_id).model_dump(mode="json")
    data["booking"]["invitee"]["phone"] = phone
    return BookingEvent.model_validate(data)


def run_sms(system: System, event: BookingEvent, *later: dict[str, Any]) -> tuple[NewAccount, Run]:
    """A business account with everything connected and an SMS-else-email step (then
    ``later``): the run ``event`` starts, once it finished."""
    account = system.account("business")
    connect_all(system, account)
    system.workflow(account, [SMS_OR_EMAIL, *later], name="Text, else email")
    [run_id] = system.hub.emit(event, account_id=account.id).run_ids
    return account, system.wait_run(account, run_id)


def attempts(run: Run) -> list[tuple[int, str, str | None, str | None]]:
    """The first step's attempts: number, status, the action it ran (None: the step's own)
    and the error code."""
    return [(a.number, a.status, a.action, a.error_code) for a in run.steps[0].attempt_log]


def sms_credits_used(system: System, account: NewAccount) -> int:
    return credits.sms_usage(system.hub, account.id).used


def test_an_sms_twilio_refuses_with_21211_is_sent_as_the_fallback_email(
    system: System, peers: Peers
) -> None:
    account, run = run_sms(system, booked("evt_fallback", INVALID))

    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    assert run.steps[0].status == "succeeded"
    assert attempts(run) == [
        (1, "failed", None, "twilio_21211"),
        (2, "succeeded", "email.send", None),
    ]
    assert "not a valid phone number" in (run.steps[0].attempt_log[0].error or "")
    assert peers.twilio.sent == []  # Twilio took nothing
    [mail] = peers.smtp.delivered
    assert mail.rcpt_tos == [INVITEE]
    assert mail.message["Subject"] == "Your Orbit review with Ada Lovelace"
    assert (
        mail.message.get_content().strip()
        == f"Hi Katherine, we could not text you: see you on {WHEN}."
    )
    # The credit the SMS took before Twilio refused it is given back: the email takes none.
    assert sms_credits_used(system, account) == 0


def test_an_sms_twilio_accepts_sends_no_fallback_email(system: System, peers: Peers) -> None:
    account, run = run_sms(system, booked("evt_no_fallback", VALID))

    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    assert attempts(run) == [(1, "succeeded", None, None)]
    [sms] = peers.twilio.sent
    assert (sms.to, sms.body) == (VALID, "Hi Katherine, see you soon")
    assert sms_credits_used(system, account) == 1
    system.settle()  # anything still due has run by now: no email followed
    assert peers.smtp.delivered == []


def test_the_fallback_retries_on_its_own_schedule(system: System, peers: Peers) -> None:
    peers.smtp.answer_data("451 4.3.0 Mailbox busy, try again later")

    account, run = run_sms(system, booked("evt_fallback_retry", INVALID))

    assert run.status == "succeeded", [(s.action, s.status, s.error) for s in run.steps]
    assert attempts(run) == [
        (1, "failed", None, "twilio_21211"),
        (2, "retrying", "email.send", "smtp_451"),
        (3, "succeeded", "email.send", None),
    ]
    [mail] = peers.smtp.delivered
    assert mail.rcpt_tos == [INVITEE]
    assert sms_credits_used(system, account) == 0


def test_a_fallback_that_fails_too_fails_the_run_and_skips_the_later_steps(
    system: System, peers: Peers
) -> None:
    peers.smtp.answer_data("554 5.7.1 Message rejected")

    account, run = run_sms(system, booked("evt_fallback_fails", INVALID), THEN_SLACK)

    assert run.status == "failed"
    assert [(s.action, s.status) for s in run.steps] == [
        ("sms.send", "failed"),
        ("slack.post", "skipped"),
    ]
    assert run.steps[0].error_code == "smtp_554"
    assert attempts(run) == [
        (1, "failed", None, "twilio_21211"),
        (2, "failed", "email.send", "smtp_554"),
    ]
    assert (peers.twilio.sent, peers.smtp.delivered, peers.slack.received()) == ([], [], [])
    assert sms_credits_used(system, account) == 0
