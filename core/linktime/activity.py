"""What happened, and what will, to an account's bookings: the events received (newest first,
searched by booking, invitee or event id), what each event decided, and a booking's timeline
(its events, the reminders planned for it, its runs and every attempt, past and future).

Read models only: nothing here writes. Test runs (``start_test_run``) are left out: they belong
to no booking.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select, union
from sqlalchemy.orm import Session

from .engine import Hub
from .errors import FieldError, InputError, NotFound
from .models import Booking
from .runs import BOOKING_COLUMNS, StepOut, at_step
from .statuses import RunStatus, StepStatus
from .storage import BookingState, Event, EventEmail, Run, RunStep, booking_field, is_id

MAX_QUERY = 320  # characters: the longest email address
MAX_LIMIT = 200
# start_test_run stores its event with this digest: a test, not something that happened.
_TEST_DIGEST = "-"


# -- the events list ---------------------------------------------------------------------------


class Invitee(BaseModel):
    name: str | None
    email: str | None


class EventRow(BaseModel):
    id: str = Field(description="The event id as the sender gave it")
    type: str
    booking_uid: str
    booking_title: str | None
    event_type: str | None = Field(description="The booking's event type: its title, or slug")
    invitee_name: str | None
    invitee_email: str | None
    invitees: list[Invitee] = Field(
        description="Everyone the booking invites: its invitee, then its other invitees"
    )
    occurred_at: datetime
    received_at: datetime
    workflows: int = Field(description="The account's workflows when the event arrived")
    workflows_ran: int = Field(description="How many of them ran, or planned a reminder")


class EventPage(BaseModel):
    items: list[EventRow]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page")


_ROW_COLUMNS = (
    Event.id,
    Event.event_id,
    Event.type,
    Event.booking_uid,
    Event.occurred_at,
    Event.received_at,
    Event.decisions,
    *BOOKING_COLUMNS,
    booking_field("event_type", "title").label("et_title"),
    booking_field("event_type", "slug").label("et_slug"),
    Event.payload[("booking", "invitees")].label("invitees"),
)


def _checked(q: str | None, limit: int, cursor: str | None) -> str | None:
    errors = []
    q = (q or "").strip() or None
    if q is not None and len(q) > MAX_QUERY:
        errors.append(FieldError("q", f"give at most {MAX_QUERY} characters"))
    if not 1 <= limit <= MAX_LIMIT:
        errors.append(FieldError("limit", f"give a number from 1 to {MAX_LIMIT}"))
    if cursor is not None and not is_id(cursor, "ev"):
        errors.append(FieldError("cursor", "give the next_cursor of the previous page"))
    if errors:
        raise InputError("the search is not valid", errors)
    return q


def _invitees(
    name: str | None, email: str | None, others: list[dict[str, Any]] | None
) -> list[Invitee]:
    first = [Invitee(name=name, email=email)] if name or email else []
    rest = [Invitee(name=p.get("name"), email=p.get("email")) for p in others or []]
    # A platform may list the invitee among the invitees too: shown once.
    return first + [p for p in rest if p not in first]


def list_events(
    hub: Hub, account_id: str, q: str | None = None, limit: int = 50, cursor: str | None = None
) -> EventPage:
    """The account's events, newest received first. ``q`` is an event id or booking uid
    (exactly) or the email of any of the booking's invitees (in any case)."""
    q = _checked(q, limit, cursor)
    # Event ids are time-ordered (storage.new_id): newest first, and a stable cursor.
    query = (
        select(*_ROW_COLUMNS)
        .where(Event.account_id == account_id, Event.payload_hash != _TEST_DIGEST)
        .order_by(Event.id.desc())
        .limit(limit + 1)
    )
    if q is not None:
        # Each way of finding an event through its own index, so a search reads what it
        # finds, not every event of the account.
        found = union(
            select(Event.id).where(Event.account_id == account_id, Event.event_id == q),
            select(Event.id).where(Event.account_id == account_id, Event.booking_uid == q),
            select(EventEmail.event_pk).where(
                EventEmail.account_id == account_id, EventEmail.email == q.casefold()
            ),
        )
        query = query.where(Event.id.in_(found))
    if cursor is not None:
        query = query.where(Event.id < cursor)
    with hub.db.connect() as conn:
        rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        EventRow(
            id=r.event_id,
            type=r.type,
            booking_uid=r.booking_uid,
            booking_title=r.booking_title,
            event_type=r.et_title or r.et_slug,
            invitee_name=r.invitee_name,
            invitee_email=r.invitee_email,
            invitees=_invitees(r.invitee_name, r.invitee_email, r.invitees),
            occurred_at=r.occurred_at,
            received_at=r.received_at,
            workflows=len(r.decisions),
            workflows_ran=sum(1 for d in r.decisions if d.get("reason") is None),
        )
        for r in rows
    ]
    return EventPage(items=items, next_cursor=rows[-1].id if more else None)


# -- one event: its booking as sent, and what its runs were blocked by --------------------------


class BlockedStep(BaseModel):
    run_id: str
    position: int
    action: str


def event_booking(hub: Hub, account_id: str, event_id: str) -> Booking:
    """The booking as the event carried it."""
    with hub.db.connect() as conn:
        payload = conn.scalar(
            select(Event.payload).where(Event.account_id == account_id, Event.event_id == event_id)
        )
    if payload is None:
        raise NotFound(f"no event {event_id!r}")
    return Booking.model_validate(payload["booking"])


RECENT_TITLES = 500  # events read for the titles of event types


def event_type_titles(hub: Hub, account_id: str) -> dict[str, str]:
    """The titles of the account's event types by slug and by id, as its most recent events
    carried them (a workflow names event types by slug or id only). Test runs' sample
    bookings are not the account's."""
    with hub.db.connect() as conn:
        rows = conn.execute(
            select(*(booking_field("event_type", k).label(k) for k in ("slug", "id", "title")))
            .where(Event.account_id == account_id, Event.payload_hash != _TEST_DIGEST)
            .order_by(Event.id.desc())
            .limit(RECENT_TITLES)
        ).all()
    titles: dict[str, str] = {}
    for row in reversed(rows):  # the newest title wins
        if row.title:
            titles.update({str(k): row.title for k in (row.slug, row.id) if k is not None})
    return titles


def blocked_steps(hub: Hub, account_id: str, run_ids: list[str]) -> list[BlockedStep]:
    """The steps of these runs that the plan stopped (``blocked_by_plan``)."""
    if not run_ids:
        return []
    with hub.db.connect() as conn:
        rows = conn.execute(
            select(RunStep.run_id, RunStep.position, RunStep.action)
            .join(Run, Run.id == RunStep.run_id)
            .where(
                Run.account_id == account_id,
                RunStep.run_id.in_(run_ids),
                RunStep.status == StepStatus.BLOCKED_BY_PLAN,
            )
            .order_by(RunStep.run_id, RunStep.position)
        ).all()
    return [BlockedStep.model_validate(r._mapping) for r in rows]


# -- a booking's timeline ----------------------------------------------------------------------


class BookingOut(BaseModel):
    uid: str
    title: str | None
    status: str = Field(description="As of the latest event applied; 'cancelled' stays")
    event_type: str | None
    start: datetime
    end: datetime
    host_name: str | None
    host_timezone: str | None
    invitee_name: str | None
    invitee_email: str | None
    invitee_timezone: str | None


class TimelineEvent(BaseModel):
    id: str = Field(description="The event id as the sender gave it")
    type: str
    occurred_at: datetime
    received_at: datetime
    start: datetime = Field(description="The booking's start this event carried")
    end: datetime
    source: str | None = Field(
        None, description="The booking source it came through (calcom, …); null: the API"
    )


class TimelineRun(BaseModel):
    id: str
    workflow_id: str
    workflow_name: str
    trigger: str
    status: RunStatus
    note: str | None
    due_at: datetime | None = Field(description="When a planned reminder fires")
    planned_by: str | None = Field(description="The event (id as sent) it was last planned from")
    planned_by_type: str | None
    created_at: datetime
    finished_at: datetime | None
    at_step: int | None = Field(
        description="The step it stands at (running, waiting for a delay or a retry) or ended "
        "at (stopped by a filter, failed, blocked by the plan); see the step's status and error"
    )
    steps: list[StepOut]


class Entry(BaseModel):
    at: datetime
    kind: Literal["event", "reminder", "run", "retry", "wait"] = Field(
        description="event: received (placed at its occurred_at, or when it was received if "
        "that was earlier); reminder: planned, not fired yet; run: started, or ended without "
        "starting; retry: a step's next attempt, due; wait: a delay's end, when the run resumes"
    )
    future: bool
    event: TimelineEvent | None = None
    run: TimelineRun | None = None
    step: int | None = Field(default=None, description="retry: the step's position")


class Timeline(BaseModel):
    booking: BookingOut
    now: datetime
    entries: list[Entry] = Field(description="In time order, past and future")


def _booking_out(uid: str, status: str, latest: Booking) -> BookingOut:
    et, host, invitee = latest.event_type, latest.host, latest.invitee
    return BookingOut(
        uid=uid,
        title=latest.title,
        status=status,
        event_type=(et.title or et.slug) if et else None,
        start=latest.start,
        end=latest.end,
        host_name=host.name if host else None,
        host_timezone=host.timezone if host else None,
        invitee_name=invitee.name if invitee else None,
        invitee_email=invitee.email if invitee else None,
        invitee_timezone=invitee.timezone if invitee else None,
    )


def _run_entries(run: Run, by_pk: dict[str, TimelineEvent], now: datetime) -> list[Entry]:
    planned = run.unfired and run.status in (RunStatus.SCHEDULED, RunStatus.QUEUED)
    source = by_pk.get(run.event_id)
    steps = [StepOut.of(s) for s in run.steps]
    out = TimelineRun(
        id=run.id,
        workflow_id=run.workflow_id,
        workflow_name=run.workflow_name,
        trigger=run.trigger,
        status=RunStatus(run.status),
        note=run.note,
        due_at=run.due_at if planned else None,
        planned_by=source.id if source and run.unfired else None,
        planned_by_type=source.type if source and run.unfired else None,
        created_at=run.created_at,
        finished_at=run.finished_at,
        at_step=at_step(steps),
        steps=steps,
    )
    if planned and run.due_at is not None:
        return [Entry(at=run.due_at, kind="reminder", future=run.due_at > now, run=out)]
    # Placed where it started: its first attempt; one that never started, where it ended.
    started = [a.started_at for s in out.steps for a in s.attempt_log]
    at = min(started) if started else (run.finished_at or run.created_at)
    # A waiting run's step that is due to be tried again, or whose delay ends (a cancelled
    # run keeps the time).
    retries = [
        Entry(
            at=s.next_attempt_at,
            kind="retry" if s.status == StepStatus.PENDING else "wait",
            future=s.next_attempt_at > now,
            run=out,
            step=s.position,
        )
        for s in out.steps
        if out.status == RunStatus.WAITING
        and s.status in (StepStatus.PENDING, StepStatus.WAITING)
        and s.next_attempt_at is not None
    ]
    return [Entry(at=at, kind="run", future=at > now, run=out), *retries]


def timeline(hub: Hub, account_id: str, uid: str) -> Timeline:
    """Everything received and run for a booking, and what is planned, in time order. Another
    account's booking is not found."""
    now = hub.clock()
    with Session(hub.db) as session:
        state = session.get(BookingState, (account_id, uid))
        if state is None:
            raise NotFound(f"no booking {uid!r}")
        events = session.execute(
            select(
                Event.id,
                Event.event_id,
                Event.type,
                Event.occurred_at,
                Event.received_at,
                Event.payload,
                Event.source,
            ).where(
                Event.account_id == account_id,
                Event.booking_uid == uid,
                Event.payload_hash != _TEST_DIGEST,
            )
        ).all()
        runs = session.scalars(
            select(Run).where(
                Run.account_id == account_id, Run.booking_uid == uid, Run.test.is_(False)
            )
        ).all()
        by_pk = {
            e.id: TimelineEvent(
                id=e.event_id,
                type=e.type,
                occurred_at=e.occurred_at,
                received_at=e.received_at,
                start=e.payload["booking"]["start"],
                end=e.payload["booking"]["end"],
                source=e.source,
            )
            for e in events
        }
        latest = {e.id: e.payload for e in events}[state.event_id]
        # A sender's clock may be wrong, or an event dated ahead: what was received is past.
        entries = [
            Entry(at=min(e.occurred_at, e.received_at), kind="event", future=False, event=e)
            for e in by_pk.values()
        ] + [entry for r in runs for entry in _run_entries(r, by_pk, now)]
    # Events before what they caused at the same moment.
    entries.sort(key=lambda e: (e.at, e.kind != "event"))
    return Timeline(
        booking=_booking_out(uid, state.status, Booking.model_validate(latest["booking"])),
        now=now,
        entries=entries,
    )
