"""The run log: a run with its steps and attempts; runs filtered by workflow, status and time;
replaying a failed run; what an event did (the event inspector)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Row, Select, and_, case, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Label

from .engine import Hub
from .errors import FieldError, InputError, NotFound
from .statuses import (
    RUN_UNFINISHED,
    STEP_STOPPED,
    AttemptStatus,
    DeliveryStatus,
    RunStatus,
    StepStatus,
)
from .storage import (
    Attempt,
    Event,
    Run,
    RunStep,
    Workflow,
    WorkflowStep,
    booking_field,
    is_id,
    new_id,
)
from .workflows import with_current_secrets


class AttemptOut(BaseModel):
    number: int
    status: AttemptStatus
    started_at: datetime
    duration_ms: int
    http_status: int | None
    error_code: str | None
    error: str | None
    external_id: str | None
    response_excerpt: str | None
    delivery_status: DeliveryStatus | None = Field(
        description="What became of the message: accepted (the provider took it), sent, "
        "delivered, undelivered, failed (as the provider's callbacks reported), opted_out "
        "(not sent: the recipient is on the suppression list); none for an attempt that sent "
        "nothing"
    )
    delivery_updated_at: datetime | None
    delivery_error_code: str | None = Field(description="The provider's code, e.g. 30003")
    delivery_error: str | None
    action: str | None = Field(
        None,
        description="The action this attempt ran when it is not its step's own: the step's "
        "fallback, which took over after the step failed for good; null for the step's action",
    )

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls.model_validate(a, from_attributes=True)


class StepFallback(BaseModel):
    """A step's fallback as the run copied it (its settings stay out, as the step's do)."""

    action: str
    taken_after: int | None = Field(
        description="The attempt number at which the step failed for good and the fallback "
        "took over (the attempts after it are the fallback's); null while it has not"
    )


class StepOut(BaseModel):
    position: int
    action: str
    status: StepStatus = Field(
        description="waiting: parked by a delay until wait_until; stopped: a filter ended the "
        "run here (error says which condition failed and the value seen); skipped: its `when` "
        "did not hold (error_code condition_not_met), a test run's delay (test_run), or an "
        "earlier step ended the run (no error)"
    )
    attempts: int
    next_attempt_at: datetime | None
    external_id: str | None
    error_code: str | None
    error: str | None = Field(
        description="What went wrong, or why the step waits, stopped or was skipped"
    )
    finished_at: datetime | None
    wait_until: datetime | None = Field(
        None, description="When a waiting step (a delay) is taken up again and the run resumes"
    )
    when: list[dict[str, Any]] | None = Field(
        None, description="The conditions the step runs only if they hold (as saved)"
    )
    fallback: StepFallback | None = Field(
        None, description="The action sent instead if the step fails for good"
    )
    attempt_log: list[AttemptOut]

    @classmethod
    def of(cls, s: RunStep) -> StepOut:
        copied = set(cls.model_fields) - {"attempt_log", "fallback"}
        data: dict[str, Any] = {k: getattr(s, k) for k in copied}
        fallback = (
            StepFallback(action=s.fallback["action"], taken_after=s.fallback_at)
            if s.fallback
            else None
        )
        return cls(**data, fallback=fallback, attempt_log=[AttemptOut.of(a) for a in s.attempt_log])


class RunOut(BaseModel):
    id: str
    workflow_id: str
    workflow_name: str
    trigger: str
    status: RunStatus
    replay_of: str | None = Field(description="The failed run this one replays")
    created_at: datetime
    finished_at: datetime | None
    note: str | None = Field(
        None,
        description='How the run ended when its steps do not say it: "stopped at step 2: '
        'booking.paid eq false did not hold: it was true", the booking cancelled during a '
        "delay, the workflow's conditions not holding when a reminder fired",
    )
    at_step: int | None = Field(
        None,
        description="The position of the step the run stands at (running, waiting for a delay "
        "or a retry) or ended at (stopped by a filter, failed, blocked by the plan); null when "
        "it went through every step, or has not started",
    )
    steps: list[StepOut]

    @classmethod
    def of(cls, r: Run) -> RunOut:
        steps = [StepOut.of(s) for s in r.steps]
        data: dict[str, Any] = {
            k: getattr(r, k) for k in cls.model_fields if k not in ("steps", "at_step")
        }
        return cls(**data, at_step=at_step(steps), steps=steps)


# Where a run stands or ended: a step in one of these, or one waiting to be retried.
_STANDING = STEP_STOPPED | {StepStatus.RUNNING, StepStatus.WAITING, StepStatus.STOPPED}


def at_step(steps: list[StepOut]) -> int | None:
    """The position of the step a run stands at or ended at (RunOut.at_step)."""
    return next(
        (
            s.position
            for s in steps
            if s.status in _STANDING
            or (s.status == StepStatus.PENDING and s.next_attempt_at is not None)
        ),
        None,
    )


def get_run(hub: Hub, account_id: str, run_id: str) -> Run:
    """A run with its steps and their attempts; another account's run is not found."""
    with Session(hub.db, expire_on_commit=False) as session:
        run = session.get(Run, run_id)
        if run is None or run.account_id != account_id:
            raise NotFound(f"no run {run_id!r}")
        for step in run.steps:
            _ = step.attempt_log  # loaded now: the session closes before the caller reads it
        return run


class Setback(BaseModel):
    """The step a run stopped at, or whose retry it waits for, and what went wrong there."""

    position: int
    action: str
    error_code: str | None
    error: str | None


class RunSummary(BaseModel):
    id: str
    workflow_id: str
    workflow_name: str
    trigger: str
    offset_minutes: int | None = Field(
        description="The workflow's offset of a time trigger, as the workflow has it now "
        "(None once the workflow is deleted)"
    )
    status: RunStatus
    test: bool
    booking_uid: str
    booking_title: str | None
    invitee_name: str | None
    invitee_email: str | None
    event_id: str = Field(description="The id of the event that started the run, as sent")
    due_at: datetime | None = Field(
        description="When a scheduled run fires, or when a waiting run's step is retried or "
        "its delay ends (the run resumes)"
    )
    note: str | None
    setback: Setback | None = Field(
        description="The step the run stopped at (failed, blocked by the plan) or waits to retry"
    )
    created_at: datetime
    finished_at: datetime | None


# A list row's booking, read from the event that carried it (the run log's and the Events
# page's rows alike).
BOOKING_COLUMNS: tuple[Label[str], Label[str], Label[str]] = (
    booking_field("title").label("booking_title"),
    booking_field("invitee", "name").label("invitee_name"),
    booking_field("invitee", "email").label("invitee_email"),
)


def _summaries(account_id: str) -> Select[*tuple[Any, ...]]:
    return (
        select(
            Run.id,
            Run.workflow_id,
            Run.workflow_name,
            Run.trigger,
            Workflow.offset_minutes,
            Run.status,
            Run.test,
            Run.booking_uid,
            *BOOKING_COLUMNS,
            Event.event_id,
            # due_at is also the scheduler's re-send time of a queued or running run: not a time
            # to show
            case((Run.status.in_((RunStatus.SCHEDULED, RunStatus.WAITING)), Run.due_at)).label(
                "due_at"
            ),
            Run.note,
            Run.created_at,
            Run.finished_at,
        )
        .join(Event, Event.id == Run.event_id)
        .outerjoin(Workflow, Workflow.id == Run.workflow_id)
        .where(Run.account_id == account_id)
    )


def list_runs(
    hub: Hub,
    account_id: str,
    *,
    workflow_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> list[RunSummary]:
    """Newest first. ``cursor``: a run's id, to list the runs older than it (the last run of
    the page before)."""
    if cursor is not None and not is_id(cursor, "run"):
        raise InputError(
            "the page is not valid", [FieldError("cursor", "give the id of a run listed")]
        )
    query = _summaries(account_id)
    if cursor is not None:
        # Run ids are time-ordered (storage.new_id): a stable order to page through.
        query = query.where(Run.id < cursor)
    if workflow_id:
        query = query.where(Run.workflow_id == workflow_id)
    if status:
        query = query.where(Run.status == status)
    if since:
        query = query.where(Run.created_at >= since)
    if until:
        query = query.where(Run.created_at < until)
    with hub.db.connect() as conn:
        rows = conn.execute(query.order_by(Run.id.desc()).limit(min(limit, 500))).all()
        return _with_setbacks(conn, rows)


def _with_setbacks(conn: Connection, rows: Sequence[Row[Any]]) -> list[RunSummary]:
    setbacks = {
        s.run_id: Setback.model_validate(s._mapping)
        for s in conn.execute(
            select(
                RunStep.run_id, RunStep.position, RunStep.action, RunStep.error_code, RunStep.error
            ).where(
                RunStep.run_id.in_([r.id for r in rows]),
                or_(
                    RunStep.status.in_(STEP_STOPPED),
                    and_(
                        RunStep.status == StepStatus.PENDING, RunStep.next_attempt_at.is_not(None)
                    ),
                ),
            )
        )
    }
    return [RunSummary.model_validate({**r._mapping, "setback": setbacks.get(r.id)}) for r in rows]


def get_summary(hub: Hub, account_id: str, run_id: str) -> RunSummary:
    """One run as the run log lists it; another account's run is not found."""
    with hub.db.connect() as conn:
        row = conn.execute(_summaries(account_id).where(Run.id == run_id)).first()
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        [summary] = _with_setbacks(conn, [row])
    return summary


MAX_KEY = 200  # characters of an Idempotency-Key


@dataclass(frozen=True)
class Replay:
    run_id: str
    workflow_id: str
    repeated: bool  # made earlier, by a request with the same Idempotency-Key


def replay(hub: Hub, account_id: str, run_id: str, key: str | None = None) -> Replay:
    """A new run of a failed run's failed step and the steps after it, with the settings the
    failed run had. The steps that succeeded are not sent again.

    Idempotent: a request with the ``key`` of an earlier one answers that one's replay and
    makes nothing. Without a key, or with a new one, a run whose replay has not finished is
    not replayed again (409 naming that replay)."""
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise InputError(
            "the Idempotency-Key is not valid",
            [FieldError("Idempotency-Key", f"give 1 to {MAX_KEY} characters")],
        )
    for last_try in (False, True):
        try:
            with hub.db.begin() as conn:
                earlier = _replayed_with(conn, account_id, run_id, key)
                if earlier is not None:
                    return earlier
                made = _replay(conn, hub, account_id, run_id, key)
            break
        except IntegrityError:
            # A concurrent replay of this run, or with this key, committed first: read it.
            if last_try:
                raise
    hub.enqueue([made.run_id])
    return made


def _replayed_with(
    conn: Connection, account_id: str, run_id: str, key: str | None
) -> Replay | None:
    if key is None:
        return None
    row = conn.execute(
        select(Run.id, Run.workflow_id, Run.replay_of).where(
            Run.account_id == account_id, Run.replay_key == key
        )
    ).first()
    if row is None:
        return None
    if row.replay_of != run_id:
        raise InputError(
            "this Idempotency-Key was used for another replay",
            [FieldError("Idempotency-Key", f"already used to replay {row.replay_of}")],
            status=409,
            code="idempotency_key_reused",
        )
    return Replay(row.id, row.workflow_id, repeated=True)


def _replay(conn: Connection, hub: Hub, account_id: str, run_id: str, key: str | None) -> Replay:
    run = conn.execute(select(Run).where(Run.id == run_id)).first()
    if run is None or run.account_id != account_id:
        raise NotFound(f"no run {run_id!r}")
    if run.status != RunStatus.FAILED:
        raise InputError(
            f"only a failed run can be replayed; this one is {run.status}",
            status=409,
            code="not_failed",
        )
    # Shared-locked so a concurrent delete waits for this replay (and then cancels it): a
    # deleted workflow's stored steps and secrets are never sent again.
    workflow = conn.scalar(
        select(Workflow.id).where(Workflow.id == run.workflow_id).with_for_update(read=True)
    )
    if workflow is None:
        raise InputError(
            f"workflow {run.workflow_id} ({run.workflow_name!r}) was deleted; its runs cannot be "
            "replayed",
            status=409,
            code="workflow_deleted",
        )
    pending = conn.scalar(
        select(Run.id).where(Run.replay_of == run_id, Run.status.in_(RUN_UNFINISHED))
    )
    if pending is not None:
        raise InputError(
            f"run {run_id} is being replayed already, by run {pending}, which has not finished",
            status=409,
            code="replay_pending",
        )
    now = hub.clock()
    steps = conn.execute(
        select(
            RunStep.position,
            RunStep.action,
            RunStep.settings,
            RunStep.status,
            RunStep.when,
            RunStep.fallback,
        )
        .where(RunStep.run_id == run_id)
        .order_by(RunStep.position)
    ).all()
    first = next(s.position for s in steps if s.status in STEP_STOPPED)
    # Secrets are the workflow's as they are now: a replay after "Rotate secret" never signs
    # with only the secret the account replaced.
    current = {
        w.position: w
        for w in conn.execute(
            select(WorkflowStep.position, WorkflowStep.action, WorkflowStep.settings).where(
                WorkflowStep.workflow_id == run.workflow_id
            )
        )
    }
    new_run = new_id("run")
    values: dict[str, Any] = {
        c: getattr(run, c)
        for c in (
            "account_id",
            "workflow_id",
            "workflow_name",
            "event_id",
            "trigger",
            "booking_uid",
            "test",
            "continue_when_blocked",
        )
    }
    conn.execute(
        insert(Run).values(
            id=new_run,
            status=RunStatus.QUEUED,
            note=f"replay of {run_id} from step {first + 1}",
            replay_of=run_id,
            replay_key=key,
            # Handed to the broker after commit, like a new event's runs: the sweeper's turn
            # comes only if that message is lost.
            due_at=hub.resend_at(now),
            created_at=now,
            **values,
        )
    )
    conn.execute(
        insert(RunStep),
        [
            {
                "id": new_id("stp"),
                "run_id": new_run,
                "position": s.position - first,
                "action": s.action,
                "settings": with_current_secrets(hub, s.action, s.settings, now_step.settings)
                if (now_step := current.get(s.position)) is not None and now_step.action == s.action
                else s.settings,
                "when": s.when,
                "fallback": s.fallback,
                "status": StepStatus.PENDING,
                "attempts": 0,
            }
            for s in steps
            if s.position >= first
        ],
    )
    return Replay(new_run, run.workflow_id, repeated=False)


class Decision(BaseModel):
    workflow_id: str
    name: str
    run_id: str | None
    reason: str | None


class EventRun(BaseModel):
    """A run an event started or planned, as it is now."""

    id: str
    workflow_id: str
    status: RunStatus
    due_at: datetime | None = Field(
        description="When a scheduled run, a retry or the end of a delay is due"
    )
    delayed: bool = Field(False, description="Waiting for the end of a delay, not for a retry")
    note: str | None
    finished_at: datetime | None


class EventInspection(BaseModel):
    id: str
    type: str
    booking_uid: str
    occurred_at: datetime
    received_at: datetime
    source: str | None = Field(
        None, description="The booking source it came through (calcom, …); null: the API"
    )
    booking: dict[str, Any] = Field(
        default_factory=dict, description="The booking as the event carried it"
    )
    runs: list[EventRun]
    decisions: list[Decision]


def inspect_event(hub: Hub, account_id: str, event_id: str) -> EventInspection:
    """Which workflows an event ran, and why each of the others did not. The runs are read as
    they are now: the answer stored with the event says only how they started."""
    with hub.db.connect() as conn:
        row = conn.execute(
            select(Event).where(Event.account_id == account_id, Event.event_id == event_id)
        ).first()
        if row is None:
            raise NotFound(f"no event {event_id!r}")
        ids = [r["id"] for r in row.answer.get("runs", [])]
        found = {
            r.id: r
            for r in conn.execute(
                select(
                    Run.id, Run.workflow_id, Run.status, Run.due_at, Run.note, Run.finished_at
                ).where(Run.account_id == account_id, Run.id.in_(ids))
            )
        }
        delayed = set(
            conn.scalars(
                select(RunStep.run_id).where(
                    RunStep.run_id.in_(ids), RunStep.status == StepStatus.WAITING
                )
            )
        )
    runs = [
        EventRun(
            id=r.id,
            workflow_id=r.workflow_id,
            status=r.status,
            delayed=r.id in delayed,
            # due_at is also the scheduler's re-send time of a queued run: not a due time
            due_at=r.due_at if r.status in (RunStatus.SCHEDULED, RunStatus.WAITING) else None,
            note=r.note,
            finished_at=r.finished_at,
        )
        for r in (found[i] for i in ids if i in found)
    ]
    return EventInspection(
        id=row.event_id,
        type=row.type,
        booking_uid=row.booking_uid,
        occurred_at=row.occurred_at,
        received_at=row.received_at,
        source=row.source,
        booking=row.payload.get("booking", {}),
        runs=runs,
        decisions=[Decision.model_validate(d) for d in row.decisions],
    )
