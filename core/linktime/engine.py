"""The engine: events become runs, runs execute their steps in order, each attempt is logged.

A run is owned by one worker at a time through a lease (``lease_token``/``lease_until``). Every
write a worker makes re-checks its token, so a worker that lost its lease (it stalled, another
took over) stops without recording anything. A step is marked running, with its attempt
counted, before it is executed; a step recorded as succeeded is never executed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, case, or_, select, update

from . import (
    bookings,
    conditions,
    credits,
    endpoints,
    logs,
    loop,
    matching,
    metrics,
    plans,
    plugins,
    suppressions,
)
from . import statements as sql
from .actions import (
    ActionContext,
    ActionType,
    Outcome,
    Result,
    WorkflowRef,
)
from .crypto import Sealer
from .errorcodes import is_operator_error
from .errors import InputError
from .leases import Heartbeat
from .models import BookingEvent
from .operator_settings import OperatorSettingError
from .services import LIVE, StepServices
from .settings import Settings
from .statuses import STEP_OPEN, AttemptStatus, DeliveryStatus, RunStatus, StepStatus
from .storage import (
    Event,
    Integration,
    Run,
    WorkflowStep,
    insert_ignoring,
    invitee_emails,
    make_engine,
    new_id,
    new_secret,
)
from .template_budget import TemplateBudgetError
from .templating import TemplateError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def call_execute(action: ActionType, ctx: ActionContext) -> Result:
    """Run a plain or async ``execute``. Coroutines share one event loop per process
    (``linktime.loop``), so async plugins can pool connections across the worker's threads;
    one that outlives the action's ``timeout`` (by a tenth) is cancelled and the attempt ends
    as a retryable ``timeout``, as a sync plugin's own deadline would end it."""
    outcome = action.execute(ctx)
    if not inspect.isawaitable(outcome):
        return outcome
    # The plugins' loop runs the coroutine in its own context: carry the run's log ids there.
    return loop.run(_awaited(outcome, action, logs.ids()))


# The engine's deadline for an attempt, in timeouts: a tenth past the action's own, so a
# plugin that keeps its deadline at its declared timeout reports it (its message says more);
# the engine's stops the async ones that keep none, and stops renewing the lease of a sync one.
_DEADLINE = 1.1


def run_attempt(action: ActionType, ctx: ActionContext) -> Result:
    """One attempt of ``action``: its ``execute``'s result, or what an exception it raised
    means (``linktime.testing.run_action`` runs this too, so plugin tests see the same)."""
    try:
        result = call_execute(action, ctx)
    except TemplateBudgetError as exc:  # this template and booking would stop again
        return Result.fail(str(exc), error_code="template_budget")
    except TemplateError as exc:  # checked on save, yet this booking breaks it: a retry
        # would render the same
        return Result.fail(
            f"the message cannot be rendered for this booking: {exc}",
            error_code="template_error",
        )
    except OperatorSettingError as exc:  # every step of the action is affected: retrying
        # lets them resume once the operator fixes it
        return Result.retry(str(exc), error_code="operator_settings")
    except Exception as exc:  # a plugin bug must not lose the step: retry it
        log.exception("action %s raised", action.name)
        return Result.retry(f"{type(exc).__name__}: {exc}", error_code="exception")
    if not isinstance(result, Result):
        return Result.fail(
            f"action {action.name} returned {type(result).__name__}, not a Result",
            error_code="bad_result",
        )
    return result


async def _awaited(awaitable: Awaitable[Result], action: ActionType, ids: dict[str, str]) -> Result:
    logs.bind(**ids)
    try:
        async with asyncio.timeout(action.timeout * _DEADLINE) as deadline:
            return await awaitable
    except TimeoutError:
        if not deadline.expired():  # the plugin's own, not the engine's deadline
            raise
        return Result.retry(
            f"{action.name} gave no answer within its timeout of {action.timeout:g} s",
            error_code="timeout",
        )


# A step the account's plan does not allow (checked when it runs): logged, never executed.
# Its error code is the step status it leaves.
BLOCKED = StepStatus.BLOCKED_BY_PLAN


@dataclass(frozen=True)
class _Attempted:
    """One attempt as it is recorded: its result, when it started, how long it took, and the
    endpoint it went to (``ActionType.endpoint``)."""

    result: Result
    started: datetime
    duration_ms: int
    endpoint_id: str | None = None


def _delivery(result: Result) -> str | None:
    """The delivery status an attempt starts with: ``accepted`` (or what the plugin knew) for a
    message sent, ``opted_out`` for one that was not because of it, else none."""
    if result.outcome is Outcome.OPTED_OUT:
        return DeliveryStatus.OPTED_OUT
    if result.outcome is Outcome.SUCCEEDED:
        return result.delivery_status or DeliveryStatus.ACCEPTED
    return None


class LeaseLost(Exception):
    """This worker no longer owns the run (it stalled past its lease; another took over)."""


@dataclass(frozen=True)
class Ingested:
    answer: dict[str, Any]
    replayed: bool
    run_ids: list[str]


@dataclass(frozen=True)
class _Ref:
    """A workflow to start a test run of; a blocked step stops it."""

    id: str
    name: str
    continue_when_blocked: bool = False
    # The steps to run instead of the workflow's stored ones: a draft's.
    steps: list[matching.StepSpec] | None = None


@dataclass(frozen=True)
class _Step:
    id: str
    position: int
    action: str
    settings: dict[str, Any]
    status: str
    attempts: int
    wait_until: datetime | None = None
    retry_base: int = 0
    when: list[dict[str, Any]] | None = None
    fallback: dict[str, Any] | None = None
    fallback_at: int | None = None

    @classmethod
    def of(cls, row: Any) -> _Step:
        values = dict(row)
        moment = values.get("wait_until")
        if isinstance(moment, str):  # PostgreSQL's json_agg gives it as text
            parsed = datetime.fromisoformat(moment)
            values["wait_until"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return cls(**values)

    @property
    def on_fallback(self) -> bool:
        return self.fallback_at is not None and self.fallback is not None

    @property
    def action_and_settings(self) -> tuple[str, dict[str, Any]]:
        """What this attempt runs: the step's action, or its fallback once that took over."""
        if self.on_fallback:
            assert self.fallback is not None
            return self.fallback["action"], self.fallback["settings"]
        return self.action, self.settings


@dataclass(frozen=True)
class _Claim:
    run_id: str
    token: str
    account_id: str
    plan: str
    workflow: WorkflowRef
    trigger: str
    event: BookingEvent
    steps: list[_Step]
    integrations: dict[str, dict[str, Any]]
    continue_when_blocked: bool
    test: bool = False
    # The run has been through a wait: the booking is read again before each of its steps.
    after_wait: bool = False
    started: str | None = None  # the step the claim itself started (PostgreSQL)
    cache: dict[str, Any] = field(default_factory=dict)  # ActionContext.run_cache


class Hub:
    """One LinkTime installation: settings, database, installed plugins, and the broker hook."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: plugins.Registry | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings or Settings()
        self.registry = registry or plugins.configured(self.settings)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = make_engine(self.settings.effective_database_url)
        # Read once: every seal, session, callback key and unsubscribe link uses it, so it
        # must not change under a running process anyway.
        self._secret_key = self._load_secret_key()
        self.sealer = Sealer(self._secret_key)
        self.clock = clock  # due times; leases go by the database's clock
        self.heartbeat = Heartbeat(self.db, self.settings.step_lease_seconds)
        self.endpoint_health = endpoints.Healths()
        # Set by the broker binding (worker.bind); until then runs wait for the scheduler.
        self.enqueue: Callable[[list[str]], None] = lambda run_ids: None
        # Also the broker binding's: how many messages wait in the broker (read by /metrics).
        self.queue_length: Callable[[], int] | None = None

    def secret_key(self) -> str:
        return self._secret_key

    def _load_secret_key(self) -> str:
        if self.settings.secret_key:
            return self.settings.secret_key
        path = self.settings.data_dir / "secret.key"
        if not path.exists():
            # Written whole into a private file (mkstemp: O_EXCL, mode 0600), then linked into
            # place, which fails if the name exists: never readable by others, never read
            # half-written, and when processes start together the first link wins; the others
            # read the winner's key.
            fd, draft = tempfile.mkstemp(dir=self.settings.data_dir, prefix=".secret.key.")
            try:
                with os.fdopen(fd, "w") as out:
                    out.write(new_secret())
                    out.flush()
                    os.fsync(out.fileno())
                with contextlib.suppress(FileExistsError):
                    os.link(draft, path)
            finally:
                os.unlink(draft)
        return path.read_text().strip()

    def resend_at(self, now: datetime) -> datetime:
        """When a run handed to the broker ``now`` is handed out again by the sweeper, its
        message presumed lost: a run due before then would be sent twice."""
        return now + timedelta(seconds=self.settings.requeue_after_seconds)

    def migrate(self) -> None:
        from . import migrations

        if not migrations.at_head(self.db):
            migrations.upgrade(self.db)

    def close(self) -> None:
        self.heartbeat.stop()
        self.db.dispose()

    # -- events -------------------------------------------------------------------------------

    def emit(
        self,
        event: BookingEvent | dict[str, Any],
        *,
        account_id: str,
        source: str | None = None,
    ) -> Ingested:
        """Store an event once and start the runs it triggers. A replayed event id returns the
        first answer and starts nothing. ``source``: the booking source it came through
        (``sources.SourceType.name``); a provider's retry of a delivery is a replay even when
        its translation differs now (it read a booking that has changed since)."""
        if not isinstance(event, BookingEvent):
            event = BookingEvent.model_validate(event)
        payload = event.model_dump(mode="json")
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        with self.db.begin() as conn:
            ingested = self._store_event(conn, account_id, event, payload, digest, source)
        metrics.event_received(event.type, "replayed" if ingested.replayed else "accepted")
        self.enqueue(ingested.run_ids)
        return ingested

    def _replay(
        self, conn: Connection, account_id: str, event_id: str, digest: str, source: str | None
    ) -> Ingested:
        """The answer given when the event was first received; it starts nothing."""
        row = conn.execute(sql.EVENT_ANSWER, {"b_account": account_id, "b_event": event_id}).one()
        if row.payload_hash != digest and source is None:
            raise InputError(
                f"event id {event_id!r} was already received with a different body",
                status=409,
                code="event_id_reused",
            )
        return Ingested(row.answer, replayed=True, run_ids=[])

    def _store_event(
        self,
        conn: Connection,
        account_id: str,
        event: BookingEvent,
        payload: dict[str, Any],
        digest: str,
        source: str | None = None,
    ) -> Ingested:
        """Store the event and, in the same transaction, the runs it starts or plans."""
        now = self.clock()
        event_pk = new_id("ev")
        event_row = {
            "id": event_pk,
            "account_id": account_id,
            "event_id": event.id,
            "type": event.type,
            "booking_uid": event.booking.uid,
            "occurred_at": event.occurred_at,
            "received_at": now,
            "payload": payload,
            "payload_hash": digest,
            "answer": {},
            "decisions": [],
            "source": source,
        }
        if not insert_ignoring(conn, Event, event_row):
            # This event id was received before, or just now by a concurrent request (the
            # insert waited for it to commit): answer as then.
            return self._replay(conn, account_id, event.id, digest, source)
        emails = invitee_emails(payload["booking"])
        if emails:
            conn.execute(
                sql.ADD_EVENT_EMAILS,
                [{"account_id": account_id, "email": e, "event_pk": event_pk} for e in emails],
            )
        applied = bookings.apply_event(conn, account_id, event, event_pk)
        time_triggers = [n for n, t in self.registry.triggers.items() if t.kind == "time"]
        # The workflows are read after the event's insert, which holds the account's row FOR
        # KEY SHARE (its foreign key) until commit: an enable planning existing bookings at the
        # same time (bookings.replan_workflow) either sees this booking or is seen enabled here.
        plan_name, candidates = matching.candidates(conn, account_id)
        verdicts = matching.judge(
            candidates,
            event,
            applied,
            self.registry,
            plan_name,
            self.settings.plan(plan_name),
            now,
        )
        applies = [wf for wf, reason in verdicts if reason is None]
        planned: list[bookings.Planned] = []
        woken: list[str] = []
        if event.type == "booking.cancelled":
            bookings.cancel_for_booking(conn, account_id, event.booking.uid, time_triggers, now)
            bookings.cancel_parked(conn, account_id, event.booking.uid, now)
        elif event.type in matching.PLANNING_EVENTS:
            if event.type == "booking.rescheduled" and applied.fresh:
                woken = bookings.wake_parked(
                    conn, account_id, event.booking.uid, self.resend_at(now)
                )
            timed = [
                bookings.TimeWorkflow(
                    w.id, w.name, self.registry.triggers[w.trigger], w.offset_minutes
                )
                for w in applies
                if w.trigger in time_triggers
            ]
            if event.type == "booking.rescheduled":
                bookings.cancel_retries(conn, account_id, event.booking.uid, timed, now)
            planned = bookings.plan(
                conn,
                account_id,
                event.booking.uid,
                event_pk,
                applied.start,
                applied.end,
                timed,
                now,
            )
        immediate = [w for w in applies if w.trigger == event.type]
        run_ids = self._start_runs(conn, account_id, event, event_pk, immediate, now)
        runs = [
            bookings.Planned(run_id, wf.id, RunStatus.QUEUED, None, None)
            for run_id, wf in zip(run_ids, immediate, strict=True)
        ] + planned
        runs.sort(key=lambda r: r.run_id)
        answer = {
            "id": event.id,
            "type": event.type,
            "received_at": _iso(now),
            "runs": [
                {
                    "id": r.run_id,
                    "workflow_id": r.workflow_id,
                    "status": r.status,
                    "due_at": _iso(r.due_at)
                    if r.due_at and r.status == RunStatus.SCHEDULED
                    else None,
                    "note": r.note,
                }
                for r in runs
            ],
        }
        by_workflow = {r.workflow_id: r.run_id for r in runs}
        decisions = [
            {
                "workflow_id": wf.id,
                "name": wf.name,
                "run_id": by_workflow.get(wf.id),
                "reason": reason,
            }
            for wf, reason in verdicts
        ]
        conn.execute(
            sql.EVENT_OUTCOME, {"b_id": event_pk, "b_answer": answer, "b_decisions": decisions}
        )
        due = run_ids + bookings.due_now(planned, now) + woken
        return Ingested(answer, replayed=False, run_ids=due)

    def start_test_run(
        self,
        account_id: str,
        workflow_id: str,
        name: str,
        trigger: str,
        event: BookingEvent,
        steps: list[matching.StepSpec] | None = None,
    ) -> str:
        """A run of one workflow, now, marked as a test; it touches no booking state.
        ``steps``: the (action, sealed settings) it runs, when not the workflow's stored ones
        (an unsaved draft's)."""
        now = self.clock()
        event_pk = new_id("ev")
        with self.db.begin() as conn:
            conn.execute(
                sql.ADD_EVENT,
                {
                    "id": event_pk,
                    "account_id": account_id,
                    "event_id": f"test_{event_pk}",
                    "type": event.type,
                    "booking_uid": event.booking.uid,
                    "occurred_at": event.occurred_at,
                    "received_at": now,
                    "payload": event.model_dump(mode="json"),
                    "payload_hash": "-",
                    "answer": {},
                    "decisions": [],
                },
            )
            run_ids = self._start_runs(
                conn,
                account_id,
                event,
                event_pk,
                [_Ref(workflow_id, name, steps=steps)],
                now,
                trigger=trigger,
                test=True,
            )
        self.enqueue(run_ids)
        return run_ids[0]

    def _start_runs(
        self,
        conn: Connection,
        account_id: str,
        event: BookingEvent,
        event_pk: str,
        workflows: Sequence[matching.Candidate | _Ref],
        now: datetime,
        *,
        trigger: str | None = None,
        test: bool = False,
    ) -> list[str]:
        if not workflows:
            return []
        due = self.resend_at(now)
        run_ids = {wf.id: new_id("run") for wf in workflows}
        run_rows: list[dict[str, Any]] = [
            {
                "id": run_ids[wf.id],
                "account_id": account_id,
                "workflow_id": wf.id,
                "workflow_name": wf.name,
                "event_id": event_pk,
                "trigger": trigger or event.type,
                "booking_uid": event.booking.uid,
                "status": RunStatus.QUEUED,
                "test": test,
                "continue_when_blocked": wf.continue_when_blocked,
                "due_at": due,
                "created_at": now,
            }
            for wf in workflows
        ]
        conn.execute(sql.ADD_RUN, run_rows)
        self._copy_steps(
            conn,
            run_ids,
            {wf.id: wf.steps for wf in workflows if wf.steps is not None},
        )
        return list(run_ids.values())

    def _copy_steps(
        self,
        conn: Connection,
        runs_by_workflow: dict[str, str],
        known: dict[str, list[matching.StepSpec]] | None = None,
    ) -> None:
        """Give runs their own copy of their workflow's steps, as the workflow stands now
        (``known``: the steps, when the caller has just read them)."""
        steps = dict(known or {})
        missing = [wf for wf in runs_by_workflow if wf not in steps]
        if missing:
            for s in conn.execute(
                select(
                    WorkflowStep.workflow_id,
                    WorkflowStep.action,
                    WorkflowStep.settings,
                    WorkflowStep.when,
                    WorkflowStep.fallback,
                )
                .where(WorkflowStep.workflow_id.in_(missing))
                .order_by(WorkflowStep.workflow_id, WorkflowStep.position)
            ):
                steps.setdefault(s.workflow_id, []).append(
                    matching.StepSpec(s.action, s.settings, s.when, s.fallback)
                )
        rows = [
            {
                "id": new_id("stp"),
                "run_id": run_id,
                "position": position,
                "action": spec.action,
                "settings": spec.settings,
                "when": spec.when,
                "fallback": spec.fallback,
                "status": StepStatus.PENDING,
                "attempts": 0,
            }
            for wf, run_id in runs_by_workflow.items()
            for position, spec in enumerate(steps.get(wf, []))
        ]
        if rows:
            conn.execute(sql.ADD_STEP, rows)

    # -- execution ----------------------------------------------------------------------------

    def process_run(self, run_id: str) -> None:
        """Execute a run's remaining steps in order. Safe to call twice for the same run, at the
        same time or later: only the lease holder executes, and only unfinished steps."""
        # One pooled connection for the whole run, one transaction per step.
        with self.db.connect() as conn:
            if conn.dialect.name == "postgresql":
                # There every write below is a single statement fenced by the lease, so each
                # is its own transaction: no BEGIN and COMMIT round trips.
                conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                with conn.begin():
                    claim = self._claim(conn, run_id)
                    if claim is None:
                        return
                    step = self._start(conn, claim)
                # A step may outlast the lease: this process renews it until the run is let go.
                with (
                    self.heartbeat.holding(run_id, claim.token),
                    logs.bound(run_id=run_id, account_id=claim.account_id, event_id=claim.event.id),
                ):
                    first = step
                    while step is not None:
                        if claim.after_wait and step is not first:
                            with conn.begin():
                                if self._cancelled_meanwhile(conn, claim):
                                    return
                        with logs.bound(step_id=step.id):
                            attempted = self._attempt(claim, step)
                            with conn.begin():
                                step = self._record(conn, claim, step, attempted)
            except LeaseLost:
                log.warning("run %s: lease lost; another worker owns it now", run_id)

    def _claim(self, conn: Connection, run_id: str) -> _Claim | None:
        token = new_id("lease")
        params = {
            "b_run": run_id,
            "b_now": self.clock(),
            "b_token": token,
            "b_lease": self.settings.step_lease_seconds,
        }
        row = conn.execute(sql.CLAIM[conn.dialect.name], params).first()
        if row is None:
            return None
        started = None
        if conn.dialect.name == "postgresql":
            context = row
            started = row.started
            steps = [_Step.of(s) for s in row.steps or ()]
        else:
            context = conn.execute(sql.CONTEXT, {"b_event": row.event_id}).one()
            steps = self._steps(conn, run_id)
        # Nothing attempted yet: this claim starts the run, its first attempt follows (metrics).
        since = row.created_at if all(s.attempts == 0 for s in steps) else None
        reminder = not steps
        if reminder:  # a planned run firing: steps from the workflow as it is now
            fired = self._fire(conn, run_id, row, context, token)
            if fired is None:
                return None
            context, due = fired
            # Late is past the due time, or past the planning when that was later.
            since = max(due or row.created_at, row.created_at)
            self._copy_steps(conn, {row.workflow_id: run_id})
            steps = self._steps(conn, run_id)
        after_wait = not row.test and any(s.wait_until is not None for s in steps)
        if after_wait and not reminder:
            # Taken up after a wait: the booking as it is now, not as the wait began.
            resumed = self._resume(conn, run_id, row, token)
            if resumed is None:
                return None
            context = resumed or context
        if since is not None:
            metrics.after_commit(
                conn, metrics.first_attempt, row.trigger, self.clock() - since, reminder=reminder
            )
        needed = {
            a.integration
            for s in steps
            if (a := self.registry.actions.get(s.action)) is not None and a.integration
        }
        integrations = (
            conn.execute(
                select(Integration.name, Integration.settings).where(
                    Integration.account_id == row.account_id, Integration.name.in_(needed)
                )
            ).all()
            if needed
            else []
        )
        return _Claim(
            run_id=run_id,
            token=token,
            account_id=row.account_id,
            plan=context.plan,
            workflow=WorkflowRef(row.workflow_id, row.workflow_name),
            trigger=row.trigger,
            event=BookingEvent.model_validate(context.payload),
            steps=steps,
            integrations={i.name: i.settings for i in integrations},
            continue_when_blocked=row.continue_when_blocked,
            test=row.test,
            after_wait=after_wait,
            started=started,
        )

    def _steps(self, conn: Connection, run_id: str) -> list[_Step]:
        return [_Step.of(r._mapping) for r in conn.execute(sql.STEPS, {"b_run": run_id})]

    def _fire(
        self, conn: Connection, run_id: str, run: Any, context: Any, token: str
    ) -> tuple[Any, datetime | None] | None:
        """Check a claimed planned run against the booking and the workflow as they are now:
        it fires (returns the event context it carries and its due time), or it is planned
        again for the booking's new time, or it ends (cancelled, skipped); then None."""
        planned = BookingEvent.model_validate(context.payload).booking
        firing = bookings.on_claim(
            conn, run_id, run.event_id, planned, self.registry.triggers, self.clock()
        )
        if firing.status == RunStatus.SCHEDULED:
            if bookings.put_back(conn, run_id, token, firing):
                return None
            replaced = "the booking moved: the reminder planned for its new time replaces this one"
            firing = replace(firing, status=RunStatus.CANCELLED, note=replaced)
        if firing.status != RunStatus.RUNNING:
            self._finish(conn, run_id, token, firing.status, firing.note)
            return None
        if firing.event_id != run.event_id:
            if not bookings.carry_latest(conn, run_id, token, firing):
                raise LeaseLost(run_id)
            context = conn.execute(sql.CONTEXT, {"b_event": firing.event_id}).one()
        if firing.conditions:
            event = BookingEvent.model_validate(context.payload)
            live = firing.live or conditions.Live.of_event(event)
            facts = conditions.Facts(event, live, self.clock())
            verdict = conditions.evaluate(conditions.parse(firing.conditions), facts)
            if not verdict.held:
                note = f"the workflow's conditions did not hold when it fired: {verdict.reason()}"
                self._finish(conn, run_id, token, RunStatus.SKIPPED, note)
                return None
        return context, firing.due_at

    def _resume(self, conn: Connection, run_id: str, run: Any, token: str) -> Any | None:
        """A run taken up after a wait, against its booking as it stands: ended ``cancelled``
        (None) when the booking was cancelled meanwhile (unless a cancellation started it);
        else the event context to carry on with: the booking's latest when it changed
        (False when it did not)."""
        standing = bookings.now_standing(conn, run.account_id, run.booking_uid)
        if standing is None:
            return False
        if standing.live.status == "cancelled" and run.trigger != "booking.cancelled":
            self._end_cancelled(conn, run_id, token)
            return None
        if standing.event_id == run.event_id:
            return False
        if not bookings.carry_latest(
            conn, run_id, token, bookings.Firing(RunStatus.RUNNING, standing.event_id)
        ):
            raise LeaseLost(run_id)
        return conn.execute(sql.CONTEXT, {"b_event": standing.event_id}).one()

    def _cancelled_meanwhile(self, conn: Connection, claim: _Claim) -> bool:
        """Before a step of a run that has been through a wait: the booking read anew (by
        the step's conditions too); True when it was cancelled meanwhile, the run then ended
        ``cancelled`` with its other steps skipped."""
        claim.cache.pop(LIVE, None)
        standing = bookings.now_standing(conn, claim.account_id, claim.event.booking.uid)
        if standing is None or claim.trigger == "booking.cancelled":
            return False
        if standing.live.status != "cancelled":
            claim.cache[LIVE] = standing.live
            return False
        self._end_cancelled(conn, claim.run_id, claim.token)
        return True

    def _end_cancelled(self, conn: Connection, run_id: str, token: str) -> None:
        self._finish(conn, run_id, token, RunStatus.CANCELLED, bookings.CANCELLED_IN_DELAY)
        conn.execute(sql.SKIP_OPEN, {"b_run": run_id, "b_now": self.clock()})

    def _start(self, conn: Connection, claim: _Claim) -> _Step | None:
        """Pick up where the run stands: the first unfinished step, now marked running."""
        step = next((s for s in claim.steps if s.status in STEP_OPEN), None)
        if step is None:
            self._finish(conn, claim.run_id, claim.token, RunStatus.SUCCEEDED)
            return None
        if step.status == StepStatus.RUNNING:
            # The previous owner died during this attempt; whether it was delivered is unknown.
            log.info(
                "run %s step %s account %s: worker_lost, the worker of attempt %d was lost; "
                "its lease is recovered",
                claim.run_id,
                step.id,
                claim.account_id,
                step.attempts,
            )
            lost = Result.retry("the worker was lost during this attempt", error_code="worker_lost")
            return self._record(conn, claim, step, _Attempted(lost, self.clock(), 0))
        if step.id != claim.started:
            fenced = {"b_run": claim.run_id, "b_token": claim.token}
            if conn.execute(sql.START_STEP, {**fenced, "b_step": step.id}).rowcount != 1:
                raise LeaseLost(claim.run_id)
        return replace(step, status=StepStatus.RUNNING, attempts=step.attempts + 1)

    def _attempt(self, claim: _Claim, step: _Step) -> _Attempted:
        started = self.clock()
        t0 = time.perf_counter()
        services = self._services(claim, step)
        name, _ = step.action_and_settings
        try:
            action = self.registry.action(name)
        except plugins.UnknownAction as exc:
            result = Result.fail(str(exc), error_code="action_not_installed")
        else:
            skipped = None if step.on_fallback else self._unless(claim, step, services)
            if skipped is not None:
                return _Attempted(skipped, started, int((time.perf_counter() - t0) * 1000))
            # The plan is checked again here: the account may have been downgraded since.
            blocked = plans.why_not(claim.plan, self.settings.plan(claim.plan), action)
            if blocked is not None:
                result = Result.blocked(blocked, error_code=BLOCKED)
            else:
                with (
                    self.heartbeat.attempting(claim.run_id, action.timeout * _DEADLINE),
                    metrics.IN_PROGRESS.labels(action.name).track_inprogress(),
                ):
                    return self._execute(action, claim, step, services, started, t0)
        return _Attempted(result, started, int((time.perf_counter() - t0) * 1000))

    def _services(self, claim: _Claim, step: _Step) -> StepServices:
        return StepServices(
            self,
            account_id=claim.account_id,
            plan=claim.plan,
            step_id=step.id,
            booking_uid=claim.event.booking.uid,
            occurred_at=claim.event.occurred_at,
            cache=claim.cache,
        )

    def _unless(self, claim: _Claim, step: _Step, services: StepServices) -> Result | None:
        """A skip, when the step's ``when`` does not hold for the booking as it is now."""
        if not step.when:
            return None
        facts = conditions.Facts(claim.event, services.booking_now(claim.event), services.now())
        verdict = conditions.evaluate(conditions.parse(step.when), facts, prefix="when")
        if verdict.held:
            return None
        return Result.skip(f"its conditions did not hold: {verdict.reason()}")

    def _execute(
        self,
        action: ActionType,
        claim: _Claim,
        step: _Step,
        services: StepServices,
        started: datetime,
        t0: float,
    ) -> _Attempted:
        """Open the step's settings and credentials and run one attempt, unless its endpoint
        is disabled; keep the endpoint's health."""
        try:
            settings: BaseModel = self.sealer.open(action.settings, step.action_and_settings[1])
        except ValueError as exc:
            failed = Result.fail(
                f"step settings are no longer valid: {exc}", error_code="bad_settings"
            )
            return _Attempted(failed, started, int((time.perf_counter() - t0) * 1000))
        url = action.endpoint(settings) if action.endpoint is not None else None
        endpoint = (
            endpoints.ensure(
                self.db, self.endpoint_health, claim.account_id, action.name, url, started
            )
            if url
            else None
        )
        # A test run (Send example) still goes: it is how a user sees the endpoint works again.
        refused = endpoint.refusal() if endpoint is not None and not claim.test else None
        result = refused or self._attempt_with(action, claim, step, settings, services)
        duration_ms = int((time.perf_counter() - t0) * 1000)
        if endpoint is not None:
            endpoints.observe(self.db, self.endpoint_health, endpoint, result, self.clock())
        return _Attempted(result, started, duration_ms, endpoint.id if endpoint else None)

    def _attempt_with(
        self,
        action: ActionType,
        claim: _Claim,
        step: _Step,
        settings: BaseModel,
        services: StepServices,
    ) -> Result:
        credentials = None
        stored = claim.integrations.get(action.integration or "")
        if action.credentials is not None and stored is not None:
            try:
                credentials = self.sealer.open(action.credentials, stored)
            except ValueError as exc:
                return Result.fail(
                    f"the {action.integration} integration settings are not valid for "
                    f"{action.name}: {exc}",
                    error_code="bad_credentials",
                )
        ctx = ActionContext(
            event=claim.event,
            trigger=claim.trigger,
            workflow=claim.workflow,
            account_id=claim.account_id,
            plan=claim.plan,
            run_id=claim.run_id,
            step_id=step.id,
            position=step.position,
            attempt=step.attempts,
            settings=settings,
            credentials=credentials,
            test=claim.test,
            run_cache=claim.cache,
            services=services,
            waited_until=step.wait_until,
            fallback=step.on_fallback,
        )
        return run_attempt(action, ctx)

    def _record(
        self,
        conn: Connection,
        claim: _Claim,
        step: _Step,
        attempted: _Attempted,
    ) -> _Step | None:
        """Log the attempt and move the run on. Returns the next step to execute, if any.

        The run's row is written first, fenced by the lease token: a worker that lost its lease
        raises LeaseLost here, before anything else is written."""
        result, started, duration_ms = attempted.result, attempted.started, attempted.duration_ms
        now = self.clock()
        if result.outcome is Outcome.WAIT and (result.until is None or result.until <= now):
            result = Result.ok()  # a moment already past: go on at once
        schedule = self.settings.retry_schedule
        # A fallback's attempts have a retry schedule of their own.
        tries = step.attempts - step.retry_base
        retry = result.outcome is Outcome.RETRY and tries <= len(schedule)
        following = next((s for s in claim.steps if s.position > step.position), None)
        blocked = result.outcome is Outcome.BLOCKED or result.error_code == BLOCKED
        opted_out = result.outcome is Outcome.OPTED_OUT
        skipped = result.outcome is Outcome.SKIP
        go_on = (
            result.outcome is Outcome.SUCCEEDED
            or opted_out
            or skipped
            or (blocked and claim.continue_when_blocked)
        )
        # Failed for good, with a fallback not yet tried: the fallback takes over at once.
        falls_back = (
            not (go_on or retry or blocked)
            and result.outcome in (Outcome.FAILED, Outcome.RETRY)
            and step.fallback is not None
            and step.fallback_at is None
        )
        # The run row after this attempt: still ours (the lease renewed), or let go of.
        next_at = None
        attempt_status: str | None = None
        if go_on:
            step_status = (
                BLOCKED
                if blocked
                else StepStatus.OPTED_OUT
                if opted_out
                else StepStatus.SKIPPED
                if skipped
                else StepStatus.SUCCEEDED
            )
            if following is not None:
                run: dict[str, Any] = {"b_lease": self.settings.step_lease_seconds}
            else:
                run = {"b_run_status": RunStatus.SUCCEEDED, "b_due": None, "b_note": None}
        elif result.outcome is Outcome.WAIT:
            step_status = StepStatus.WAITING
            next_at = result.until
            run = {"b_run_status": RunStatus.WAITING, "b_due": next_at, "b_note": None}
        elif result.outcome is Outcome.STOP:
            step_status = StepStatus.STOPPED
            stopped = f"stopped at step {step.position + 1}: {result.error}"
            run = {"b_run_status": RunStatus.SUCCEEDED, "b_due": None, "b_note": stopped}
        elif retry or falls_back:
            step_status = StepStatus.PENDING
            if falls_back:
                delay = 0.0
                attempt_status = AttemptStatus.FAILED
                # Given back: the fallback takes credits of its own (once, as any step).
                credits.refund(conn, step.id)
                metrics.after_commit(conn, self.enqueue, [claim.run_id])
            else:
                delay = schedule[tries - 1]
                if result.retry_after is not None:
                    delay = min(max(result.retry_after, 0.0), max(schedule))
            next_at = now + timedelta(seconds=delay)
            run = {"b_run_status": RunStatus.WAITING, "b_due": next_at, "b_note": None}
        else:
            step_status = BLOCKED if blocked else StepStatus.FAILED
            run = {"b_run_status": RunStatus.FAILED, "b_due": None, "b_note": None}
        excerpt = result.response_excerpt
        delivery = _delivery(result)
        if attempt_status is None:
            attempt_status = {
                StepStatus.PENDING: AttemptStatus.RETRYING,
                StepStatus.WAITING: AttemptStatus.WAITING,
            }.get(step_status, step_status)
        attempt = {
            "id": new_id("att"),
            "step_id": step.id,
            "number": step.attempts,
            "status": attempt_status,
            "started_at": started,
            "duration_ms": duration_ms,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "error": result.error,
            "external_id": result.external_id,
            "response_excerpt": excerpt[: self.settings.response_excerpt_bytes]
            if excerpt
            else None,
            "delivery_status": delivery,
            "delivery_updated_at": now if delivery else None,
            "endpoint_id": attempted.endpoint_id,
            "action": step.action_and_settings[0] if step.on_fallback else None,
        }
        if step_status not in (StepStatus.SUCCEEDED, StepStatus.PENDING, StepStatus.WAITING):
            credits.refund(conn, step.id)  # not sent: what the step took is given back
        if result.suppress is not None:
            suppressions.add(
                conn,
                claim.account_id,
                result.suppress,
                result.error or "the provider reported an opt-out",
                suppressions.PROVIDER,
                now,
            )
        nxt = following if go_on else None
        skip_rest = run.get("b_run_status") == RunStatus.FAILED or step_status == StepStatus.STOPPED
        params = {
            "b_run": claim.run_id,
            "b_token": claim.token,
            **run,
            "b_step": step.id,
            "b_next": nxt.id if nxt else None,
            "b_status": step_status,
            "b_external_id": result.external_id,
            "b_error": result.error,
            "b_error_code": result.error_code,
            "b_next_at": next_at,
            "b_fallback_at": step.attempts if falls_back else None,
            "b_wait_until": next_at if step_status == StepStatus.WAITING else None,
            "b_wait_follows": result.follows_booking if step_status == StepStatus.WAITING else None,
            "b_retry_base": step.attempts
            if falls_back or step_status == StepStatus.WAITING
            else None,
            # The step and, unless it waits for a retry or a moment, the run.
            "b_finished": None if step_status in (StepStatus.PENDING, StepStatus.WAITING) else now,
            "b_position": step.position,
            "b_now": now,
        }
        if conn.dialect.name == "postgresql":
            recorded = conn.execute(
                sql.RECORD[nxt is not None, skip_rest],
                {**params, **{f"a_{k}": v for k, v in attempt.items()}},
            )
            if recorded.rowcount != 1:
                raise LeaseLost(claim.run_id)
        else:
            fenced = conn.execute(sql.MOVE_RUN if nxt is None else sql.RENEW_LEASE, params)
            if fenced.rowcount != 1:
                raise LeaseLost(claim.run_id)
            conn.execute(sql.ADD_ATTEMPT, attempt)
            conn.execute(sql.CLOSE_STEP, params)
            if nxt is not None:
                conn.execute(sql.START_NEXT, params)
            if skip_rest:
                conn.execute(sql.SKIP_REST, params)
        metrics.after_commit(
            conn, metrics.attempt_recorded, step.action, str(attempt["status"]), duration_ms / 1000
        )
        if run.get("b_run_status") in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            metrics.after_commit(conn, metrics.runs_finished, run["b_run_status"])
        if (
            step_status in (StepStatus.PENDING, StepStatus.FAILED)
            or run.get("b_run_status") == RunStatus.FAILED
        ):
            self._log_setback(claim, step, result, next_at)
        return (
            None
            if nxt is None
            else replace(nxt, status=StepStatus.RUNNING, attempts=nxt.attempts + 1)
        )

    def _log_setback(
        self, claim: _Claim, step: _Step, result: Result, retry_at: datetime | None
    ) -> None:
        """One INFO line per retry scheduled and per run failed: ids, codes and times only, never
        the error text (it may quote a response) nor anything the step sent; a WARNING with the
        text when the server's own settings are at fault (``errorcodes``)."""
        what = (
            f"retry {step.attempts + 1} at {_iso(retry_at)}"
            if retry_at is not None
            else "run failed"
        )
        log.info(
            "run %s step %s account %s: attempt %d ended %s (http %s); %s",
            claim.run_id,
            step.id,
            claim.account_id,
            step.attempts,
            result.error_code or result.outcome.value,
            result.http_status if result.http_status is not None else "-",
            what,
        )
        if is_operator_error(self.registry.actions.get(step.action), result.error_code):
            # The server's settings, not the booking: the operator's detail, kept from the
            # account's users (the dashboard says "contact your administrator").
            log.warning("run %s step %s: %s", claim.run_id, step.id, result.error)

    def _finish(
        self, conn: Connection, run_id: str, token: str, status: str, note: str | None = None
    ) -> None:
        params = {"b_token": token, "b_status": status, "b_note": note, "b_now": self.clock()}
        if conn.execute(sql.END_RUN, {"b_run": run_id, **params}).rowcount != 1:
            raise LeaseLost(run_id)
        metrics.after_commit(conn, metrics.runs_finished, status)

    # -- scheduling ---------------------------------------------------------------------------

    @property
    def owns_database(self) -> bool:
        """Whether no other process works on this database: SQLite (the embedded default's
        file), or PostgreSQL without Redis when the operator says so (``owns_database``)."""
        if self.db.dialect.name == "sqlite":
            return True
        return self.settings.owns_database and not self.settings.redis_url

    def resume_orphans(self) -> bool:
        """At the start of the database's only worker (the embedded default): make every
        unfinished run due now, releasing the leases this process held before it stopped. On a
        database others share, those leases may be live: nothing is touched (runs whose worker
        died come back when their lease expires). Returns whether runs were resumed."""
        if not self.owns_database:
            return False
        now = self.clock()
        with self.db.begin() as conn:
            conn.execute(
                update(Run)
                .where(Run.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)))
                .values(due_at=now, lease_until=sql.DB_NOW)  # leases: the database's clock
            )
        return True

    def due_runs(self, limit: int | None = None) -> list[str]:
        """Hand out the runs that are due now: new runs whose first message may be lost,
        reminders and retries whose time came, runs whose worker's lease expired (by the
        database's clock: a live one is left alone). Each is pushed ``requeue_after_seconds``
        ahead, so a lost message is sent again later."""
        now = self.clock()
        later = self.resend_at(now)
        with self.db.begin() as conn:
            due = conn.execute(
                select(Run.id, Run.status, Run.account_id)
                .where(
                    Run.due_at <= now,
                    or_(Run.status != RunStatus.RUNNING, Run.lease_until <= sql.DB_NOW),
                )
                .order_by(Run.due_at)
                .limit(limit or self.settings.scheduler_batch)
                .with_for_update(skip_locked=True)
            ).all()
            ids = [r.id for r in due]
            if ids:
                # Waiting (retry) and scheduled (reminder) runs become queued: due now.
                conn.execute(
                    update(Run)
                    .where(Run.id.in_(ids))
                    .values(
                        due_at=later,
                        status=case(
                            (
                                Run.status.in_((RunStatus.WAITING, RunStatus.SCHEDULED)),
                                RunStatus.QUEUED,
                            ),
                            else_=Run.status,
                        ),
                    )
                )
                # A queued or running run that is due again was lost on its way (the message,
                # or the worker): say so. Reminders and retries coming due are the normal case.
                lost = [r for r in due if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)]
                if lost:
                    self._log_resent(conn, lost)
        return ids

    def _log_resent(self, conn: Connection, runs: Sequence[Any]) -> None:
        steps: dict[str, str] = {}
        for step in conn.execute(sql.OPEN_STEPS, {"b_runs": [r.id for r in runs]}):
            steps.setdefault(step.run_id, step.id)  # the first open one: where the run stands
        for r in runs:
            log.info(
                "run %s step %s account %s: re-enqueued by the sweeper (%s)",
                r.id,
                steps.get(r.id, "-"),
                r.account_id,
                "its worker's lease expired"
                if r.status == RunStatus.RUNNING
                else "its message was not picked up",
            )
