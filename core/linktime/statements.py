"""The engine's hot-path SQL, built once. Building a statement costs more than running it
(bench/README.md); these are executed with parameter dicts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .statuses import STEP_OPEN, RunStatus, StepStatus
from .storage import Account, Attempt, Event, EventEmail, Run, RunStep, UTCDateTime

_now = bindparam("b_now", type_=UTCDateTime())


class DatabaseNow(FunctionElement[Any]):
    """The database's clock, plus ``seconds`` when given. Leases are set and compared with it,
    never with a worker's clock: a worker whose clock is off can neither steal a live lease nor
    hold one past its time."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(DatabaseNow, "postgresql")
def _pg_now(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    # statement_timestamp(), not now(): now() stands still for a whole transaction.
    if not element.clauses.clauses:
        return "statement_timestamp()"
    seconds = compiler.process(element.clauses, **kw)
    return f"(statement_timestamp() + make_interval(secs => {seconds}))"


@compiles(DatabaseNow, "sqlite")
def _sqlite_now(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    # The text layout SQLAlchemy stores SQLite datetimes in (microseconds), so that they compare.
    layout = "strftime('%Y-%m-%d %H:%M:%f000', 'now'"
    if not element.clauses.clauses:
        return f"{layout})"
    seconds = compiler.process(element.clauses, **kw)
    return f"{layout}, {seconds} || ' seconds')"


DB_NOW = DatabaseNow()
# When a lease taken or renewed now runs out: ``b_lease`` seconds from the database's now.
LEASE_END = DatabaseNow(bindparam("b_lease", type_=Float()))

# Take a run: queued, a reminder that is due (by the hub's clock, which tests move), or running
# on a lease that expired (by the database's clock).
_CLAIM = (
    update(Run)
    .where(
        Run.id == bindparam("b_run"),
        or_(
            Run.status == RunStatus.QUEUED,
            and_(Run.status == RunStatus.SCHEDULED, Run.due_at <= _now),
            and_(Run.status == RunStatus.RUNNING, Run.lease_until <= DB_NOW),
        ),
    )
    .values(
        status=RunStatus.RUNNING,
        lease_token=bindparam("b_token"),
        lease_until=LEASE_END,
        due_at=LEASE_END,
        # A reminder a worker has taken is no longer its booking's pending one: a reschedule
        # from now on plans another (bookings.put_back makes it pending again if it must wait).
        unfired=False,
    )
)
_CLAIMED = (
    Run.account_id,
    Run.workflow_id,
    Run.workflow_name,
    Run.trigger,
    Run.event_id,
    Run.booking_uid,
    Run.continue_when_blocked,
    Run.created_at,
    Run.test,
)
CONTEXT = (
    select(Event.payload, Account.plan)
    .join(Account, Account.id == Event.account_id)
    .where(Event.id == bindparam("b_event"))
)
_STEP_FIELDS = (
    RunStep.id,
    RunStep.position,
    RunStep.action,
    RunStep.settings,
    RunStep.status,
    RunStep.attempts,
    RunStep.wait_until,
    RunStep.retry_base,
    RunStep.when,
    RunStep.fallback,
    RunStep.fallback_at,
)


def _claim_and_start() -> Any:
    """PostgreSQL: claim the run, start its first unfinished step when that one is pending
    (one left running was lost with its worker: the engine logs that instead), and return the
    run with its event, plan and steps, in one statement. The steps are as they were before
    it: ``started`` names the step it started."""
    claimed = (
        _CLAIM.where(Event.id == Run.event_id, Account.id == Run.account_id)
        .returning(*_CLAIMED, Event.payload, Account.plan)
        .cte("claimed")
    )
    first_unfinished = (
        select(RunStep.id)
        .where(
            RunStep.run_id == bindparam("b_run"),
            RunStep.status.in_(STEP_OPEN),
        )
        .order_by(RunStep.position)
        .limit(1)
        .scalar_subquery()
    )
    started = (
        update(RunStep)
        .where(
            RunStep.id == first_unfinished,
            RunStep.status.in_((StepStatus.PENDING, StepStatus.WAITING)),
            exists().select_from(claimed),
        )
        .values(status=StepStatus.RUNNING, attempts=RunStep.attempts + 1)
        .returning(RunStep.id)
        .cte("started")
    )
    fields = [x for f in _STEP_FIELDS for x in (f.key, f)]
    steps = (
        select(func.json_agg(aggregate_order_by(func.json_build_object(*fields), RunStep.position)))
        .where(RunStep.run_id == bindparam("b_run"))
        .scalar_subquery()
    )
    return select(
        claimed,
        steps.label("steps"),
        select(started.c.id).scalar_subquery().label("started"),
    )


# SQLite's RETURNING can only name the updated table: there the event, the plan and the steps
# take queries of their own, and the first step is started by another statement.
CLAIM = {"postgresql": _claim_and_start(), "sqlite": _CLAIM.returning(*_CLAIMED)}

STEPS = select(*_STEP_FIELDS).where(RunStep.run_id == bindparam("b_run")).order_by(RunStep.position)

# The steps still to run of several runs, each run's in order.
OPEN_STEPS = (
    select(RunStep.run_id, RunStep.id)
    .where(
        RunStep.run_id.in_(bindparam("b_runs", expanding=True)),
        RunStep.status.in_(STEP_OPEN),
    )
    .order_by(RunStep.run_id, RunStep.position)
)

# Every write that moves a run on goes through the lease holder's token: zero rows means the
# lease was lost. Moving the run on (to waiting, succeeded or failed) lets the lease go. A note,
# when none is given, keeps the one the run has.
MOVE_RUN = (
    update(Run)
    .where(Run.id == bindparam("b_run"), Run.lease_token == bindparam("b_token"))
    .values(
        status=bindparam("b_run_status"),
        due_at=bindparam("b_due"),
        lease_token=None,
        lease_until=None,
        finished_at=bindparam("b_finished"),
        note=func.coalesce(bindparam("b_note", type_=Text()), Run.note),
    )
)

# Between steps only the lease moves: due_at (indexed) keeps what the claim set, so a lost run
# is re-sent once both have passed, and the index is not rewritten at every step.
RENEW_LEASE = (
    update(Run)
    .where(Run.id == bindparam("b_run"), Run.lease_token == bindparam("b_token"))
    .values(lease_until=LEASE_END)
)

# The heartbeat, while a step runs: the lease and, so that the sweeper leaves a live run alone,
# the due time move together.
HEARTBEAT = RENEW_LEASE.values(due_at=LEASE_END)

END_RUN = (
    update(Run)
    .where(Run.id == bindparam("b_run"), Run.lease_token == bindparam("b_token"))
    .values(
        status=bindparam("b_status"),
        due_at=None,
        lease_token=None,
        lease_until=None,
        finished_at=_now,
        note=func.coalesce(bindparam("b_note", type_=Text()), Run.note),
    )
)

ADD_ATTEMPT = insert(Attempt)

_LEASE_HELD = exists().where(Run.id == bindparam("b_run"), Run.lease_token == bindparam("b_token"))


def _start(step: str) -> Any:
    return (
        update(RunStep)
        .where(RunStep.id == bindparam(step))
        .values(status=StepStatus.RUNNING, attempts=RunStep.attempts + 1)
    )


START_STEP = _start("b_step").where(_LEASE_HELD)
START_NEXT = _start("b_next")

_CLOSE = {
    "status": bindparam("b_status", type_=String()),
    "external_id": bindparam("b_external_id", type_=String()),
    "error": bindparam("b_error", type_=Text()),
    "error_code": bindparam("b_error_code", type_=String()),
    "next_attempt_at": bindparam("b_next_at", type_=UTCDateTime()),
    "finished_at": bindparam("b_finished", type_=UTCDateTime()),
    # Each kept as it is unless given: fallback_at when the fallback takes over, the wait's
    # fields when the step waits, retry_base at either.
    "fallback_at": func.coalesce(bindparam("b_fallback_at", type_=Integer()), RunStep.fallback_at),
    "wait_until": func.coalesce(bindparam("b_wait_until", type_=UTCDateTime()), RunStep.wait_until),
    "wait_follows": func.coalesce(
        bindparam("b_wait_follows", type_=Boolean()), RunStep.wait_follows
    ),
    "retry_base": func.coalesce(bindparam("b_retry_base", type_=Integer()), RunStep.retry_base),
}

CLOSE_STEP = update(RunStep).where(RunStep.id == bindparam("b_step")).values(_CLOSE)

SKIP_REST = (
    update(RunStep)
    .where(
        RunStep.run_id == bindparam("b_run"),
        RunStep.position > bindparam("b_position", type_=Integer()),
    )
    .values(status=StepStatus.SKIPPED, finished_at=_now)
)

# A run that ends before its steps do (its booking was cancelled during a delay).
SKIP_OPEN = (
    update(RunStep)
    .where(RunStep.run_id == bindparam("b_run"), RunStep.status.in_(STEP_OPEN))
    .values(status=StepStatus.SKIPPED, finished_at=_now)
)

ADD_EVENT = insert(Event)
ADD_EVENT_EMAILS = insert(EventEmail)
ADD_RUN = insert(Run)
ADD_STEP = insert(RunStep)

EVENT_ANSWER = select(Event.payload_hash, Event.answer).where(
    Event.account_id == bindparam("b_account"), Event.event_id == bindparam("b_event")
)

EVENT_OUTCOME = (
    update(Event)
    .where(Event.id == bindparam("b_id"))
    .values(answer=bindparam("b_answer"), decisions=bindparam("b_decisions"))
)

_ATTEMPT_COLUMNS: dict[str, Any] = {
    "id": String(),
    "step_id": String(),
    "number": Integer(),
    "status": String(),
    "started_at": UTCDateTime(),
    "duration_ms": Integer(),
    "http_status": Integer(),
    "error_code": String(),
    "error": Text(),
    "external_id": String(),
    "response_excerpt": Text(),
    "delivery_status": String(),
    "delivery_updated_at": UTCDateTime(),
    "endpoint_id": String(),
    "action": String(),
}


def _recorded(run: Any, *, start_next: bool = False, skip_rest: bool = False) -> Any:
    """PostgreSQL: move the run (fenced by the lease), log the attempt, close the step, and
    start the next one or skip the rest, in one statement and so one transaction. Each part
    only happens when the one before it did: no lease, no rows. Each row is found by its own
    key (``id = $1``), which the planner serves from the index even while the table is small;
    ``id IN ($1, $2)`` got generic plans that scan the whole table."""
    moved = run.returning(Run.id).cte("moved")
    logged = (
        insert(Attempt)
        .from_select(
            list(_ATTEMPT_COLUMNS),
            select(
                *(bindparam(f"a_{c}", type_=t) for c, t in _ATTEMPT_COLUMNS.items())
            ).select_from(moved),
        )
        .returning(Attempt.step_id)
        .cte("logged")
    )
    ctes = [moved, logged]
    attempted = exists().select_from(logged)
    if skip_rest:
        ctes.append(SKIP_REST.where(attempted).returning(RunStep.id).cte("skipped"))
    close = CLOSE_STEP.where(attempted)
    if not start_next:
        return close.add_cte(*ctes)
    closed = close.returning(RunStep.id).cte("closed")
    return START_NEXT.where(exists().select_from(closed)).add_cte(*ctes, closed)


# By (a next step starts, the rest is skipped). One row changed by the statement itself, or
# the lease was lost.
RECORD = {
    (True, False): _recorded(RENEW_LEASE, start_next=True),
    (False, False): _recorded(MOVE_RUN),
    (False, True): _recorded(MOVE_RUN, skip_rest=True),
}
