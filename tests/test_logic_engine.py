"""The logic steps on both databases, driven by hand on an injected clock: a delay parks the
run as a row with a due time, a filter stops it succeeded, a step's `when` skips it, a
fallback takes over a step that failed for good."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from linktime import statements as sql
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionType
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.storage import Run
from linktime.workflows import WorkflowIn, create
from sqlalchemy import update

from .conftest import Clock, fast_settings, registry_with
from .test_engine_paths import Script, scripted

START = datetime(2026, 12, 10, 15, 0, tzinfo=UTC)


def hub_with(
    request: pytest.FixtureRequest, tmp_path: Path, *actions: ActionType
) -> Iterator[tuple[Hub, Clock]]:
    """A hub on the database ``request.param`` names, with the scripted action and
    ``actions``, on a clock the test moves."""
    registry = registry_with(ActionType("test.scripted", "Scripted", Script, scripted), *actions)
    clock = Clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    made = Hub(fast_settings(data_dir=tmp_path, database_url=url), registry=registry, clock=clock)
    made.migrate()
    yield made, clock
    made.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Hub, Clock]]:
    yield from hub_with(request, tmp_path)


def ok(**extra: Any) -> dict[str, Any]:
    return {"action": "test.scripted", "settings": {"outcomes": ["ok"]}, **extra}


def booking(event_type: str, n: int, **changes: Any) -> Any:
    b = {
        "uid": "bk_1",
        "start": START,
        "end": START + timedelta(minutes=30),
        "invitee": {"name": "Grace", "email": "grace@example.com"},
        **changes,
    }
    if event_type == "payment.received":
        b["payment"] = {"amount": "50", "currency": "USD"}
    return sample_event(
        event_type,
        id=f"ev_{n}",
        occurred_at=datetime(2026, 12, 1, 9, n, tzinfo=UTC),
        booking=b,
    )


def drive(hub: Hub, clock: Clock, run_id: str | None = None, **advance: float) -> None:
    if run_id:
        hub.process_run(run_id)
    if advance:
        clock.advance(**advance)
    for due in hub.due_runs():
        hub.process_run(due)


def start(hub: Hub, steps: list[dict[str, Any]], **kw: Any) -> tuple[NewAccount, str]:
    account = create_account(hub, "test", "business")
    create(
        hub,
        account.id,
        WorkflowIn(name="w", trigger="booking.created", enabled=True, steps=steps, **kw),
    )
    [run_id] = hub.emit(booking("booking.created", 0), account_id=account.id).run_ids
    return account, run_id


def run_of(hub: Hub, account: NewAccount, run_id: str) -> Run:
    return get_run(hub, account.id, run_id)


def test_a_delay_parks_the_run_until_its_time(hub: tuple[Hub, Clock]) -> None:
    h, clock = hub
    delay = {"action": "logic.delay", "settings": {"amount": 3, "unit": "days"}}
    account, run_id = start(h, [ok(), delay, ok()])
    drive(h, clock, run_id)
    run = run_of(h, account, run_id)
    assert run.status == "waiting"
    assert [s.status for s in run.steps] == ["succeeded", "waiting", "pending"]
    assert run.due_at == clock.now + timedelta(days=3)
    drive(h, clock, days=2, hours=23)
    assert run_of(h, account, run_id).status == "waiting"
    drive(h, clock, hours=1)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded"
    assert [s.status for s in run.steps] == ["succeeded", "succeeded", "succeeded"]


def test_a_filter_stops_the_run_when_a_payment_arrived_during_the_delay(
    hub: tuple[Hub, Clock],
) -> None:
    h, clock = hub
    steps = [
        {"action": "logic.delay", "settings": {"amount": 24, "unit": "hours"}},
        {
            "action": "logic.filter",
            "settings": {"conditions": [{"field": "booking.paid", "op": "eq", "value": False}]},
        },
        ok(),
    ]
    account, run_id = start(h, steps)
    drive(h, clock, run_id)
    h.emit(booking("payment.received", 5), account_id=account.id)
    drive(h, clock, hours=24)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded"
    assert [s.status for s in run.steps] == ["succeeded", "stopped", "skipped"]
    assert "booking.paid" in (run.steps[1].error or "")
    assert run.note and "stopped at step 2" in run.note


def test_cancel_during_a_delay_ends_the_run_cancelled(hub: tuple[Hub, Clock]) -> None:
    h, clock = hub
    delay = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
    account, run_id = start(h, [delay, ok()])
    drive(h, clock, run_id)
    h.emit(booking("booking.cancelled", 5), account_id=account.id)
    drive(h, clock, hours=2)
    run = run_of(h, account, run_id)
    assert run.status == "cancelled"
    assert [s.status for s in run.steps] == ["skipped", "skipped"]


def test_an_anchored_delay_follows_a_reschedule(hub: tuple[Hub, Clock]) -> None:
    h, clock = hub
    delay = {"action": "logic.delay", "settings": {"until": "start", "offset_minutes": -60}}
    account, run_id = start(h, [delay, ok()])
    drive(h, clock, run_id)
    assert run_of(h, account, run_id).due_at == START - timedelta(hours=1)
    later = START + timedelta(days=1)
    moved = booking("booking.rescheduled", 5, start=later, end=later + timedelta(minutes=30))
    # The reschedule wakes the parked run: it works out its new end and parks again.
    assert run_id in h.emit(moved, account_id=account.id).run_ids
    drive(h, clock, run_id)
    run = run_of(h, account, run_id)
    assert run.status == "waiting" and run.due_at == later - timedelta(hours=1)
    clock.now = START  # the old time passes: nothing
    drive(h, clock)
    assert run_of(h, account, run_id).status == "waiting"
    clock.now = later - timedelta(hours=1)
    drive(h, clock)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded"
    assert len(run.steps[1].attempt_log) == 1


def test_when_skips_a_step_and_the_run_goes_on(hub: tuple[Hub, Clock]) -> None:
    h, clock = hub
    never = [{"field": "invitee.email", "op": "eq", "value": "nobody@example.com"}]
    account, run_id = start(h, [ok(when=never), ok()])
    drive(h, clock, run_id)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded"
    assert [s.status for s in run.steps] == ["skipped", "succeeded"]
    assert "invitee.email" in (run.steps[0].error or "")


def test_a_fallback_takes_over_a_step_that_failed_for_good(hub: tuple[Hub, Clock]) -> None:
    h, clock = hub
    failing = {
        "action": "test.scripted",
        "settings": {"outcomes": ["fail"]},
        "fallback": {"action": "test.scripted", "settings": {"outcomes": ["ok"]}},
    }
    account, run_id = start(h, [failing, ok()])
    drive(h, clock, run_id)
    drive(h, clock, seconds=1)
    run = run_of(h, account, run_id)
    assert run.status == "succeeded"
    assert [(a.number, a.status) for a in run.steps[0].attempt_log] == [
        (1, "failed"),
        (2, "succeeded"),
    ]


def test_workflow_conditions_decide_whether_it_runs(hub: tuple[Hub, Clock]) -> None:
    h, _ = hub
    account = create_account(h, "test", "business")
    conditions = [{"field": "event_type.slug", "op": "eq", "value": "demo"}]
    create(
        h,
        account.id,
        WorkflowIn(
            name="w", trigger="booking.created", enabled=True, steps=[ok()], conditions=conditions
        ),
    )
    assert h.emit(booking("booking.created", 0), account_id=account.id).run_ids == []


def test_a_run_taken_up_after_its_booking_was_cancelled_ends_cancelled(
    hub: tuple[Hub, Clock],
) -> None:
    """The cancellation missed it (a worker had just claimed it, then died): the booking is
    read again when the run is taken up, and nothing more is sent."""
    h, clock = hub
    delay = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
    account, run_id = start(h, [delay, ok()])
    drive(h, clock, run_id)
    with h.db.begin() as conn:  # claimed by a worker whose lease has run out
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", lease_token="lease_gone", lease_until=sql.DB_NOW)
        )
    h.emit(booking("booking.cancelled", 5), account_id=account.id)
    assert run_of(h, account, run_id).status == "running"  # cancel() leaves claimed runs alone
    drive(h, clock, hours=2)
    run = run_of(h, account, run_id)
    assert run.status == "cancelled" and run.note == "the booking was cancelled during a delay"
    assert [s.status for s in run.steps] == ["skipped", "skipped"]
    assert run.steps[1].attempt_log == []
