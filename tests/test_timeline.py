"""A booking's timeline and the events list over the API, on PostgreSQL, with the clock and the
runs driven by hand (no worker), so every state is observed on purpose: a reminder is planned
from the booking and moves when it is rescheduled; events are found by invitee email, event id
or booking uid; another account sees none of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.models import sample_event
from litestar.testing import TestClient

from .conftest import Clock, NoSettings, System, registry_with
from .test_dashboard import Dash
from .test_runs_api import auth, make_workflows

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def succeed(_: ActionContext) -> Result:
    return Result.ok(external_id="ext_1")


def busy(_: ActionContext) -> Result:
    return Result.retry("the receiver is busy", http_status=503)


@pytest.fixture
def api(make_system: Callable[..., System]) -> Iterator[tuple[System, TestClient[Any], Clock]]:
    clock = Clock(NOW)
    system = make_system(
        registry=registry_with(
            ActionType("test.ok", "OK", NoSettings, succeed),
            ActionType("test.busy", "Busy", NoSettings, busy),
        ),
        clock=clock,
    )
    with TestClient(create_app(system.hub)) as client:
        yield system, client, clock


def post_event(client: TestClient[Any], h: dict[str, str], **overrides: Any) -> None:
    body = sample_event(**overrides).model_dump(mode="json")
    answer = client.post("/v1/events", json=body, headers=h)
    assert answer.status_code == 202, answer.text


def test_a_reminder_is_planned_and_moves_when_the_booking_is_rescheduled(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, clock = api
    h = auth(system)
    make_workflows(client, h)
    post_event(client, h, id="evt_created", occurred_at=NOW)
    started = client.get("/v1/events/evt_created", headers=h).json()["runs"]
    (queued,) = [r["id"] for r in started if r["status"] == "queued"]
    clock.advance(minutes=1)
    system.hub.process_run(queued)  # the worker's part, done by hand

    timeline = client.get("/v1/bookings/bk_sample/timeline", headers=h).json()
    booking = timeline["booking"]
    assert booking["title"] == "Intro call between Ada Lovelace and Grace Hopper"
    assert (booking["host_timezone"], booking["invitee_timezone"]) == (
        "Europe/Berlin",
        "America/New_York",
    )
    shown = [(e["kind"], e["at"], e["future"]) for e in timeline["entries"]]
    assert shown == [
        ("event", "2026-11-24T10:00:00Z", False),
        ("run", "2026-11-24T10:01:00Z", False),
        ("reminder", "2026-12-01T14:00:00Z", True),  # an hour before the 15:00 start
    ]
    ran = timeline["entries"][1]["run"]
    assert (ran["workflow_name"], ran["status"]) == ("Thank you", "succeeded")
    (attempt,) = ran["steps"][0]["attempt_log"]
    assert (attempt["status"], attempt["external_id"]) == ("succeeded", "ext_1")
    reminder = timeline["entries"][2]["run"]
    assert (reminder["workflow_name"], reminder["planned_by_type"]) == (
        "Reminder",
        "booking.created",
    )

    clock.advance(hours=1)
    booking_moved = sample_event().booking.model_copy(
        update={
            "start": datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
            "end": datetime(2026, 12, 3, 9, 30, tzinfo=UTC),
        }
    )
    post_event(
        client,
        h,
        id="evt_moved",
        type="booking.rescheduled",
        occurred_at=clock.now,
        booking=booking_moved.model_dump(mode="json"),
    )
    timeline = client.get("/v1/bookings/bk_sample/timeline", headers=h).json()
    assert timeline["booking"]["start"] == "2026-12-03T09:00:00Z"
    reminders = [e for e in timeline["entries"] if e["kind"] == "reminder"]
    # Moved, not doubled: the same planned run, at the new time, from the reschedule.
    (moved,) = reminders
    assert moved["at"] == "2026-12-03T08:00:00Z"
    assert moved["run"]["id"] == reminder["id"]
    assert moved["run"]["planned_by"] == "evt_moved"
    assert [e["event"]["type"] for e in timeline["entries"] if e["kind"] == "event"] == [
        "booking.created",
        "booking.rescheduled",
    ]
    # Past before future, "now" between them.
    assert timeline["now"] == "2026-11-24T11:01:00Z"
    flags = [e["future"] for e in timeline["entries"]]
    assert flags == sorted(flags)

    # Cancelled: the reminder is no longer planned; it shows, cancelled, when that happened.
    clock.advance(minutes=5)
    post_event(
        client,
        h,
        id="evt_cancelled",
        type="booking.cancelled",
        occurred_at=clock.now,
        booking=booking_moved.model_dump(mode="json"),
    )
    timeline = client.get("/v1/bookings/bk_sample/timeline", headers=h).json()
    assert timeline["booking"]["status"] == "cancelled"
    assert [e for e in timeline["entries"] if e["kind"] == "reminder"] == []
    (cancelled,) = [e for e in timeline["entries"] if e["run"] and e["run"]["id"] == reminder["id"]]
    assert (cancelled["at"], cancelled["future"]) == ("2026-11-24T11:06:00Z", False)
    assert (cancelled["run"]["status"], cancelled["run"]["note"]) == (
        "cancelled",
        "the booking was cancelled",
    )


def test_another_account_cannot_see_the_booking_or_its_events(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, _ = api
    mine, theirs = auth(system), auth(system)
    make_workflows(client, mine)
    post_event(client, mine, id="evt_mine")

    assert client.get("/v1/bookings/bk_sample/timeline", headers=mine).status_code == 200
    answer = client.get("/v1/bookings/bk_sample/timeline", headers=theirs)
    assert answer.status_code == 404, answer.text
    for q in ("evt_mine", "bk_sample", "grace@example.com"):
        listed = client.get("/v1/events", params={"q": q}, headers=theirs).json()
        assert listed == {"items": [], "next_cursor": None}
    assert client.get("/v1/events", headers=theirs).json()["items"] == []


def test_events_are_listed_newest_first_searched_and_paged(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, clock = api
    h = auth(system)
    make_workflows(client, h)
    for n, email in enumerate(("grace@example.com", "alan@example.com", "Grace@Example.com")):
        clock.advance(minutes=1)
        sample = sample_event().model_dump(mode="json")["booking"]
        sample["uid"] = f"bk_{n}"
        sample["invitee"]["email"] = email
        post_event(client, h, id=f"evt_{n}", occurred_at=clock.now, booking=sample)

    listed = client.get("/v1/events", headers=h).json()
    assert [e["id"] for e in listed["items"]] == ["evt_2", "evt_1", "evt_0"]
    first = listed["items"][0]
    assert first["booking_title"] == "Intro call between Ada Lovelace and Grace Hopper"
    assert (first["event_type"], first["invitee_name"]) == ("Intro call", "Grace Hopper")
    # Both workflows applied: one ran, one planned its reminder.
    assert (first["workflows_ran"], first["workflows"]) == (2, 2)

    def found(q: str) -> list[str]:
        answer = client.get("/v1/events", params={"q": q}, headers=h)
        assert answer.status_code == 200, answer.text
        return [e["id"] for e in answer.json()["items"]]

    assert found("GRACE@example.com") == ["evt_2", "evt_0"]  # email: any case
    assert found("  evt_1 ") == ["evt_1"]
    assert found("bk_0") == ["evt_0"]
    assert found("EVT_1") == []  # ids: exactly
    assert found("grace@") == []  # a whole address, not a part

    page = client.get("/v1/events", params={"limit": 2}, headers=h).json()
    assert [e["id"] for e in page["items"]] == ["evt_2", "evt_1"]
    rest = client.get(
        "/v1/events", params={"limit": 2, "cursor": page["next_cursor"]}, headers=h
    ).json()
    assert rest == {"items": [rest["items"][0]], "next_cursor": None}
    assert rest["items"][0]["id"] == "evt_0"

    bad = client.get("/v1/events", params={"cursor": "yesterday"}, headers=h)
    assert bad.status_code == 422
    assert [f["field"] for f in bad.json()["fields"]] == ["cursor"]
    assert client.get("/v1/events", params={"q": "x" * 321}, headers=h).status_code == 422


def test_an_event_dated_ahead_is_placed_when_received_and_a_retry_when_it_is_due(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, clock = api
    account = system.account()
    h = {"Authorization": f"Bearer {account.api_key}"}
    body = {
        "name": "Tell the CRM",
        "trigger": "booking.cancelled",
        "enabled": True,
        "steps": [{"action": "test.busy", "settings": {}}],
    }
    assert client.post("/v1/workflows", json=body, headers=h).status_code == 201
    post_event(client, h, id="evt_created", occurred_at=NOW)
    clock.advance(minutes=1)
    # The sender's clock is years ahead.
    ahead = datetime(2031, 1, 1, tzinfo=UTC)
    post_event(client, h, id="evt_cancelled", type="booking.cancelled", occurred_at=ahead)
    (run,) = client.get("/v1/events/evt_cancelled", headers=h).json()["runs"]
    clock.advance(minutes=1)
    system.hub.process_run(run["id"])  # the worker's part: the receiver is busy

    timeline = client.get("/v1/bookings/bk_sample/timeline", headers=h).json()
    assert timeline["now"] == "2026-11-24T10:02:00Z"
    shown = [(e["kind"], e["future"]) for e in timeline["entries"]]
    assert shown == [("event", False), ("event", False), ("run", False), ("retry", True)]
    cancelled = timeline["entries"][1]
    assert (cancelled["event"]["id"], cancelled["at"]) == ("evt_cancelled", "2026-11-24T10:01:00Z")
    assert cancelled["event"]["occurred_at"] == "2031-01-01T00:00:00Z"
    retry = timeline["entries"][3]
    (step,) = retry["run"]["steps"]
    assert (retry["run"]["id"], retry["step"]) == (run["id"], 0)
    assert retry["at"] == step["next_attempt_at"] == "2026-11-24T10:02:00.200000Z"

    # On the dashboard: the cancellation before "now", saying when its sender dated it; the
    # retry after it.
    dash = Dash(client)
    dash.sign_in(account.api_key)
    page = dash.get("/bookings/bk_sample").text
    past, future = page.split('id="now"')
    assert "Received before the time its sender gave it" in past
    assert '<time datetime="2031-01-01T00:00:00Z"' in past
    assert "Step 1, Busy, is tried again" in future
    assert '<time datetime="2026-11-24T10:02:00Z"' in future
