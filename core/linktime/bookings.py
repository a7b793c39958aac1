"""Booking state and the time-triggered runs planned from it (before/after the meeting).

A before/after workflow gets one pending run per booking: planned when the booking is
created, moved when it is rescheduled, cancelled when it is cancelled; enabling the workflow
plans it for existing future bookings, editing its offset moves its pending runs, disabling it
cancels them. A planned run carries no steps until it fires: they are copied from the
workflow then, so edits made in the meantime apply.

Workers claim runs while events and edits move them, so every change of a planned run's status
is one conditional statement (``UPDATE … WHERE status IN (…) RETURNING``) whose rows are
counted, never a read followed by a write by id; and the database holds at most one pending
reminder per workflow and booking (``storage.PENDING_REMINDER``). When a worker claims one, it
checks it against the booking as it is then (``on_claim``), so a stale reminder never goes out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from . import credits, metrics
from .actions import TriggerType
from .conditions import Live
from .models import Booking, BookingEvent
from .statuses import RUN_PENDING, RunStatus, StepStatus
from .storage import Account, BookingState, Run, RunStep, Workflow, insert_ignoring, new_id

CANCELLED_IN_DELAY = "the booking was cancelled during a delay"

# A planned run no worker has taken (``unfired``) in one of these is its workflow's pending
# reminder for its booking (storage.PENDING_REMINDER): what a reschedule moves. One a worker
# has taken (sending, or waiting for a retry) has started; a reschedule plans another beside it.
UNFIRED_PENDING = (RunStatus.SCHEDULED, RunStatus.QUEUED)


def _pending_reminder(run: Any) -> ColumnElement[bool]:
    return and_(run.unfired.is_(True), run.status.in_(UNFIRED_PENDING))


@dataclass(frozen=True)
class Applied:
    fresh: bool  # the event changed the booking's state (not stale, booking not cancelled)
    cancelled: bool  # the booking is cancelled (now or before)
    start: datetime
    end: datetime
    live: Live  # the booking's state after the event: what workflow conditions see


_STATE = (
    BookingState.status,
    BookingState.start,
    BookingState.end,
    BookingState.last_event_at,
    BookingState.paid_at,
    BookingState.no_show,
    BookingState.event_id,
)


def _live(state: Any) -> Live:
    return Live(state.status, state.start, state.end, state.paid_at is not None, state.no_show)


def apply_event(conn: Connection, account_id: str, event: BookingEvent, event_pk: str) -> Applied:
    """Fold an event into the booking's state. A stale event (older than the state) changes
    nothing but a payment, which is a fact whenever it arrives; a cancelled booking stays
    cancelled whatever arrives after."""
    b = event.booking
    cancelling = event.type == "booking.cancelled"
    paying = event.type == "payment.received"
    values: dict[str, Any] = {
        "account_id": account_id,
        "uid": b.uid,
        "status": "cancelled" if cancelling else b.status,
        "start": b.start,
        "end": b.end,
        "event_id": event_pk,
        "last_event_at": event.occurred_at,
        # A booking.no_show event marks it whatever its body says.
        "no_show": b.no_show or event.type == "booking.no_show",
    }
    # Once marked, it stays marked (events after it, a payment, need not repeat it) until the
    # booking moves to a new meeting.
    keeps_no_show = event.type != "booking.rescheduled"
    if paying:
        values["paid_at"] = event.occurred_at
    if insert_ignoring(conn, BookingState, values):
        live = Live(values["status"], b.start, b.end, paying, values["no_show"])
        return Applied(True, cancelling, b.start, b.end, live)
    where = (BookingState.account_id == account_id, BookingState.uid == b.uid)
    state = conn.execute(select(*_STATE).where(*where).with_for_update()).one()
    # A payment and a no-show are facts whenever they arrive, even after a later change.
    facts: dict[str, Any] = {}
    if paying and state.paid_at is None:
        facts["paid_at"] = event.occurred_at
    if event.type == "booking.no_show" and not state.no_show:
        facts["no_show"] = True
    if facts:
        conn.execute(update(BookingState).where(*where).values(**facts))
    live = _live(state)
    live = replace(
        live, paid=live.paid or "paid_at" in facts, no_show=live.no_show or "no_show" in facts
    )
    if state.status == "cancelled":
        return Applied(False, True, state.start, state.end, live)
    if not cancelling and event.occurred_at < state.last_event_at:
        return Applied(False, False, state.start, state.end, live)
    values["last_event_at"] = max(event.occurred_at, state.last_event_at)
    values["no_show"] = values["no_show"] or (live.no_show and keeps_no_show)
    values.pop("paid_at", None)  # set above, once
    conn.execute(update(BookingState).where(*where).values(**values))
    live = Live(values["status"], b.start, b.end, live.paid, values["no_show"])
    return Applied(True, cancelling, b.start, b.end, live)


@dataclass(frozen=True)
class Now:
    """A booking as it stands, and the last event applied to it."""

    live: Live
    event_id: str


def now_standing(conn: Connection, account_id: str, uid: str) -> Now | None:
    """The booking's current state; None for a booking no event has been stored about (a
    test run's)."""
    state = conn.execute(
        select(*_STATE).where(BookingState.account_id == account_id, BookingState.uid == uid)
    ).first()
    return None if state is None else Now(_live(state), state.event_id)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def due_time(trigger: TriggerType, offset_minutes: int, start: datetime, end: datetime) -> datetime:
    """The moment a time trigger names for a booking (OverflowError beyond the calendar)."""
    # In UTC: arithmetic on a zone-aware datetime is wall-clock, wrong across a DST change.
    anchor = (start if trigger.anchor == "start" else end).astimezone(UTC)
    return anchor + timedelta(minutes=trigger.direction * offset_minutes)


def decide(
    trigger: TriggerType, offset_minutes: int, start: datetime, end: datetime, now: datetime
) -> tuple[datetime | None, str | None]:
    """When a time-triggered run should fire, or None with the reason it never will.

    A due time already past when planned fires at once if the meeting has not started (a
    booking made 10 minutes ahead still gets its 1-hour reminder); otherwise it is skipped."""
    try:
        due = due_time(trigger, offset_minutes, start, end)
    except OverflowError:
        # Events are refused outside models.EARLIEST..LATEST; a booking stored before that
        # check must not stop every other booking of the account from being planned.
        return None, "the due time is beyond the calendar's range: never sent"
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
    """Give each workflow its one pending run for this booking: move the pending one, or plan
    one. A reminder a worker has claimed meanwhile is not pending any more: it goes out as
    claimed, and a new one is planned for the new time."""
    planned = []
    for wf in workflows:
        due, note = decide(wf.trigger, wf.offset_minutes, start, end, now)
        status = RunStatus.SCHEDULED if due is not None else RunStatus.SKIPPED
        values: dict[str, Any] = {
            "trigger": wf.trigger.name,
            "status": status,
            "due_at": due,
            "note": note,
            "event_id": event_pk,
            "finished_at": None if due is not None else now,
        }
        move = (
            update(Run)
            .where(
                Run.account_id == account_id,
                Run.booking_uid == booking_uid,
                Run.workflow_id == wf.id,
                _pending_reminder(Run),
            )
            .values(**values)
            .returning(Run.id)
        )
        while True:
            run_id = conn.scalar(move)
            if run_id is not None:
                break
            run_id = new_id("run")
            row = {
                "id": run_id,
                "account_id": account_id,
                "workflow_id": wf.id,
                "workflow_name": wf.name,
                "booking_uid": booking_uid,
                "created_at": now,
                "unfired": True,
                **values,
            }
            if insert_ignoring(conn, Run, row):
                break
            # Another transaction planned it since (the insert waited for it to commit): move
            # that one, unless a worker has claimed it already.
        planned.append(Planned(run_id, wf.id, status, due, note))
    return planned


def due_now(planned: list[Planned], now: datetime) -> list[str]:
    return [p.run_id for p in planned if p.due_at is not None and p.due_at <= now]


def cancel(conn: Connection, where: ColumnElement[bool], reason: str, now: datetime) -> None:
    """Cancel the runs matching ``where`` that are pending; their unfinished steps are
    skipped. A run a worker claims at the same moment is left to it (the update is conditional
    on the status it finds)."""
    run_ids = list(
        conn.scalars(
            update(Run)
            .where(where, Run.status.in_(RUN_PENDING))
            .values(status=RunStatus.CANCELLED, note=reason, due_at=None, finished_at=now)
            .returning(Run.id)
        )
    )
    metrics.after_commit(conn, metrics.runs_finished, RunStatus.CANCELLED, len(run_ids))
    if run_ids:
        skipped = conn.scalars(
            update(RunStep)
            .where(
                RunStep.run_id.in_(run_ids),
                RunStep.status.in_((StepStatus.PENDING, StepStatus.WAITING)),
            )
            .values(status=StepStatus.SKIPPED, finished_at=now)
            .returning(RunStep.id)
        ).all()
        # A step waiting for its retry keeps what it took until then: unsent, it gives it back.
        credits.refund(conn, *skipped)


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


def _parked(account_id: str, uid: str, step: ColumnElement[bool]) -> ColumnElement[bool]:
    """Runs of the booking with a step matching ``step``, test runs aside."""
    return and_(
        Run.account_id == account_id,
        Run.booking_uid == uid,
        Run.test.is_(False),
        exists().where(RunStep.run_id == Run.id, step),
    )


def cancel_parked(conn: Connection, account_id: str, uid: str, now: datetime) -> None:
    """A booking was cancelled: its runs that went through a wait (a delay step), and have
    not finished, send nothing more, whether they still wait or wait for a retry of a later
    step (but those a cancellation started: their delay is theirs to keep)."""
    cancel(
        conn,
        and_(
            _parked(account_id, uid, RunStep.wait_until.is_not(None)),
            Run.trigger != "booking.cancelled",
        ),
        CANCELLED_IN_DELAY,
        now,
    )


def wake_parked(conn: Connection, account_id: str, uid: str, resend_at: datetime) -> list[str]:
    """A booking moved: its runs waiting on a moment that follows the booking (a delay anchored
    to the meeting) are due now, to work out the new moment (and park again until then); the
    caller enqueues them."""
    follows = and_(RunStep.status == StepStatus.WAITING, RunStep.wait_follows.is_(True))
    return list(
        conn.scalars(
            update(Run)
            .where(_parked(account_id, uid, follows), Run.status == RunStatus.WAITING)
            .values(status=RunStatus.QUEUED, due_at=resend_at)
            .returning(Run.id)
        )
    )


def cancel_retries(
    conn: Connection, account_id: str, uid: str, workflows: list[TimeWorkflow], now: datetime
) -> None:
    """A booking moved: its reminders that have started (a worker took them) and wait to retry
    a step would go on with the old time; they are cancelled (the new time's reminder is
    planned). One a worker is sending right now is left to finish."""
    if not workflows:
        return
    cancel(
        conn,
        and_(
            Run.account_id == account_id,
            Run.booking_uid == uid,
            Run.workflow_id.in_([wf.id for wf in workflows]),
            Run.trigger.in_({wf.trigger.name for wf in workflows}),
            Run.unfired.is_(False),
            Run.test.is_(False),
        ),
        "the booking moved: a reminder for its new time is planned",
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
            and_(Run.workflow_id == wf.id, _pending_reminder(Run)),
            "the workflow was disabled or changed",
            now,
        )
        return []
    # Events that commit while this runs must not fall between the two: ingest reads the
    # workflow before this commits, this reads the bookings before ingest commits. Every event's
    # first statement (its row in events) holds FOR KEY SHARE on the account's row through the
    # foreign key until it commits, and FOR UPDATE conflicts with it: so either this waits for
    # the events in flight and then reads their bookings, or they wait at their first statement
    # for this to commit and then read the workflow as it is now. Ingest pays nothing for it
    # (the lock comes with the foreign key check) and events never wait on each other. SQLite
    # runs one writer at a time anyway.
    conn.execute(select(Account.id).where(Account.id == wf.account_id).with_for_update())
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


@dataclass(frozen=True)
class Firing:
    """What a planned run does when a worker claims it, from the booking and the workflow as
    they are then."""

    status: RunStatus  # RUNNING: it fires; SCHEDULED: planned again for due_at; else it ends
    event_id: str  # the event it carries: the booking's latest when the booking has moved
    due_at: datetime | None = None  # RUNNING: when it was due (how late it is: metrics)
    note: str | None = None
    # RUNNING: the workflow's conditions, to check against the booking as it stands (live).
    conditions: list[dict[str, Any]] | None = None
    live: Live | None = None


_NOW_STANDING = (
    select(
        Workflow.enabled,
        Workflow.trigger,
        Workflow.offset_minutes,
        Workflow.conditions,
        BookingState.status,
        BookingState.start,
        BookingState.end,
        BookingState.event_id,
        BookingState.paid_at,
        BookingState.no_show,
    )
    .select_from(Run)
    .outerjoin(Workflow, Workflow.id == Run.workflow_id)
    .outerjoin(
        BookingState,
        and_(BookingState.account_id == Run.account_id, BookingState.uid == Run.booking_uid),
    )
    .where(Run.id == bindparam("b_run"))
)


def on_claim(
    conn: Connection,
    run_id: str,
    event_id: str,
    planned: Booking,
    triggers: dict[str, TriggerType],
    now: datetime,
) -> Firing:
    """Whether a claimed planned run (for the booking as ``planned``, from event ``event_id``)
    fires. Cancelled booking or disabled workflow: it is cancelled. Booking moved (an event the
    planner did not act on, or one that committed just after the claim): re-planned as a new
    plan would be, so it fires now only when the new due time is already here."""
    current = conn.execute(_NOW_STANDING, {"b_run": run_id}).one()
    if not current.enabled:
        return Firing(RunStatus.CANCELLED, event_id, note="the workflow was disabled or deleted")
    if current.status == "cancelled":
        return Firing(RunStatus.CANCELLED, event_id, note="the booking was cancelled")
    trigger = triggers.get(current.trigger)
    if trigger is None or trigger.kind != "time":
        return Firing(RunStatus.CANCELLED, event_id, note="the workflow was disabled or changed")
    if current.start is None:
        return Firing(RunStatus.RUNNING, event_id, conditions=current.conditions)
    live = _live(current)
    if (current.start, current.end) == (planned.start, planned.end):
        planned_due = due_time(trigger, current.offset_minutes, current.start, current.end)
        return Firing(RunStatus.RUNNING, event_id, planned_due, None, current.conditions, live)
    due, note = decide(trigger, current.offset_minutes, current.start, current.end, now)
    if due is None:
        return Firing(RunStatus.SKIPPED, current.event_id, note=f"the booking moved: {note}")
    if due > now:
        again = f"the booking moved: planned again for {_iso(due)}"
        return Firing(RunStatus.SCHEDULED, current.event_id, due, again)
    moved = note and f"the booking moved: {note}"
    return Firing(RunStatus.RUNNING, current.event_id, due, moved, current.conditions, live)


def carry_latest(conn: Connection, run_id: str, token: str, firing: Firing) -> bool:
    """A claimed planned run fires with the booking's latest event (it moved): record it, and
    why; False when the lease was lost."""
    fenced = (
        update(Run)
        .where(Run.id == run_id, Run.lease_token == token)
        .values(event_id=firing.event_id, note=firing.note)
    )
    return conn.execute(fenced).rowcount == 1


def put_back(conn: Connection, run_id: str, token: str, firing: Firing) -> bool:
    """Plan a claimed run again for the booking's new time: pending again, let go of.
    False when another reminder has been planned for that booking meanwhile (the reschedule
    that moved it found this one claimed) or the lease was lost."""
    other = aliased(Run)
    planned_since = exists().where(
        other.workflow_id == Run.workflow_id,
        other.booking_uid == Run.booking_uid,
        _pending_reminder(other),
    )
    back = (
        update(Run)
        .where(Run.id == run_id, Run.lease_token == token, ~planned_since)
        .values(
            status=RunStatus.SCHEDULED,
            due_at=firing.due_at,
            event_id=firing.event_id,
            note=firing.note,
            unfired=True,
            lease_token=None,
            lease_until=None,
        )
    )
    try:
        return conn.execute(back).rowcount == 1
    except IntegrityError:
        # PostgreSQL: one was planned in the instant between the check and the write (its
        # insert committed while this statement waited on the index). The worker's statements
        # are each their own transaction there, so nothing else is undone.
        return False
