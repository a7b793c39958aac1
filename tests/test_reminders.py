"""Before/after-meeting reminders over PostgreSQL, Redis and a worker, with a clock the test
moves: they follow reschedules and cancellations, edits to the workflow, and fire once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from linktime import workflows
from linktime.accounts import NewAccount
from linktime.models import BookingEvent, sample_event
from linktime.testing import HttpReceiver

from .conftest import Clock, System

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def event(
    kind: str, n: int, start: datetime, *, uid: str = "bk_1", at: datetime | None = None
) -> BookingEvent:
    base = sample_event().booking.model_dump(mode="json")
    booking = {**base, "uid": uid, "start": start, "end": start + timedelta(minutes=30)}
    return sample_event(kind, id=f"evt_{n}", occurred_at=at or T0, booking=booking)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def reminders(make_system: Callable[..., System], clock: Clock, allow_loopback: None) -> System:
    system = make_system(clock=clock)
    system.start()
    return system


def remind(
    system: System, acc: NewAccount, url: str, trigger: str = "meeting.before", minutes: int = 60
) -> str:
    return system.workflow(
        acc,
        [{"action": "webhook.call", "settings": {"url": url}}],
        trigger=trigger,
        offset_minutes=minutes,
    )


def sent(system: System, receiver: HttpReceiver) -> list[dict[str, Any]]:
    """What the receiver got once everything due by the test's clock has been executed."""
    system.settle()
    return [r.json() for r in receiver.requests]


def test_fires_at_due_time_once(
    reminders: System, clock: Clock, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url + "/remind")
    answer = reminders.hub.emit(
        event("booking.created", 1, T0 + timedelta(hours=3)), account_id=acc.id
    )
    assert answer.answer["runs"][0]["status"] == "scheduled"
    assert answer.answer["runs"][0]["due_at"] == "2026-12-01T11:00:00Z"

    clock.advance(hours=1, minutes=59, seconds=59)
    assert sent(reminders, http_receiver) == []
    clock.advance(seconds=1)
    http_receiver.wait_for(1)
    clock.advance(hours=2)
    body = sent(reminders, http_receiver)
    assert len(body) == 1
    assert body[0]["type"] == "meeting.before"
    assert body[0]["data"]["booking"]["start"] == "2026-12-01T12:00:00Z"


def test_reschedule_fires_only_at_the_new_time(
    reminders: System, clock: Clock, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url)
    hub = reminders.hub
    hub.emit(event("booking.created", 1, T0 + timedelta(hours=3)), account_id=acc.id)
    clock.advance(minutes=10)
    moved = event("booking.rescheduled", 2, T0 + timedelta(hours=5), at=clock.now)
    assert hub.emit(moved, account_id=acc.id).answer["runs"][0]["due_at"] == "2026-12-01T13:00:00Z"

    clock.advance(hours=2, minutes=50)  # past the old due time (11:00)
    assert sent(reminders, http_receiver) == []
    clock.advance(hours=2)  # 13:00, the new due time
    http_receiver.wait_for(1)
    clock.advance(hours=3)
    body = sent(reminders, http_receiver)
    assert len(body) == 1 and body[0]["data"]["booking"]["start"] == "2026-12-01T14:00:00Z"


@pytest.mark.parametrize("late", ["before", "after"])
def test_cancelled_booking_never_gets_a_reminder(
    reminders: System, clock: Clock, http_receiver: HttpReceiver, late: str
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url)
    hub = reminders.hub
    hub.emit(event("booking.created", 1, T0 + timedelta(hours=3)), account_id=acc.id)
    clock.advance(minutes=5)
    hub.emit(
        event("booking.cancelled", 2, T0 + timedelta(hours=3), at=clock.now), account_id=acc.id
    )
    # a reschedule that arrives after the cancellation, whether it happened before or after it
    occurred = clock.now + (timedelta(minutes=-1) if late == "before" else timedelta(minutes=1))
    late_event = event("booking.rescheduled", 3, T0 + timedelta(hours=6), at=occurred)
    assert hub.emit(late_event, account_id=acc.id).answer["runs"] == []

    clock.advance(hours=10)
    assert sent(reminders, http_receiver) == []
    runs = [r for r in _runs(reminders, acc) if r.trigger == "meeting.before"]
    assert [(r.status, r.note) for r in runs] == [("cancelled", "the booking was cancelled")]


def test_booking_made_inside_the_window_is_reminded_at_once(
    reminders: System, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url)
    ten_minutes_ahead = event("booking.created", 1, T0 + timedelta(minutes=10))
    answer = reminders.hub.emit(ten_minutes_ahead, account_id=acc.id).answer
    assert "sent at once" in answer["runs"][0]["note"]
    assert len(http_receiver.wait_for(1)) == 1


def test_reminder_for_a_meeting_already_started_is_skipped_with_the_reason(
    reminders: System, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url)
    started = event("booking.created", 1, T0 - timedelta(minutes=5))
    run = reminders.hub.emit(started, account_id=acc.id).answer["runs"][0]
    assert run["status"] == "skipped"
    assert "already past when planned and the meeting had started" in run["note"]
    assert sent(reminders, http_receiver) == []


def test_after_meeting_fires_after_the_end(
    reminders: System, clock: Clock, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url, trigger="meeting.after", minutes=15)
    reminders.hub.emit(event("booking.created", 1, T0 + timedelta(hours=1)), account_id=acc.id)
    clock.advance(hours=1, minutes=44)  # meeting ends 10:30, survey due 10:45
    assert sent(reminders, http_receiver) == []
    clock.advance(minutes=1)
    assert http_receiver.wait_for(1)[0].json()["type"] == "meeting.after"


def test_pending_reminders_follow_workflow_edits(
    reminders: System, clock: Clock, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    hub = reminders.hub
    wf_id = remind(reminders, acc, http_receiver.url)
    hub.emit(event("booking.created", 1, T0 + timedelta(hours=3)), account_id=acc.id)

    def pending() -> list[tuple[str, datetime | None]]:
        return [(r.status, r.due_at) for r in _runs(reminders, acc) if r.workflow_id == wf_id]

    spec = workflows.WorkflowIn(
        name="reminder",
        trigger="meeting.before",
        offset_minutes=15,
        enabled=True,
        steps=[
            {
                # the step named by its id: it keeps its signing secret though its URL changes
                "id": workflows.get(hub, acc.id, wf_id).steps[0].id,
                "action": "webhook.call",
                "settings": {"url": http_receiver.url + "/edited"},
            }
        ],
    )
    workflows.update(hub, acc.id, wf_id, spec)
    assert pending() == [("scheduled", T0 + timedelta(hours=2, minutes=45))]

    workflows.set_enabled(hub, acc.id, wf_id, False)
    assert [s for s, _ in pending()] == ["cancelled"]
    workflows.set_enabled(hub, acc.id, wf_id, True)
    assert sorted(s for s, _ in pending()) == ["cancelled", "scheduled"]

    clock.advance(hours=2, minutes=45)
    received = http_receiver.wait_for(1)
    assert [r.path for r in received] == ["/edited"]  # the steps as edited, not as planned
    assert len(sent(reminders, http_receiver)) == 1


def test_enabling_plans_existing_future_bookings_only(
    reminders: System, clock: Clock, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    hub = reminders.hub
    hub.emit(event("booking.created", 1, T0 + timedelta(hours=4), uid="future"), account_id=acc.id)
    hub.emit(event("booking.created", 2, T0 - timedelta(hours=4), uid="past"), account_id=acc.id)
    hub.emit(event("booking.created", 3, T0 + timedelta(hours=5), uid="gone"), account_id=acc.id)
    hub.emit(event("booking.cancelled", 4, T0 + timedelta(hours=5), uid="gone"), account_id=acc.id)
    wf_id = remind(reminders, acc, http_receiver.url)

    planned = [(r.booking_uid, r.status) for r in _runs(reminders, acc) if r.workflow_id == wf_id]
    assert planned == [("future", "scheduled")]


def test_stale_reschedule_changes_nothing(
    reminders: System, clock: Clock, http_receiver: HttpReceiver
) -> None:
    acc = reminders.account()
    remind(reminders, acc, http_receiver.url)
    hub = reminders.hub
    hub.emit(event("booking.created", 1, T0 + timedelta(hours=3)), account_id=acc.id)
    hub.emit(
        event("booking.rescheduled", 2, T0 + timedelta(hours=6), at=T0 + timedelta(minutes=2)),
        account_id=acc.id,
    )
    stale = event("booking.rescheduled", 3, T0 + timedelta(hours=4), at=T0 + timedelta(minutes=1))
    hub.emit(stale, account_id=acc.id)
    due = [r.due_at for r in _runs(reminders, acc) if r.status == "scheduled"]
    assert due == [T0 + timedelta(hours=5)]


def _runs(system: System, acc: NewAccount) -> list[Any]:
    from linktime.storage import Run
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(system.hub.db) as session:
        return list(
            session.scalars(select(Run).where(Run.account_id == acc.id).order_by(Run.created_at))
        )
