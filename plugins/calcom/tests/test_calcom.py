"""Each Cal.com trigger LinkTime takes, posted as Cal.com documents and signs it to a running
LinkTime server, and the booking event it became, field by field; refusals that store nothing,
an untranslatable payload kept with its reason, and a Cal.com retry that is a replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from linktime import plugins
from linktime.sources import Lookup
from linktime_calcom import CALCOM, HEADER, translate

from .conftest import Calcom

CREATED_ID = "calcom:BOOKING_CREATED:unique-booking-id:2024-01-01T00:00:00.000Z"
BOOKED = {"field": "booking.uid", "op": "exists"}
PAID_DELIVERY = "calcom:BOOKING_PAID:unique-booking-uid:2024-01-01T12:00:00.000Z"
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


def test_a_booking_request_waits_for_the_hosts_confirmation(calcom: Calcom) -> None:
    """Cal.com sends BOOKING_REQUESTED, then BOOKING_CREATED for the same uid when the host
    confirms: workflows on booking.created run once, for the confirmed booking."""
    created = calcom.server.http.post(
        "/v1/workflows",
        json={
            "name": "On booking",
            "trigger": "booking.created",
            "enabled": True,
            "steps": [{"action": "logic.filter", "settings": {"conditions": [BOOKED]}}],
        },
    )
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]

    requested = calcom.send_fixture("BOOKING_REQUESTED")
    assert requested.status_code == 202, requested.text
    note = (
        "a booking request awaiting the host's confirmation: booking.created follows when it "
        "is confirmed"
    )
    assert requested.json() == {"events": [], "note": note}
    [kept] = calcom.deliveries()
    assert (kept["status"], kept["kind"], kept["reason"]) == ("ignored", "BOOKING_REQUESTED", note)
    assert calcom.event_ids() == []

    confirmed = calcom.payload("BOOKING_CREATED")
    confirmed["createdAt"] = "2024-01-01T12:30:00.000Z"  # the host confirms half an hour later
    confirmed["payload"]["uid"] = calcom.payload("BOOKING_REQUESTED")["payload"]["uid"]
    answer = calcom.send(confirmed)
    assert answer.status_code == 200, answer.text
    [event] = answer.json()["events"]
    assert [run["workflow_id"] for run in event["runs"]] == [workflow_id]
    assert calcom.event_ids() == [event["id"]]
    assert calcom.event(event["id"])["booking"]["status"] == "accepted"


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
    # Named by Stripe's PaymentIntent, as the stripe source names the same payment.
    event = calcom.event("payment:pi_0000000000000000")
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
    ("metadata", "payment_id", "event_id"),
    [
        ({"externalId": "pi_3MtwBw"}, 500, "payment:pi_3MtwBw"),
        ({}, "pi_3MtwBw", "payment:pi_3MtwBw"),
        # No processor's id to tell it by: Cal.com's own delivery.
        ({}, 500, PAID_DELIVERY),
        ({"externalId": "ch_3MtwBw"}, None, PAID_DELIVERY),
    ],
)
def test_a_payment_is_named_by_the_processors_payment_id(
    calcom: Calcom, metadata: dict[str, Any], payment_id: Any, event_id: str
) -> None:
    paid = calcom.payload("BOOKING_PAID")
    paid["payload"]["metadata"] = metadata
    paid["payload"]["paymentId"] = payment_id
    assert calcom.send(paid).status_code == 200
    assert calcom.event_ids() == [event_id]
    reference = metadata.get("externalId") or (payment_id and str(payment_id))
    assert calcom.event(event_id)["booking"]["payment"]["reference"] == reference


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


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change setting the payload's dotted ``path`` (list indexes as numbers) to ``value``."""

    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = payload
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value

    return change


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("BOOKING_CREATED", "triggerEvent", ["BOOKING_CREATED"]),
        ("BOOKING_CREATED", "payload.uid", "u" * 201),
        ("BOOKING_CREATED", "payload.title", 5),
        ("BOOKING_CREATED", "payload.eventTypeId", [123]),
        ("BOOKING_CREATED", "payload.bookingId", [[[100]]]),
        ("BOOKING_CREATED", "payload.organizer", "Organizer Name"),
        ("BOOKING_CREATED", "payload.attendees", {"email": "guest@example.com"}),
        ("BOOKING_CREATED", "payload.attendees.0", "guest@example.com"),
        ("BOOKING_CREATED", "payload.attendees.0.email", ["guest@example.com"]),
        ("BOOKING_CREATED", "payload.attendees.0.timeZone", "A" * 5000),
        ("BOOKING_CREATED", "payload.responses", ["Guest User"]),
        ("BOOKING_CREATED", "payload.metadata", ["https://app.example.com/video/x"]),
        ("BOOKING_CREATED", "payload.metadata.videoCallUrl", "https://x.example/" + "x" * 2000),
        ("BOOKING_RESCHEDULED", "payload.rescheduleUid", "x" * 300),
        ("BOOKING_RESCHEDULED", "payload.rescheduleStartTime", 1704119400),
        ("BOOKING_PAID", "payload.price", -1000),
        ("BOOKING_PAID", "payload.currency", "ÿÿÿ"),
        ("BOOKING_PAID", "payload.paymentId", {"id": 500}),
        ("BOOKING_PAID", "payload.metadata.externalId", "pi_" + "0" * 200),
        ("BOOKING_NO_SHOW_UPDATED", "payload.attendees.0.email", None),
        ("BOOKING_NO_SHOW_UPDATED", "payload.attendees.0.email", 7),
    ],
)
def test_a_wrong_type_or_an_absurd_value_is_a_422_naming_the_field(
    calcom: Calcom, name: str, path: str, value: Any
) -> None:
    if name == "BOOKING_NO_SHOW_UPDATED":  # a no-show of a booking LinkTime has
        booked = calcom.payload("BOOKING_CREATED")
        booked["payload"]["uid"] = calcom.payload(name)["payload"]["bookingUid"]
        assert calcom.send(booked).status_code == 200
    before = calcom.event_ids()
    payload = calcom.payload(name)
    _set(path, value)(payload)
    answer = calcom.send(payload)
    assert answer.status_code == 422, answer.text
    [fault] = answer.json()["fields"]
    assert fault["field"] == path, fault
    assert calcom.deliveries()[0]["status"] == "untranslatable"
    assert calcom.event_ids() == before


def test_a_refused_reschedule_leaves_no_alias_behind(calcom: Calcom) -> None:
    """Cal.com's new uid names the original booking only once the reschedule is taken."""
    assert calcom.send_fixture("BOOKING_CREATED").status_code == 200
    moved = calcom.payload("BOOKING_RESCHEDULED")
    moved["payload"]["rescheduleUid"] = "unique-booking-id"
    moved["payload"]["endTime"] = "not a time"
    assert calcom.send(moved).status_code == 422
    cancelled = calcom.payload("BOOKING_CANCELLED")
    cancelled["payload"]["uid"] = moved["payload"]["uid"]
    assert calcom.send(cancelled).status_code == 200
    event = calcom.event("calcom:BOOKING_CANCELLED:new-booking-unique-id:2024-01-01T15:00:00.000Z")
    assert event["booking"]["uid"] == "new-booking-unique-id"


def test_every_trigger_is_judged_by_its_created_at(calcom: Calcom) -> None:
    """A captured delivery of a trigger LinkTime only acknowledges cannot be replayed (and
    kept again) for ever; only Cal.com's ping test may come without createdAt."""
    ended = {"triggerEvent": "MEETING_ENDED", "createdAt": "2020-01-01T00:00:00Z", "payload": {}}
    calcom.now = datetime.fromisoformat("2024-01-01T00:00:00Z")
    refused = [
        calcom.server.post_signed(calcom.connection, ended),
        calcom.server.post_signed(calcom.connection, {**ended, "createdAt": None}),
        calcom.server.post_signed(
            calcom.connection, {"triggerEvent": "MEETING_ENDED", "payload": {}}
        ),
        # At the edge of datetime's years.
        calcom.server.post_signed(
            calcom.connection, {**ended, "createdAt": "0001-01-01T00:00:00+01:00"}
        ),
    ]
    for answer in refused:
        assert answer.status_code == 401, answer.text
    assert calcom.deliveries() == []

    ping = {"triggerEvent": "PING", "payload": {"title": "Test Trigger"}}
    answer = calcom.server.post_signed(calcom.connection, ping)
    assert answer.status_code == 202, answer.text
    assert calcom.send({**ended, "createdAt": "2024-01-01T00:00:00Z"}).status_code == 202
    assert [d["kind"] for d in calcom.deliveries()] == ["MEETING_ENDED", "PING"]


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
