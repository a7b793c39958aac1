"""Booking state and the time-triggered runs planned from it (before/after the meeting).

A before/after workflow gets one scheduled run per booking: planned when the booking is
created, moved when it is rescheduled, cancelled when it is cancelled; enabling the workflow
plans it for existing future bookings, editing its offset moves its pending runs, disabling it
cancels them. A scheduled run carries no steps until it fires: they are copied from the
workflow then, so edits made in the meantime apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from .actions import TriggerType
from .models import BookingEvent
from .storage import BookingState, Run, RunStep, Workflow, insert_ignoring, new_id

# Runs not under way on a worker right now, and so safe to cancel.
PENDING = ("scheduled", "queued", "waiting")


@dataclass(frozen=True)
class Applied:
    fresh: bool  # the event changed the booking's state (not stale, booking not cancelled)
    cancelled: bool  # the booking is cancelled (now or before)
    start: datetime
    end: datetime


def apply_event(conn: Connection, account_id: str, event: BookingEvent, event_pk: str) -> Applied:
    """Fold an event into the booking's state. A stale event (older than the state) changes
    nothing; a cancelled booking stays cancelled whatever arrives after."""
    b = event.booking
    cancelling = event.type == "booking.cancelled"
    values = {
        "account_id": account_id,
        "uid": b.uid,
        "status": "cancelled" if cancelling else b.status,
        "start": b.start,
        "end": b.end,
        "event_id": event_pk,
        "last_event_at": event.occurred_at,
    }
    if insert_ignoring(conn, BookingState, values):
        return Applied(True, cancelling, b.start, b.end)
    state = conn.execute(
        select(
            BookingState.status, BookingState.start, BookingState.end, BookingState.last_event_at
        )
        .where(BookingState.account_id == account_id, BookingState.uid == b.uid)
        .with_for_update()
    ).one()
    if state.status == "cancelled":
        return Applied(False, True, state.start, state.end)
    if not cancelling and event.occurred_at < state.last_event_at:
        return Applied(False, False, state.start, state.end)
    values["last_event_at"] = max(event.occurred_at, state.last_event_at)
    conn.execute(
        update(BookingState)
        .where(BookingState.account_id == account_id, BookingState.uid == b.uid)
        .values(**values)
    )
    return Applied(True, cancelling, b.start, b.end)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def decide(
    trigger: TriggerType, offset_minutes: int, start: datetime, end: datetime, now: datetime
) -> tuple[datetime | None, str | None]:
    """When a time-triggered run should fire, or None with the reason it never will.

    A due time already past when planned fires at once if the meeting has not started (a
    booking made 10 minutes ahead still gets its 1-hour reminder); otherwise it is skipped."""
    # In UTC: arithmetic on a zone-aware datetime is wall-clock, wrong across a DST change.
    anchor = (start if trigger.anchor == "start" else end).astimezone(UTC)
    due = anchor + timedelta(minutes=trigger.direction * offset_minutes)
    if due > now:
        return due, None
    if now < start:
        return now, f"due {_iso(due)}, already past when planned: sent at once"
    state = "ended" if now >= end else "started"
    return None, f"due {_iso(due)}, already past when planned and the meeting had {state}"


@dataclass(frozen=True)
class Planned:
    run_id: str
    workflow_id: str
    status: str
    due_at: datetime | None
    note: str | None


@dataclass(frozen=True)
class TimeWorkflow:
    id: str
    name: str
    trigger: TriggerType
    offset_minutes: int


def plan(
    conn: Connection,
    account_id: str,
    booking_uid: str,
    event_pk: str,
    start: datetime,
    end: datetime,
    workflows: list[TimeWorkflow],
    now: datetime,
) -> list[Planned]:
    """Give each workflow its one run for this booking: move the pending one, or plan one."""
    if not workflows:
        return []
    pending = {
        r.workflow_id: r.id
        for r in conn.execute(
            select(Run.id, Run.workflow_id).where(
                Run.account_id == account_id,
                Run.booking_uid == booking_uid,
                Run.status == "scheduled",
            )
        )
    }
    planned = []
    for wf in workflows:
        due, note = decide(wf.trigger, wf.offset_minutes, start, end, now)
        status = "scheduled" if due is not None else "skipped"
        values: dict[str, Any] = {
            "trigger": wf.trigger.name,
            "status": status,
            "due_at": due,
            "note": note,
            "event_id": event_pk,
            "finished_at": None if due is not None else now,
        }
        if wf.id in pending:
            conn.execute(update(Run).where(Run.id == pending[wf.id]).values(**values))
            run_id = pending[wf.id]
        else:
            run_id = new_id("run")
            conn.execute(
                insert(Run).values(
                    id=run_id,
                    account_id=account_id,
                    workflow_id=wf.id,
                    workflow_name=wf.name,
                    booking_uid=booking_uid,
                    created_at=now,
                    **values,
                )
            )
        planned.append(Planned(run_id, wf.id, status, due, note))
    return planned


def due_now(planned: list[Planned], now: datetime) -> list[str]:
    return [p.run_id for p in planned if p.due_at is not None and p.due_at <= now]


def cancel(conn: Connection, where: Any, reason: str, now: datetime) -> None:
    """Cancel the runs matching ``where`` that are pending; their unfinished steps are
    skipped."""
    run_ids = list(conn.scalars(select(Run.id).where(where, Run.status.in_(PENDING))))
    if not run_ids:
        return
    conn.execute(
        update(Run)
        .where(Run.id.in_(run_ids))
        .values(status="cancelled", note=reason, due_at=None, finished_at=now)
    )
    conn.execute(
        update(RunStep)
        .where(RunStep.run_id.in_(run_ids), RunStep.status == "pending")
        .values(status="skipped", finished_at=now)
    )


def cancel_for_booking(
    conn: Connection, account_id: str, uid: str, time_triggers: list[str], now: datetime
) -> None:
    cancel(
        conn,
        and_(
            Run.account_id == account_id,
            Run.booking_uid == uid,
            Run.trigger.in_(time_triggers),
        ),
        "the booking was cancelled",
        now,
    )


def replan_workflow(
    conn: Connection, wf: Workflow, trigger: TriggerType | None, now: datetime
) -> list[str]:
    """Bring a workflow's planned runs in line with it: cancelled unless it is an enabled time
    workflow; otherwise one per live future booking (pending ones moved to the new time)."""
    if not wf.enabled or trigger is None or trigger.kind != "time":
        cancel(
            conn,
            and_(Run.workflow_id == wf.id, Run.status == "scheduled"),
            "the workflow was disabled or changed",
            now,
        )
        return []
    anchor = BookingState.end if trigger.anchor == "end" else BookingState.start
    horizon = now - timedelta(minutes=wf.offset_minutes) if trigger.anchor == "end" else now
    live = conn.execute(
        select(BookingState.uid, BookingState.start, BookingState.end, BookingState.event_id).where(
            BookingState.account_id == wf.account_id,
            BookingState.status != "cancelled",
            anchor > horizon,
        )
    ).all()
    one = [TimeWorkflow(wf.id, wf.name, trigger, wf.offset_minutes)]
    planned = []
    for b in live:
        planned += plan(conn, wf.account_id, b.uid, b.event_id, b.start, b.end, one, now)
    return due_now(planned, now)
