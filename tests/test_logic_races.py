"""The logic steps where they meet lost workers, cancellations and reschedules (found by the
issue-14 review), on both databases, driven by hand on an injected clock: a cancelled booking
sends nothing after a delay however the run stands; waits never use up a step's retries; a
plugin's wait is taken up at its moment (only a delay anchored to the meeting follows a
reschedule); a no-show mark outlives later events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from linktime import statements as sql
from linktime.accounts import create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.engine import Hub
from linktime.runs import RunOut
from linktime.storage import BookingState, Run
from linktime.workflows import WorkflowIn, create
from pydantic import BaseModel
from sqlalchemy import select, update

from .conftest import Clock
from .test_logic_engine import START, booking, drive, hub_with, ok, run_of, start

SENT: list[str] = []


class Note(BaseModel):
    tag: str = "x"


def waits_then_sends(ctx: ActionContext) -> Result:
    """A third-party action written as Result.wait_until's docstring says: wait a day, and
    when execute is called again with waited_until set, go on (send)."""
    if ctx.waited_until is None:
        return Result.wait_until(ctx.services.now() + timedelta(days=1), "a day")
    SENT.append(f"{ctx.run_id}@{ctx.services.now().isoformat()}")
    return Result.ok()


MOMENT: dict[str, Any] = {}


def waits_until_moment(ctx: ActionContext) -> Result:
    if ctx.waited_until is None:
        return Result.wait_until(MOMENT["m"], "odd moment")
    return Result.ok()


@pytest.fixture(params=["sqlite", "postgresql"])
def xhub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Hub, Clock]]:
    yield from hub_with(
        request,
        tmp_path,
        ActionType("test.waits", "Waits", Note, waits_then_sends),
        ActionType("test.moment", "Moment", Note, waits_until_moment),
    )


def die_mid_attempt(h: Hub, run_id: str) -> None:
    """A worker claims the run and starts its step, then is killed (nothing recorded);
    its lease then runs out."""
    with h.db.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn.begin():
            claim = h._claim(conn, run_id)
            assert claim is not None
            h._start(conn, claim)
    with h.db.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(lease_until=sql.DB_NOW))


def test_a_cancel_while_the_worker_taking_up_a_delay_is_lost_sends_nothing(
    xhub: tuple[Hub, Clock],
) -> None:
    """delay 1h -> send. At the delay's end a worker takes the run and dies; the booking is
    cancelled while its lease runs out; the next worker must not send."""
    h, clock = xhub
    delay = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
    account, run_id = start(h, [delay, ok()])
    drive(h, clock, run_id)
    assert run_of(h, account, run_id).status == "waiting"
    clock.advance(hours=1, minutes=1)
    assert run_id in h.due_runs()
    die_mid_attempt(h, run_id)
    h.emit(booking("booking.cancelled", 5), account_id=account.id)
    for _ in range(5):  # the lease runs out by the database's clock; the hub's moves past it
        drive(h, clock, days=1)
    run = run_of(h, account, run_id)
    assert run.steps[1].attempt_log == [], "sent after the delay for a cancelled booking"
    assert run.status == "cancelled"


def test_a_cancel_while_a_step_after_a_delay_waits_for_a_retry_sends_nothing(
    xhub: tuple[Hub, Clock],
) -> None:
    h, clock = xhub
    delay = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
    flaky = {"action": "test.scripted", "settings": {"outcomes": ["retry", "ok"]}}
    account, run_id = start(h, [delay, flaky])
    drive(h, clock, run_id)
    drive(h, clock, hours=1, minutes=1)  # delay over, step 2 answered 503: waits 0.2 s
    run = run_of(h, account, run_id)
    assert run.status == "waiting" and run.steps[1].status == "pending"
    h.emit(booking("booking.cancelled", 5), account_id=account.id)
    drive(h, clock, seconds=2)
    run = run_of(h, account, run_id)
    assert run.status == "cancelled", "a retry after the delay sent for a cancelled booking"


@pytest.mark.parametrize("moves", [0, 3])
def test_reschedules_do_not_use_up_a_delays_retries(xhub: tuple[Hub, Clock], moves: int) -> None:
    """An anchored delay woken by 3 reschedules; when it finally fires its worker is lost
    once: the run fails instead of retrying, the step after it never sends."""
    h, clock = xhub
    delay = {"action": "logic.delay", "settings": {"until": "start", "offset_minutes": -60}}
    account, run_id = start(h, [delay, ok()])
    drive(h, clock, run_id)
    t = START
    for n in range(moves):
        t = t + timedelta(hours=1)
        moved = booking("booking.rescheduled", 10 + n, start=t, end=t + timedelta(minutes=30))
        h.emit(moved, account_id=account.id)
        drive(h, clock, run_id)
    run = run_of(h, account, run_id)
    assert run.status == "waiting" and run.due_at == t - timedelta(hours=1)
    clock.now = t - timedelta(hours=1)
    assert run_id in h.due_runs()
    die_mid_attempt(h, run_id)
    for _ in range(5):
        drive(h, clock, seconds=2)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded", "one lost worker failed the run: waits used the retries"


def test_a_plugins_wait_is_not_taken_up_early_by_a_reschedule(xhub: tuple[Hub, Clock]) -> None:
    """Result.wait_until's docstring: 'the scheduler hands it back then ... called again with
    ctx.waited_until set'. A reschedule hands it back at once: it sends a day early."""
    h, clock = xhub
    SENT.clear()
    account, run_id = start(h, [{"action": "test.waits", "settings": {}}])
    drive(h, clock, run_id)
    assert run_of(h, account, run_id).status == "waiting"
    later = START + timedelta(hours=2)
    h.emit(
        booking("booking.rescheduled", 5, start=later, end=later + timedelta(minutes=30)),
        account_id=account.id,
    )
    drive(h, clock, run_id)
    assert SENT == [], "sent before its wait_until (woken by a reschedule)"
    assert run_of(h, account, run_id).status == "waiting"
    drive(h, clock, days=1)  # its moment: taken up, once
    assert [f"{run_id}@{clock.now.isoformat()}"] == SENT


@pytest.mark.parametrize(
    "moment",
    [
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 12, 1, 9, 0, tzinfo=UTC) + timedelta(days=400),
    ],
)
def test_a_plugins_wait_far_ahead_parks_and_is_cancelled_with_its_booking(
    xhub: tuple[Hub, Clock], moment: datetime
) -> None:
    h, clock = xhub
    MOMENT["m"] = moment
    account, run_id = start(h, [{"action": "test.moment", "settings": {}}, ok()])
    drive(h, clock, run_id)
    run = run_of(h, account, run_id)
    RunOut.of(run)
    h.emit(booking("booking.cancelled", 5), account_id=account.id)
    assert run_of(h, account, run_id).status == "cancelled"


def test_a_cancellation_workflow_keeps_its_own_delay(xhub: tuple[Hub, Clock]) -> None:
    h, clock = xhub
    account = create_account(h, "test", "business")
    delay = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
    spec = WorkflowIn(name="w", trigger="booking.cancelled", enabled=True, steps=[delay, ok()])
    create(h, account.id, spec)
    h.emit(booking("booking.created", 0), account_id=account.id)
    [run_id] = h.emit(booking("booking.cancelled", 1), account_id=account.id).run_ids
    drive(h, clock, run_id)
    again = booking("booking.cancelled", 2).model_copy(update={"id": "ev_again"})
    h.emit(again, account_id=account.id)
    clock.advance(minutes=30)
    drive(h, clock, hours=1)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded"


def test_a_later_payment_keeps_the_no_show_mark(xhub: tuple[Hub, Clock]) -> None:
    h, _ = xhub
    account = create_account(h, "test", "business")
    h.emit(booking("booking.created", 0), account_id=account.id)
    h.emit(booking("booking.no_show", 40), account_id=account.id)
    h.emit(booking("payment.received", 50), account_id=account.id)
    with h.db.connect() as conn:
        flag = conn.execute(select(BookingState.no_show)).scalar()
    assert flag is True, "a payment.received after booking.no_show reset no_show to false"
