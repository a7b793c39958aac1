"""Leases: a worker renews its lease while a step runs (a slow step is not taken over and sent
twice), a worker that dies or stalls whole loses it, and lease times are the database's, so a
worker whose clock is off can neither steal a live lease nor keep one past its time. Whatever a
worker that lost its lease does afterwards is refused by the database (on PostgreSQL each write
is its own transaction, so every one of them must check the lease). Each worker here is a Hub of
its own over the same database, as separate processes would be; the lease tests run on
PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from linktime import plugins, workflows
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.testing import HttpReceiver, Reply

from .conftest import NoSettings, System, fast_settings, registry_with

# Short, so that the tests wait for real leases to run out; the heartbeat renews every third.
LEASE = 2.0
HOUR = timedelta(hours=1)
SKEWS = pytest.mark.parametrize(
    "skew", [timedelta(0), HOUR, -HOUR], ids=["clock-right", "clock-1h-ahead", "clock-1h-behind"]
)


def skewed(offset: timedelta) -> Callable[[], datetime]:
    """A worker's clock that is ``offset`` off."""
    return lambda: datetime.now(UTC) + offset


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10 * LEASE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


class Stalling:
    """A test action whose first call blocks until released; every call is counted."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[int, int]] = Counter()
        self.stalled = threading.Event()
        self.go_on = threading.Event()

    def execute(self, ctx: ActionContext) -> Result:
        self.calls[ctx.position, ctx.attempt] += 1
        if not self.stalled.is_set():
            self.stalled.set()
            self.go_on.wait(30)
        return Result.ok(external_id=f"{ctx.position}/{ctx.attempt}")

    def workers(
        self, make_worker: Callable[..., Hub], *clocks: timedelta, timeout: float = 30.0
    ) -> list[Hub]:
        slow = ActionType("test.slow", "Slow", NoSettings, self.execute, timeout=timeout)
        registry = registry_with(slow)
        return [make_worker(registry, c) for c in clocks]


@pytest.fixture(params=["postgresql", "sqlite"])
def make_worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    """Workers (hubs, no broker) over one database, each with its clock ``skew`` off."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    hubs: list[Hub] = []

    def make(registry: plugins.Registry, skew: timedelta) -> Hub:
        settings = fast_settings(data_dir=tmp_path, database_url=url, step_lease_seconds=LEASE)
        hub = Hub(settings, registry=registry, clock=skewed(skew))
        hub.migrate()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


def run_of(hub: Hub, steps: int) -> tuple[NewAccount, str]:
    """An account whose workflow has ``steps`` test.slow steps, and the run an event starts."""
    account = create_account(hub, "test", "business")
    spec = {"name": "slow", "trigger": "booking.created", "enabled": True}
    steps_in = [{"action": "test.slow"}] * steps
    workflows.create(
        hub, account.id, workflows.WorkflowIn.model_validate({**spec, "steps": steps_in})
    )
    return account, hub.emit(sample_event(), account_id=account.id).run_ids[0]


def start(hub: Hub, run_id: str) -> tuple[threading.Thread, list[BaseException]]:
    """``process_run`` in a thread of its own, as a worker thread runs it."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            hub.process_run(run_id)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)  # a hung one must not hold pytest
    thread.start()
    return thread, errors


def test_a_step_longer_than_the_lease_is_sent_once(
    make_system: Callable[..., System], http_receiver: HttpReceiver
) -> None:
    http_receiver.default = Reply(delay=3 * LEASE)
    sent: list[float] = []

    def post(ctx: ActionContext) -> Result:
        sent.append(time.monotonic())
        answer = httpx.post(f"{http_receiver.url}/hook", json={"step": ctx.step_id}, timeout=30)
        return Result.ok(http_status=answer.status_code)

    registry = registry_with(ActionType("test.post", "Post", NoSettings, post))
    first, second = (make_system(registry=registry, step_lease_seconds=LEASE) for _ in "12")
    account = first.account()
    first.workflow(account, [{"action": "test.post"}])
    run_id = first.hub.emit(sample_event(), account_id=account.id).run_ids[0]

    worker, errors = start(first.hub, run_id)
    handed_out: list[str] = []
    late_tries = 0
    # The second worker, and its scheduler, try to take the run all along the slow step.
    while worker.is_alive():
        handed_out += second.hub.due_runs()
        second.hub.process_run(run_id)
        late_tries += bool(sent) and time.monotonic() > sent[0] + 1.5 * LEASE
        time.sleep(0.05)
    assert errors == []
    assert late_tries > 0  # it went on trying after the first lease would have run out

    assert len(http_receiver.requests) == 1
    assert run_id not in handed_out  # a live run is never re-sent
    run = get_run(first.hub, account.id, run_id)
    assert run.status == "succeeded"
    assert [(a.number, a.status) for a in run.steps[0].attempt_log] == [(1, "succeeded")]


@SKEWS
def test_a_worker_that_dies_has_its_run_recovered_and_records_nothing(
    make_worker: Callable[..., Hub], caplog: pytest.LogCaptureFixture, skew: timedelta
) -> None:
    action = Stalling()
    dying, other = action.workers(make_worker, skew, timedelta(0))
    account, run_id = run_of(dying, 2)
    first, errors = start(dying, run_id)
    assert action.stalled.wait(10)
    dying.heartbeat.stop()  # the process is gone: nothing renews its lease any more

    caplog.set_level(logging.INFO, logger="linktime.engine")
    # Once the lease has run out, whatever the dead worker's clock said, the other worker's
    # scheduler re-sends the run and the other worker finds the step it left running.
    wait_until(lambda: run_id in other.due_runs(), "the lost run is re-sent")
    other.process_run(run_id)
    after_takeover = get_run(other, account.id, run_id)
    assert after_takeover.status == "waiting"
    lost_step = after_takeover.steps[0]
    assert [a.error_code for a in lost_step.attempt_log] == ["worker_lost"]
    ids = f"run {run_id} step {lost_step.id} account {account.id}"
    assert f"{ids}: re-enqueued by the sweeper (its worker's lease expired)" in caplog.text
    assert f"{ids}: worker_lost" in caplog.text
    assert f"{ids}: attempt 1 ended worker_lost (http -); retry 2 at " in caplog.text

    # The retry comes due and the other worker finishes the run.
    wait_until(lambda: run_id in other.due_runs(), "the retry comes due")
    other.process_run(run_id)
    # Only now does the dead worker's delivery return: too late to count.
    caplog.clear()
    action.go_on.set()
    first.join(10)
    assert not first.is_alive()
    assert errors == []
    assert f"run {run_id}: lease lost" in caplog.text

    run = get_run(other, account.id, run_id)
    assert run.status == "succeeded"
    assert [(a.number, a.status) for a in run.steps[0].attempt_log] == [
        (1, "retrying"),
        (2, "succeeded"),
    ]
    assert run.steps[0].external_id == "0/2"  # the other worker's result, not the first's
    assert [(a.number, a.status) for a in run.steps[1].attempt_log] == [(1, "succeeded")]
    # The dead worker did not go on to the second step.
    assert action.calls == {(0, 1): 1, (0, 2): 1, (1, 1): 1}


def test_a_sync_step_hung_past_its_timeout_is_taken_over(make_worker: Callable[..., Hub]) -> None:
    action = Stalling()
    hung, other = action.workers(make_worker, timedelta(0), timedelta(0), timeout=0.2)
    account, run_id = run_of(hung, 1)
    first, errors = start(hung, run_id)
    assert action.stalled.wait(10)
    # The hung worker's process lives on and its heartbeat beats, but no longer for this
    # attempt: once the lease runs out the other worker takes the run over.
    wait_until(lambda: run_id in other.due_runs(), "the hung attempt's run is re-sent")
    other.process_run(run_id)
    wait_until(lambda: run_id in other.due_runs(), "the retry comes due")
    other.process_run(run_id)
    action.go_on.set()
    first.join(10)
    assert errors == []

    run = get_run(other, account.id, run_id)
    assert run.status == "succeeded"
    assert [(a.number, a.status, a.error_code) for a in run.steps[0].attempt_log] == [
        (1, "retrying", "worker_lost"),
        (2, "succeeded", None),
    ]
    assert run.steps[0].external_id == "0/2"


@pytest.mark.parametrize(
    ("holder", "thief"),
    [(timedelta(0), HOUR), (timedelta(0), -HOUR), (HOUR, timedelta(0)), (-HOUR, timedelta(0))],
    ids=["thief-1h-ahead", "thief-1h-behind", "holder-1h-ahead", "holder-1h-behind"],
)
def test_a_worker_with_a_skewed_clock_cannot_steal_a_live_lease(
    make_worker: Callable[..., Hub], holder: timedelta, thief: timedelta
) -> None:
    action = Stalling()
    owner, other = action.workers(make_worker, holder, thief)
    account, run_id = run_of(owner, 1)
    worker, errors = start(owner, run_id)
    assert action.stalled.wait(10)
    claimed = get_run(owner, account.id, run_id)
    assert claimed.lease_until is not None

    handed_out: list[str] = []
    # The other worker and its scheduler try until three tries came after the first lease's
    # end (the claim was made before now), which the owner's heartbeat has pushed on by then.
    first_lease_over = time.monotonic() + LEASE
    late_tries = 0
    while late_tries < 3:
        late = time.monotonic() > first_lease_over
        handed_out += other.due_runs()
        other.process_run(run_id)
        late_tries += late
        time.sleep(0.05)
    held = get_run(owner, account.id, run_id)
    assert (held.status, held.lease_token) == ("running", claimed.lease_token)
    assert held.lease_until is not None and held.lease_until > claimed.lease_until
    assert run_id not in handed_out

    action.go_on.set()
    worker.join(10)
    assert errors == []
    run = get_run(owner, account.id, run_id)
    assert run.status == "succeeded"
    assert [(a.number, a.status) for a in run.steps[0].attempt_log] == [(1, "succeeded")]
    assert action.calls == {(0, 1): 1}


def test_an_async_action_that_never_answers_ends_with_a_timeout(
    make_system: Callable[..., System],
) -> None:
    cancelled = threading.Event()

    async def hang(ctx: ActionContext) -> Result:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        raise AssertionError("never reached")

    registry = registry_with(ActionType("test.hang", "Hang", NoSettings, hang, timeout=0.5))
    system = make_system(registry=registry)
    account = system.account()
    system.workflow(account, [{"action": "test.hang"}])
    run_id = system.hub.emit(sample_event(), account_id=account.id).run_ids[0]

    worker, errors = start(system.hub, run_id)
    worker.join(30)
    assert not worker.is_alive(), "the attempt was not stopped"
    assert errors == []
    assert cancelled.is_set()  # the coroutine was cancelled, not left running
    run = get_run(system.hub, account.id, run_id)
    assert run.status == "waiting"  # a timeout is retried
    [attempt] = run.steps[0].attempt_log
    assert (attempt.status, attempt.error_code) == ("retrying", "timeout")
    assert "timeout of 0.5 s" in (attempt.error or "")
    assert attempt.duration_ms >= 500
