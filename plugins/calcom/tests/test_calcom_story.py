"""A Cal.com booking made, rescheduled (Cal.com's new uid) and cancelled is one booking in
LinkTime, and the reminder a "meeting.before" workflow planned for it is moved, then dropped."""

from __future__ import annotations

from typing import Any

from .conftest import Calcom

REMINDER = {
    "name": "An hour before",
    "trigger": "meeting.before",
    "offset_minutes": 60,
    "enabled": True,
    "steps": [
        {
            "action": "logic.filter",
            "settings": {"conditions": [{"field": "booking.confirmed", "op": "eq", "value": True}]},
        }
    ],
}


def reminders(timeline: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["at"], e["run"]["id"]) for e in timeline["entries"] if e["kind"] == "reminder"]


def test_created_rescheduled_cancelled_is_one_booking_and_its_reminder_follows(
    calcom: Calcom,
) -> None:
    saved = calcom.server.http.post("/v1/workflows", json=REMINDER)
    assert saved.status_code == 201, saved.text
    path = "/v1/bookings/unique-booking-id/timeline"

    assert calcom.send_fixture("BOOKING_CREATED").status_code == 200
    [(due, run_id)] = reminders(calcom.server.get(path))
    assert due == "2024-01-01T09:00:00Z"  # an hour before the 10:00 start

    # Cal.com moves it: a new booking (uid) that names the old one.
    moved = calcom.payload("BOOKING_RESCHEDULED")
    moved["createdAt"] = "2024-01-01T01:00:00.000Z"
    moved["payload"] |= {
        "rescheduleUid": "unique-booking-id",
        "rescheduleStartTime": "2024-01-01T10:00:00Z",
        "rescheduleEndTime": "2024-01-01T10:15:00Z",
    }
    assert calcom.send(moved).status_code == 200
    timeline = calcom.server.get(path)
    assert timeline["booking"]["start"] == "2024-01-10T14:30:00Z"
    # The same planned run, at the new time.
    assert reminders(timeline) == [("2024-01-10T13:30:00Z", run_id)]

    # Cal.com cancels its new uid: LinkTime's one booking is cancelled.
    cancelled = calcom.payload("BOOKING_CANCELLED")
    cancelled["createdAt"] = "2024-01-01T02:00:00.000Z"
    cancelled["payload"] |= {
        "uid": "new-booking-unique-id",
        "startTime": "2024-01-10T14:30:00Z",
        "endTime": "2024-01-10T14:45:00Z",
    }
    assert calcom.send(cancelled).status_code == 200
    timeline = calcom.server.get(path)
    assert timeline["booking"]["status"] == "cancelled"
    assert reminders(timeline) == []
    [run] = [e["run"] for e in timeline["entries"] if e["run"] and e["run"]["id"] == run_id]
    assert (run["status"], run["note"]) == ("cancelled", "the booking was cancelled")
    events = [e["event"] for e in timeline["entries"] if e["kind"] == "event"]
    assert [(e["type"], e["source"]) for e in events] == [
        ("booking.created", "calcom"),
        ("booking.rescheduled", "calcom"),
        ("booking.cancelled", "calcom"),
    ]
    # Nothing was filed under Cal.com's second uid.
    assert calcom.server.http.get("/v1/bookings/new-booking-unique-id/timeline").status_code == 404
