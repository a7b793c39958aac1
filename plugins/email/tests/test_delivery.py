"""Calendar invites, one-click unsubscribe, the suppression list and the sender settings checked
at connect: through a real Hub and a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import icalendar
import linktime_email
import pytest
from linktime import accounts, suppressions, workflows
from linktime.actions import ActionContext, Outcome, WorkflowRef
from linktime.api import create_app
from linktime.models import BookingEvent, sample_event
from linktime.runs import RunOut, get_run
from linktime.services import StepServices, read_unsubscribe_token
from linktime.settings import Settings
from linktime.testing import RunAction, event_with
from linktime.testing_hub import LinktimeHub
from litestar.testing import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator
    from email.message import EmailMessage
    from pathlib import Path

    from linktime_email_testing import SmtpPeer

GRACE = "grace@example.com"  # the sample booking's invitee
ADA = "ada@example.com"  # its host
FROM = "bookings@linktime.example"
PUBLIC_URL = "https://hub.example.com"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LinktimeHub]:
    """A hub whose operator set LINKTIME_PUBLIC_URL, so unsubscribe links can be made."""
    hub = LinktimeHub(Settings(data_dir=tmp_path, secret_key="test-secret", public_url=PUBLIC_URL))
    hub.migrate()
    try:
        yield hub
    finally:
        hub.close()


def email(**extra: Any) -> dict[str, Any]:
    return {
        "action": "email.send",
        "settings": {"subject": "About {{ event_name }}", "text": "Hi", **extra},
    }


def workflow(hub: LinktimeHub, account_id: str, trigger: str, *steps: dict[str, Any]) -> None:
    workflows.create(
        hub,
        account_id,
        workflows.WorkflowIn(
            name=trigger,
            trigger=trigger,
            enabled=True,
            steps=[workflows.StepIn(**s) for s in steps],
        ),
    )


def run(hub: LinktimeHub, account_id: str, event: BookingEvent) -> RunOut:
    """Emit ``event``, run the one run it starts to its end, and return it as the API shows it."""
    [run_id] = hub.emit(event, account_id=account_id).run_ids
    hub.process_run(run_id)
    return get_run(hub, account_id, run_id)


def changed(event_type: str, event_id: str, at: datetime, **booking: Any) -> BookingEvent:
    data = event_with(**booking).model_dump(mode="json")
    data.update(id=event_id, type=event_type, occurred_at=at.isoformat())
    return BookingEvent.model_validate(data)


def invite(message: EmailMessage) -> tuple[str, icalendar.Calendar]:
    """The calendar part a mail client reads (its Content-Type's method and the calendar)."""
    [part] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    calendar = icalendar.Calendar.from_ical(part.get_content())
    return part.get_param("method"), calendar


def vevent(calendar: icalendar.Calendar) -> icalendar.Event:
    [event] = calendar.walk("VEVENT")
    return event


# --- calendar invites ----------------------------------------------------------------------------


def test_created_rescheduled_cancelled_send_request_request_cancel(
    hub: LinktimeHub, peer: SmtpPeer
) -> None:
    account = accounts.create_account(hub, "Acme", "business")
    invite_step = email(to_invitee=True, calendar_invite=True)
    for trigger in ("booking.created", "booking.rescheduled", "booking.cancelled"):
        workflow(hub, account.id, trigger, invite_step)

    created = sample_event()
    new_start = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
    rescheduled = changed(
        "booking.rescheduled",
        "evt_moved",
        created.occurred_at + timedelta(days=1),
        start=new_start.isoformat(),
        end=(new_start + timedelta(minutes=30)).isoformat(),
    )
    cancelled = changed(
        "booking.cancelled",
        "evt_cancelled",
        created.occurred_at + timedelta(days=2),
        start=new_start.isoformat(),
        end=(new_start + timedelta(minutes=30)).isoformat(),
    )
    for event in (created, rescheduled, cancelled):
        assert run(hub, account.id, event).status == "succeeded"

    got = [invite(d.message) for d in peer.delivered]
    assert [method for method, _ in got] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(c["METHOD"]) for _, c in got] == ["REQUEST", "REQUEST", "CANCEL"]
    events = [vevent(c) for _, c in got]
    assert {str(e["UID"]) for e in events} == {"bk_sample@linktime"}
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2]
    assert [str(e["STATUS"]) for e in events] == ["CONFIRMED", "CONFIRMED", "CANCELLED"]
    starts = [e.decoded("DTSTART") for e in events]
    assert starts == [created.booking.start, new_start, new_start]
    assert all(e["DTSTART"].to_ical().endswith(b"Z") for e in events)  # in UTC
    assert events[1].decoded("DTEND") == new_start + timedelta(minutes=30)
    first = events[0]
    assert str(first["SUMMARY"]) == "Intro call between Ada Lovelace and Grace Hopper"
    assert str(first["LOCATION"]) == "Online"
    assert str(first["URL"]) == "https://meet.example.com/abc"
    assert "Join: https://meet.example.com/abc" in str(first["DESCRIPTION"])
    assert str(first["ORGANIZER"]) == f"mailto:{ADA}"
    assert first["ORGANIZER"].params["CN"] == "Ada Lovelace"
    attendee = first["ATTENDEE"]
    assert str(attendee) == f"mailto:{GRACE}"
    assert (attendee.params["RSVP"], attendee.params["CN"]) == ("TRUE", "Grace Hopper")
    assert "DTSTAMP" in first


def test_invite_as_mail_clients_expect_it(run_action: RunAction, peer: SmtpPeer) -> None:
    # Cal.com's own invite put the event in the calendar under its iCalUID: ours updates it.
    event = event_with(iCalUID="cal-abc123@Cal.com")
    result = run_action(
        "email.send", email(to_invitee=True, calendar_invite=True)["settings"], event
    )

    assert result.outcome is Outcome.SUCCEEDED, result.error
    msg = peer.delivered[0].message
    # multipart/mixed: (text, calendar) alternatives, then invite.ics, as Google Calendar sends.
    assert msg.get_content_type() == "multipart/mixed"
    body, attachment = msg.iter_parts()
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/calendar"]
    method, calendar = invite(msg)
    assert method == "REQUEST"
    assert str(vevent(calendar)["UID"]) == "cal-abc123@Cal.com"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_content_disposition() == "attachment"
    attached = icalendar.Calendar.from_ical(attachment.get_content())
    assert str(vevent(attached)["UID"]) == "cal-abc123@Cal.com"
    # Outside a hub nobody counts reschedules: the first version.
    assert int(vevent(attached)["SEQUENCE"]) == 0


@pytest.mark.parametrize(
    "odd", ["guest@example.com\r\nX-Injected: 1", "not an address", 'x@y.com" ; ROLE=CHAIR']
)
def test_a_co_invitee_without_a_valid_address_is_left_out_of_the_invite(
    run_action: RunAction, peer: SmtpPeer, odd: str
) -> None:
    """What a booker typed for a guest neither breaks the invite nor goes into it."""
    event = event_with(
        invitees=[{"name": "Co", "email": odd}, {"name": "Bo", "email": "bo@example.com"}]
    )
    result = run_action(
        "email.send", email(to_invitee=True, calendar_invite=True)["settings"], event
    )

    assert result.outcome is Outcome.SUCCEEDED, result.error
    _, calendar = invite(peer.delivered[0].message)
    attendees = vevent(calendar).get("ATTENDEE")
    addresses = [str(a) for a in (attendees if isinstance(attendees, list) else [attendees])]
    assert addresses == [f"mailto:{event.booking.invitee.email}", "mailto:bo@example.com"]


def test_no_invite_unless_asked(run_action: RunAction, peer: SmtpPeer) -> None:
    run_action("email.send", email(to_invitee=True)["settings"])
    msg = peer.delivered[0].message
    assert msg.get_content_type() == "text/plain"
    assert msg["List-Unsubscribe"] is None


# --- one-click unsubscribe -----------------------------------------------------------------------


def test_follow_up_has_a_one_click_link_per_recipient_transactional_has_none(
    hub: LinktimeHub, peer: SmtpPeer
) -> None:
    account = accounts.create_account(hub, "Acme", "business")
    workflow(
        hub,
        account.id,
        "booking.created",
        email(to_invitee=True),  # the confirmation: transactional
        email(to_invitee=True, to_hosts=True, follow_up=True),  # a survey, to both
    )
    result = run(hub, account.id, sample_event())

    assert [s.status for s in result.steps] == ["succeeded", "succeeded"]
    confirmation, *follow_ups = [d.message for d in peer.delivered]
    assert confirmation["List-Unsubscribe"] is None
    assert confirmation["List-Unsubscribe-Post"] is None
    # One message each: the link unsubscribes the one who clicks it, nobody else.
    assert [d.rcpt_tos for d in peer.delivered[1:]] == [[GRACE], [ADA]]
    for msg, address in zip(follow_ups, [GRACE, ADA], strict=True):
        assert msg["To"].addresses[0].addr_spec == address
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = msg["List-Unsubscribe"]
        assert link.startswith(f"<{PUBLIC_URL}/v1/unsubscribe/") and link.endswith(">")
        token = urlsplit(link[1:-1]).path.rsplit("/", 1)[1]
        assert read_unsubscribe_token(hub.secret_key(), token) == (account.id, address)
    # Distinct, stable Message-IDs; the step records the first.
    ids = [m["Message-ID"] for m in follow_ups]
    assert len(set(ids)) == 2
    assert result.steps[1].external_id == ids[0]
    assert result.steps[1].attempt_log[0].response_excerpt is not None
    assert "one message per recipient" in result.steps[1].attempt_log[0].response_excerpt


def test_follow_up_one_recipient_refused_is_reported_not_retried(
    hub: LinktimeHub, peer: SmtpPeer
) -> None:
    account = accounts.create_account(hub, "Acme", "business")
    workflow(
        hub, account.id, "booking.created", email(to_invitee=True, to_hosts=True, follow_up=True)
    )
    peer.answer_rcpt(ADA, "550 5.1.1 no such user")
    result = run(hub, account.id, sample_event())

    # Grace has hers: retrying would send it again.
    [step] = result.steps
    assert step.status == "succeeded"
    assert [d.rcpt_tos for d in peer.delivered] == [[GRACE]]
    excerpt = step.attempt_log[0].response_excerpt
    assert excerpt is not None
    assert excerpt.startswith(
        f"sent to 1 of 2 recipients; not sent to: {ADA} refused: 550 5.1.1 no such user;"
    )


def test_follow_up_without_a_public_url_has_no_link(
    run_action: RunAction, peer: SmtpPeer, linktime_hub: LinktimeHub
) -> None:
    settings = email(to_invitee=True, to_hosts=True, follow_up=True)["settings"]
    result = run_action("email.send", settings)

    # Sent as one message, without headers pointing nowhere.
    assert result.outcome is Outcome.SUCCEEDED
    [got] = peer.delivered
    assert got.rcpt_tos == [GRACE, ADA]
    assert got.message["List-Unsubscribe"] is None

    # The Test panel says why, when it can tell (a hub without LINKTIME_PUBLIC_URL).
    services = StepServices(
        linktime_hub,
        account_id="acc_x",
        plan="business",
        step_id="stp_x",
        booking_uid="bk_sample",
        occurred_at=datetime.now(UTC),
    )
    ctx = ActionContext(
        event=sample_event(),
        trigger="booking.created",
        workflow=WorkflowRef("wf_x", "Survey"),
        account_id="acc_x",
        plan="business",
        run_id="run_x",
        step_id="stp_x",
        position=0,
        attempt=1,
        settings=linktime_email.EmailStepSettings.model_validate(settings),
        services=services,
    )
    [problem] = linktime_email.check_email(ctx)
    assert "without an unsubscribe link" in problem.message


# --- the suppression list ------------------------------------------------------------------------


def suppress(hub: LinktimeHub, account_id: str, address: str) -> None:
    with hub.db.begin() as conn:
        suppressions.add(
            conn, account_id, address, "unsubscribed", suppressions.UNSUBSCRIBE, hub.clock()
        )


def test_suppressed_recipient_is_not_sent_and_the_run_goes_on(
    hub: LinktimeHub, peer: SmtpPeer
) -> None:
    account = accounts.create_account(hub, "Acme", "business")
    suppress(hub, account.id, "Grace@Example.com")
    workflow(
        hub,
        account.id,
        "booking.created",
        email(to_invitee=True),  # only Grace: not sent
        email(to_invitee=True, to_hosts=True),  # Grace and Ada: Ada only
        email(to_hosts=True, subject="For the host"),
    )
    result = run(hub, account.id, sample_event())

    assert result.status == "succeeded"
    assert [s.status for s in result.steps] == ["opted_out", "succeeded", "succeeded"]
    opted_out = result.steps[0]
    assert opted_out.error_code == "opted_out"
    assert opted_out.error is not None and GRACE in opted_out.error
    assert opted_out.attempt_log[0].delivery_status == "opted_out"
    # The run finished: the SMTP server got the two later steps, nothing to Grace.
    assert [d.rcpt_tos for d in peer.delivered] == [[ADA], [ADA]]
    assert peer.delivered[0].message["To"] == f"Ada Lovelace <{ADA}>"
    excerpt = result.steps[1].attempt_log[0].response_excerpt
    assert excerpt is not None and excerpt.startswith("sent to 1 of 2 recipients; not sent to:")
    assert "suppression list" in excerpt


# --- sender settings checked at connect ----------------------------------------------------------


@pytest.mark.usefixtures("peer")
def test_sender_settings_refused_at_connect(hub: LinktimeHub) -> None:
    account = accounts.create_account(hub, "Acme", "business")
    auth = {"Authorization": f"Bearer {account.api_key}"}
    with TestClient(create_app(hub)) as client:

        def connect(settings: dict[str, Any]) -> Any:
            return client.put("/v1/integrations/email", json=settings, headers=auth)

        for settings, field, words in [
            ({"from_name": "security@bank.example"}, "from_name", "not an address"),
            ({"from_name": "Acme <ceo@acme.example>"}, "from_name", "not an address"),
            ({"reply_to": FROM.upper()}, "reply_to", "the server's sending address"),
            ({"reply_to": "help@localhost"}, "reply_to", "not a valid email address"),
        ]:
            answer = connect(settings)
            assert answer.status_code == 422, answer.text
            [error] = answer.json()["fields"]
            assert error["field"] == field
            assert words in error["message"]
        # Nothing was stored.
        [shown] = [
            i for i in client.get("/v1/integrations", headers=auth).json() if i["name"] == "email"
        ]
        assert shown["connected"] is False

        answer = connect({"from_name": "Acme Bookings", "reply_to": "help@acme.example"})
        assert answer.status_code == 200, answer.text
