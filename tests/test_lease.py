"""A worker that stalls past its lease: another worker takes the run over, and whatever the
stalled one does afterwards is refused by the database (on PostgreSQL each write is its own
transaction, so every one of them must check the lease)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from linktime.actions import ActionContext, ActionType, Result
from linktime.models import sample_event
from linktime.runs import get_run

from .conftest import Clock, NoSettings, System, registry_with


def test_a_worker_that_lost_its_lease_records_nothing(
    make_system: Callable[..., System], caplog: pytest.LogCaptureFixture
) -> None:
    calls: Counter[tuple[int, int]] = Counter()
    stalled, go_on = threading.Event(), threading.Event()

    def slow_first_time(ctx: ActionContext) -> Result:
        calls[ctx.position, ctx.attempt] += 1
        if not stalled.is_set():
            stalled.set()
            go_on.wait(10)
        return Result.ok(external_id=f"{ctx.position}/{ctx.attempt}")

    registry = registry_with(ActionType("test.slow", "Slow", NoSettings, slow_first_time))
    clock = Clock(datetime.now(UTC))
    system = make_system(registry=registry, clock=clock)  # no worker: runs are driven by hand
    hub = system.hub
    account = system.account()
    system.workflow(account, [{"action": "test.slow"}, {"action": "test.slow"}])
    run_id = hub.emit(sample_event(), account_id=account.id).run_ids[0]

    errors: list[BaseException] = []

    def first_worker() -> None:
        try:
            hub.process_run(run_id)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=first_worker)
    first.start()
    assert stalled.wait(10)
    # The first worker's lease runs out; a second one finds the step it left running.
    clock.advance(seconds=hub.settings.step_lease_seconds + 1)
    hub.process_run(run_id)
    after_takeover = get_run(hub, account.id, run_id)
    assert after_takeover.status == "waiting"
    assert [a.error_code for a in after_takeover.steps[0].attempt_log] == ["worker_lost"]
    # The retry comes due and the second worker finishes the run.
    clock.advance(seconds=1)
    assert hub.due_runs() == [run_id]
    hub.process_run(run_id)
    # Only now does the first worker's delivery return: too late to count.
    with caplog.at_level(logging.WARNING, logger="linktime.engine"):
        go_on.set()
        first.join(10)
    assert not first.is_alive()
    assert errors == []
    assert f"run {run_id}: lease lost" in caplog.text

    run = get_run(hub, account.id, run_id)
    assert run.status == "succeeded"
    assert [(a.number, a.status) for a in run.steps[0].attempt_log] == [
        (1, "retrying"),
        (2, "succeeded"),
    ]
    assert run.steps[0].external_id == "0/2"  # the second worker's result, not the first's
    assert [(a.number, a.status) for a in run.steps[1].attempt_log] == [(1, "succeeded")]
    # The stalled worker did not go on to the second step.
    assert calls == {(0, 1): 1, (0, 2): 1, (1, 1): 1}
