"""Each Cal.com trigger LinkTime takes, posted as Cal.com documents and signs it to a running
LinkTime server, and the booking event it became, field by field; refusals that store nothing,
an untranslatable payload kept with its reason, and a Cal.com retry that is a replay."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from linktime import plugins
from linktime.sources import Lookup
from linktime_calcom import CALCOM, HEADER, translate

from .conftest import Calcom

CREATED_ID = "calcom:BOOKING_CREATED:unique-booking-id:2024-01-01T00:00:00.000Z"
ORGANIZER = {
    "name": "Organizer Name",
    "email": "organizer@example.com",
    "phone": None,
    "timezone": "UTC",
}
GUEST = {"name": "Guest User", "email": "guest@example.com", "phone": None, "timezone": "UTC"}
ADDITIONAL = {
    "name": "Additional Guest",
    "email": "additional-guest@example.com",
    "phone": None,
    "timezone": "UTC",
}


def test_a_booking_created_is_a_booking_created(calcom: Calcom) -> None:
    answer = calcom.send_fixture("BOOKING_CREATED")
    assert answer.status_code == 200, answer.text
    event = calcom.event(CREATED_ID)
    assert (event["source"], event["type"]) == ("calcom", "booking.created")
    assert event["occurred_at"] == "2024-01-01T00:00:00Z"
    booking = event["booking"]
    assert booking == booking | {
        "uid": "unique-booking-id",
        "title": "Strategy Session between Organizer and Guest",
        "status": "accepted",
        "event_type": {"id": 123, "slug": "standard-event-type", "title": "Strategy Session"},
        "start": "2024-01-01T10:00:00Z",
        "end": "2024-01-01T10:15:00Z",
        # Cal.com's own link to the call, and it stands for "integrations:video-provider".
        "location": "https://app.example.com/video/unique-booking-id",
        "meeting_url": "https://app.example.com/video/unique-booking-id",
        "host": ORGANIZER,
        "invitee": GUEST,
        "invitees": [GUEST, ADDITIONAL],
        "guests": [ADDITIONAL],
        "notes": None,
        "cancellation_reason": None,
        "reschedule_reason": None,
        "previous_start": None,
        "payment": None,
        "no_show": False,
        "custom_fields": {
            "name": "Guest User",
            "email": "guest@example.com",
            "location": "integrations:video-provider",
            "guests": "additional-guest@example.com",
        },
        "calcom": {"uid": "unique-booking-id", "booking_id": 100},
    }


def test_a_booking_request_is_a_pending_booking(calcom: Calcom) -> None:
    assert calcom.send_fixture("BOOKING_REQUESTED").status_code == 200
    event = calcom.event("calcom:BOOKING_REQUESTED:unique-booking-id:2024-01-01T12:00:00.000Z")
    assert event["type"] == "booking.created"
    booking = event["booking"]
    assert booking == booking | {
        "uid": "unique-booking-id",
        "status": "pending",
        "start": "2024-01-01T13:00:00Z",
        "end": "2024-01-01T13:15:00Z",
        "event_type": {"id": 100, "slug": "standard-event-type", "title": "Strategy Session"},
        "location": "integrations:video-provider",  # no link to stand for it yet
        "meeting_url": None,
        "notes": "Standard meeting notes placeholder",
        "invitee": GUEST,
        "guests": [ADDITIONAL],
    }
    assert booking["custom_fields"]["notes"] == "Standard meeting notes placeholder"


def test_a_cancellation_carries_its_reason(calcom: Calcom) -> None:
    assert calcom.send_fixture("BOOKING_CANCELLED").status_code == 200
    event = calcom.event(
        "calcom:BOOKING_CANCELLED:unique-booking-identifier:2024-01-01T15:00:00.000Z"
    )
    assert event["type"] == "booking.cancelled"
    booking = event["booking"]
    assert booking == booking | {
        "uid": "unique-booking-identifier",
        "status": "cancelled",
        "title": "Strategy Session: Organizer & Guest",
        "start": "2024-01-04T10:00:00Z",
        "end": "2024-01-04T10:15:00Z",
        "cancellation_reason": "I am no longer able to attend this session.",
        "reschedule_reason": "Original slot no longer works.",
        "host": ORGANIZER,
        "invitees": [GUEST, ADDITIONAL],
        "calcom": {"uid": "unique-booking-identifier", "booking_id": 200},
    }


def test_a_rejected_request_is_cancelled_with_the_rejection_reason(calcom: Calcom) -> None:
    assert calcom.send_fixture("BOOKING_REJECTED").status_code == 200
    event = calcom.event(
        "calcom:BOOKING_REJECTED:unique-booking-identifier:2024-01-01T14:00:00.000Z"
    )
    assert event["type"] == "booking.cancelled"
    booking = event["booking"]
    assert booking == booking | {
        "uid": "unique-booking-identifier",
        "status": "rejected",
        "start": "2024-01-01T15:00:00Z",
        "cancellation_reason": "The organizer is no longer available at this time.",
        "notes": "Standard meeting notes placeholder",
    }
    timeline = calcom.server.get("/v1/bookings/unique-booking-identifier/timeline")
    assert timeline["booking"]["status"] == "cancelled"


def test_a_reschedule_moves_the_booking_it_names(calcom: Calcom) -> None:
    assert calcom.send_fixture("BOOKING_RESCHEDULED").status_code == 200
    event = calcom.event(
        "calcom:BOOKING_RESCHEDULED:new-booking-unique-id:2024-01-01T10:00:00.000Z"
    )
    assert event["type"] == "booking.rescheduled"
    booking = event["booking"]
    assert booking == booking | {
        # One booking in LinkTime: the one Cal.com's rescheduleUid names.
        "uid": "previous-booking-unique-id",
        "status": "accepted",
        "start": "2024-01-10T14:30:00Z",
        "end": "2024-01-10T14:45:00Z",
        "previous_start": "2024-01-05T14:30:00Z",
        "meeting_url": "https://app.example.com/video/new-booking-unique-id",
        "calcom": {"uid": "new-booking-unique-id", "booking_id": 201},
    }
    # A later event about Cal.com's new uid is about the same booking.
    cancelled = calcom.payload("BOOKING_CANCELLED")
    cancelled["payload"]["uid"] = "new-booking-unique-id"
    assert calcom.send(cancelled).status_code == 200
    after = calcom.event("calcom:BOOKING_CANCELLED:new-booking-unique-id:2024-01-01T15:00:00.000Z")
    assert after["booking"]["uid"] == "previous-booking-unique-id"


def test_without_its_previous_start_a_reschedule_takes_the_booking_as_linktime_had_it(
    calcom: Calcom,
) -> None:
    assert calcom.send_fixture("BOOKING_CREATED").status_code == 200
    moved = calcom.payload("BOOKING_RESCHEDULED")
    moved["payload"]["rescheduleUid"] = "unique-booking-id"
    del moved["payload"]["rescheduleStartTime"]
    assert calcom.send(moved).status_code == 200
    event = calcom.event(
        "calcom:BOOKING_RESCHEDULED:new-booking-unique-id:2024-01-01T10:00:00.000Z"
    )
    assert event["booking"]["uid"] == "unique-booking-id"
    assert event["booking"]["previous_start"] == "2024-01-01T10:00:00Z"


def test_a_payment_is_received_in_major_units(calcom: Calcom) -> None:
    assert calcom.send_fixture("BOOKING_PAID").status_code == 200
    event = calcom.event("calcom:BOOKING_PAID:unique-booking-uid:2024-01-01T12:00:00.000Z")
    assert event["type"] == "payment.received"
    booking = event["booking"]
    assert booking == booking | {
        "uid": "unique-booking-uid",
        "start": "2024-01-02T10:00:00Z",
        "end": "2024-01-02T10:30:00Z",
        "event_type": {"id": 50, "slug": "Consultation Session", "title": "Consultation Session"},
        "invitee": GUEST,
        "guests": [],
    }
    assert Decimal(booking["payment"].pop("amount")) == Decimal("10.00")
    assert booking["payment"] == {"currency": "USD", "reference": "pi_0000000000000000"}


@pytest.mark.parametrize(
    ("price", "currency", "amount"),
    [(1000, "usd", "10.00"), (1000, "JPY", "1000"), (1500, "kwd", "1.500")],
)
def test_minor_units_follow_the_currency(price: int, currency: str, amount: str) -> None:
    paid = Calcom.payload("BOOKING_PAID")
    paid["payload"] |= {"price": price, "currency": currency}
    [event] = translate(paid, Lookup()).events
    assert event.booking.payment is not None
    assert (event.booking.payment.amount, event.booking.payment.currency) == (
        Decimal(amount),
        currency.upper(),
    )


def test_a_no_show_marks_the_booking_cal_com_names(calcom: Calcom) -> None:
    booked = calcom.payload("BOOKING_CREATED")
    booked["payload"]["uid"] = "5vQFqxDFMjdgKGMijqtqRw"
    assert calcom.send(booked).status_code == 200
    assert calcom.send_fixture("BOOKING_NO_SHOW_UPDATED").status_code == 200
    event = calcom.event(
        "calcom:BOOKING_NO_SHOW_UPDATED:5vQFqxDFMjdgKGMijqtqRw:2025-12-01T12:34:34.774Z"
    )
    assert event["type"] == "booking.no_show"
    booking = event["booking"]
    assert booking == booking | {
        "uid": "5vQFqxDFMjdgKGMijqtqRw",
        "no_show": True,
        "no_show_attendees": ["test@example.com"],
        "start": "2024-01-01T10:00:00Z",  # as the booking stood
        "invitee": GUEST,
    }

    unmarked = calcom.send_fixture("BOOKING_NO_SHOW_UPDATED-unmarked")
    assert unmarked.status_code == 202, unmarked.text
    assert "took a no-show mark back" in unmarked.json()["note"]


def test_a_no_show_for_a_booking_linktime_never_had_is_only_noted(calcom: Calcom) -> None:
    answer = calcom.send_fixture("BOOKING_NO_SHOW_UPDATED")
    assert answer.status_code == 202, answer.text
    assert answer.json()["note"] == (
        "no booking '5vQFqxDFMjdgKGMijqtqRw' reached LinkTime: nothing to mark"
    )
    assert calcom.event_ids() == []


def test_other_triggers_are_acknowledged_and_kept(calcom: Calcom) -> None:
    answer = calcom.send_fixture("OOO_CREATED")
    assert answer.status_code == 202, answer.text
    note = "Cal.com's OOO_CREATED is not a booking change LinkTime takes"
    assert answer.json()["note"] == note
    [kept] = calcom.deliveries()
    assert (kept["status"], kept["kind"], kept["reason"]) == ("ignored", "OOO_CREATED", note)
    assert calcom.event_ids() == []


def test_a_retry_of_a_delivery_is_a_replay(calcom: Calcom) -> None:
    assert calcom.send_fixture("BOOKING_CREATED").status_code == 200
    again = calcom.send_fixture("BOOKING_CREATED")
    assert again.status_code == 200
    assert calcom.event_ids() == [CREATED_ID]
    assert [d["events"][0]["replayed"] for d in calcom.deliveries()] == [True, False]


def test_unsigned_forged_stale_and_foreign_deliveries_are_refused_storing_nothing(
    calcom: Calcom,
) -> None:
    other = calcom.server.connect("calcom")["settings"]["signing_secret"]
    booked = calcom.payload("BOOKING_CREATED")
    refused = [
        calcom.send(booked, headers={HEADER: ""}),
        calcom.send(booked, headers={HEADER: "no-secret-provided"}),  # a webhook without one
        calcom.send(booked, headers={HEADER: "0" * 64}),
        calcom.send(booked, secret=other),
        # Cal.com signs no time: its signed createdAt is judged, either way.
        calcom.send(booked, late=timedelta(minutes=5, seconds=1)),
        calcom.send(booked, late=-timedelta(minutes=5, seconds=1)),
    ]
    for answer in refused:
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "bad_signature"
    fields = [a.json()["fields"][0]["message"] for a in refused]
    assert fields[0] == fields[1] == f"no {HEADER} signature: give the Cal.com webhook a secret"
    assert fields[2] == fields[3] == f"the {HEADER} signature does not match"
    assert fields[4] == fields[5] == "createdAt is more than 5 minutes from now: a replay"
    assert calcom.event_ids() == []
    assert calcom.deliveries() == []

    assert calcom.send(booked, late=timedelta(minutes=4, seconds=59)).status_code == 200


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            lambda p: p["payload"].pop("startTime"),
            "payload.startTime",
            "expected an ISO 8601 time with a timezone",
        ),
        (
            lambda p: p["payload"].pop("uid"),
            "payload.uid",
            "missing: Cal.com names every booking by uid",
        ),
        (
            lambda p: p["payload"]["attendees"][0].update(timeZone="Mars/Olympus"),
            "event.booking.invitee.timezone",
            "unknown IANA timezone 'Mars/Olympus'",
        ),
    ],
)
def test_an_untranslatable_booking_is_kept_with_the_field_at_fault(
    calcom: Calcom, change: Any, field: str, message: str
) -> None:
    booked = calcom.payload("BOOKING_CREATED")
    change(booked)
    answer = calcom.send(booked)
    assert answer.status_code == 422, answer.text
    [fault] = answer.json()["fields"]
    assert fault["field"] == field and message in fault["message"]
    [kept] = calcom.deliveries()
    assert (kept["status"], kept["kind"]) == ("untranslatable", "BOOKING_CREATED")
    assert kept["reason"].startswith(f"{field}: ")
    assert calcom.event_ids() == []


def test_a_custom_payload_template_is_named_as_the_cause(calcom: Calcom) -> None:
    templated = {"createdAt": "2024-01-01T00:00:00.000Z", "content": "A new event"}
    answer = calcom.send(templated)
    assert answer.status_code == 422
    assert answer.json()["fields"] == [
        {"field": "triggerEvent", "message": "missing: is a payload template set in Cal.com?"}
    ]


def test_the_sample_is_a_booking_created_through_the_signed_path(calcom: Calcom) -> None:
    answer = calcom.server.http.post(f"/v1/sources/{calcom.connection['id']}/sample")
    assert answer.status_code == 200, answer.text
    [made] = calcom.deliveries()[0]["events"]
    assert made["type"] == "booking.created"
    booking = calcom.event(made["id"])["booking"]
    assert booking["uid"] == "calcom-sample-booking"
    assert booking["start"] == "2024-01-02T00:00:00Z"  # a day after the hub's now
    assert booking["invitee"]["timezone"] == "America/New_York"


def test_installing_the_package_registers_the_source() -> None:
    assert plugins.load().sources["calcom"] is CALCOM
