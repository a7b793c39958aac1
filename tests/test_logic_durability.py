"""Delays end to end on PostgreSQL, Redis and a real webhook receiver: a 3-day delay outlives a
worker kill, a Redis flush and a restart of every process, then fires on time, once; a
cancellation during a delay sends nothing more; a reschedule moves a meeting-anchored delay; a
filter after a delay sees a payment that arrived meanwhile; a parked run costs the scheduler
nothing until its time."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from linktime.api import create_app
from linktime.models import BookingEvent
from linktime.runs import get_run
from linktime.testing import HttpReceiver, Received
from litestar.testing import TestClient
from sqlalchemy import create_engine, text

from .conftest import Clock, CountingScheduler, System, delete_namespace
from .procs import (
    LINKTIME,
    free_port,
    kill9,
    serve_with_account,
    services_env,
    start,
    stop,
    wait_http,
)
from .test_metrics import parse, value
from .test_reminders import T0, event

SECRET_KEY = "test-secret-key"  # conftest.fast_settings': the processes and the test hub share it
DELAY_3_DAYS = {"action": "logic.delay", "settings": {"amount": 3, "unit": "days"}}
UNPAID = {
    "action": "logic.filter",
    "settings": {"conditions": [{"field": "booking.paid", "op": "eq", "value": False}]},
}
TICKS = "linktime_scheduler_tick_duration_seconds_count"


def hook(receiver: HttpReceiver, path: str) -> dict[str, Any]:
    return {"action": "webhook.call", "settings": {"url": receiver.url + path}}


def delivered(system: System, receiver: HttpReceiver) -> list[Received]:
    """What the receiver got once everything due by the test's clock has been executed."""
    system.settle()
    return list(receiver.requests)


def paths(requests: list[Received]) -> list[str]:
    return [r.path for r in requests]


def parked_row(database_url: str, run_id: str) -> dict[str, Any]:
    """The run's row and its steps' rows as the database has them: what a restart must keep."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            run = conn.execute(
                text("SELECT status, due_at, lease_until FROM runs WHERE id = :id"), {"id": run_id}
            ).one()
            steps = conn.execute(
                text(
                    "SELECT position, status, attempts, wait_until FROM run_steps"
                    " WHERE run_id = :id ORDER BY position"
                ),
                {"id": run_id},
            ).all()
    finally:
        engine.dispose()
    return {"run": tuple(run), "steps": [tuple(s) for s in steps]}


def wait_parked(database_url: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (row := parked_row(database_url, run_id))["run"][0] != "waiting":
        assert time.monotonic() < deadline, f"run {run_id} not parked: {row}"
        time.sleep(0.1)
    return row


def scheduler_ticks(port: int) -> float:
    return value(parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text), TICKS)


def post_event(
    client: httpx.Client | TestClient[Any], key: str, booking: BookingEvent
) -> list[str]:
    """POST /v1/events as the account's API key; the ids of the runs it started."""
    r = client.post(
        "/v1/events",
        json=booking.model_dump(mode="json"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code in (200, 201, 202), r.text
    return [str(run["id"]) for run in r.json()["runs"]]


def run_seen(client: TestClient[Any], key: str, run_id: str) -> dict[str, Any]:
    """The run as GET /v1/runs/{id} shows it to the account."""
    r = client.get(f"/v1/runs/{run_id}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_3_day_delay_survives_a_worker_kill_a_redis_flush_and_a_restart_then_fires_on_time(
    tmp_path: Path,
    pg_url: str,
    redis_url: str,
    http_receiver: HttpReceiver,
    make_system: Callable[..., System],
) -> None:
    """Real `serve`, `scheduler` and `worker` processes park the run; the worker is killed
    (SIGKILL), the broker's namespace flushed, every process stopped and new ones started: the
    parked row is untouched and nothing is delivered. The processes read the real clock, so
    the due time is then reached in-process (new hub, broker, worker and scheduler on the same
    database) with an injected clock: nothing a second before, exactly one delivery on the
    first ticks at the due time."""
    namespace = f"lt-durable-{uuid.uuid4().hex[:8]}"
    env = services_env(pg_url, redis_url, namespace, LINKTIME_SECRET_KEY=SECRET_KEY)
    log = tmp_path / "procs.log"
    subprocess.run([LINKTIME, "db", "upgrade"], env=env, cwd=tmp_path, check=True)
    served = serve_with_account(env, tmp_path, "--plan", "business")
    procs = [served.proc]
    try:
        procs += [
            start(["scheduler"], env, tmp_path, log),
            start(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, log),
        ]
        with httpx.Client(base_url=served.base) as api:
            for name, trigger, steps in [
                (
                    "three days later",
                    "booking.created",
                    [DELAY_3_DAYS, hook(http_receiver, "/late")],
                ),
                ("marker", "booking.cancelled", [hook(http_receiver, "/marker")]),
            ]:
                body = {"name": name, "trigger": trigger, "enabled": True, "steps": steps}
                r = api.post(
                    "/v1/workflows", json=body, headers={"Authorization": f"Bearer {served.key}"}
                )
                assert r.status_code == 201, r.text
            [run_id] = post_event(
                api, served.key, event("booking.created", 1, T0 + timedelta(days=5))
            )
        parked = wait_parked(pg_url, run_id)
        [delay_step, hook_step] = parked["steps"]
        assert delay_step[1:3] == ("waiting", 1) and hook_step[1:3] == ("pending", 0)
        due = parked["run"][1]
        assert due == delay_step[3], "the run is due when its delay ends"

        kill9(procs.pop())  # the worker
        delete_namespace(redis_url, namespace)
        with redis.Redis.from_url(redis_url) as flushed:
            assert list(flushed.scan_iter(f"{namespace}:*")) == []
        stop(procs)
        assert parked_row(pg_url, run_id) == parked

        # Every process anew. The scheduler counts its ticks on its own metrics port.
        port = free_port()
        procs = [
            start(["serve", "--port", str(served.port)], env, tmp_path, served.log),
            start(["scheduler"], {**env, "LINKTIME_METRICS_PORT": str(port)}, tmp_path, log),
            start(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, log),
        ]
        wait_http(f"{served.base}/healthz")
        wait_http(f"http://127.0.0.1:{port}/metrics")
        # Positive signals: the new worker delivers another workflow's run, and the new
        # scheduler has ticked with the parked run in its table, without handing it out.
        with httpx.Client(base_url=served.base) as api:
            post_event(api, served.key, event("booking.cancelled", 2, T0, uid="bk_other"))
        assert paths(http_receiver.wait_for(1, timeout=30)) == ["/marker"]
        ticked = scheduler_ticks(port)
        deadline = time.monotonic() + 30
        while scheduler_ticks(port) < ticked + 3:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert parked_row(pg_url, run_id) == parked
        assert paths(http_receiver.requests) == ["/marker"]
    finally:
        stop(procs)
        delete_namespace(redis_url, namespace)

    # The due time, on an injected clock: a new hub, broker, worker and scheduler.
    clock = Clock(due - timedelta(seconds=1))
    system = make_system(clock=clock, broker_namespace=namespace)
    system.start()
    assert paths(delivered(system, http_receiver)) == ["/marker"]
    clock.now = due
    assert paths(delivered(system, http_receiver)) == ["/marker", "/late"]
    clock.advance(days=1)
    late = [r for r in delivered(system, http_receiver) if r.path == "/late"]
    assert len(late) == 1, "delivered more than once"
    assert late[0].json()["data"]["booking"]["uid"] == "bk_1"
    with TestClient(create_app(system.hub)) as client:
        run = run_seen(client, served.key, run_id)
    assert run["status"] == "succeeded"
    delay_log, hook_log = (s["attempt_log"] for s in run["steps"])
    assert [a["status"] for a in delay_log] == ["waiting", "succeeded"]
    # Taken up on the first ticks at its due time: within the scheduler's interval of it.
    assert datetime.fromisoformat(hook_log[0]["started_at"]) == due
    assert [a["status"] for a in hook_log] == ["succeeded"]


@pytest.fixture
def clocked(make_system: Callable[..., System], allow_loopback: None) -> tuple[System, Clock]:
    """A running system (PostgreSQL, Redis, worker, scheduler) on a clock the test moves."""
    clock = Clock(T0)
    system = make_system(clock=clock)
    system.start()
    return system, clock


def test_a_cancellation_during_a_delay_sends_nothing_more(
    clocked: tuple[System, Clock], http_receiver: HttpReceiver
) -> None:
    system, clock = clocked
    acc = system.account()
    delay = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
    system.workflow(acc, [delay, hook(http_receiver, "/after-delay")])
    system.workflow(acc, [hook(http_receiver, "/cancelled")], trigger="booking.cancelled")
    [run_id] = system.hub.emit(
        event("booking.created", 1, T0 + timedelta(days=1)), account_id=acc.id
    ).run_ids
    assert delivered(system, http_receiver) == []
    assert get_run(system.hub, acc.id, run_id).status == "waiting"

    clock.advance(minutes=10)
    cancel = event("booking.cancelled", 2, T0 + timedelta(days=1), at=clock.now)
    system.hub.emit(cancel, account_id=acc.id)
    clock.advance(hours=2)  # well past the delay's end
    # The cancellation's own workflow delivered: the event was taken; the delayed step never.
    assert paths(delivered(system, http_receiver)) == ["/cancelled"]
    run = get_run(system.hub, acc.id, run_id)
    assert (run.status, run.note) == ("cancelled", "the booking was cancelled during a delay")
    assert [s.status for s in run.steps] == ["skipped", "skipped"]
    assert run.steps[1].attempt_log == []


def test_a_reschedule_during_a_meeting_anchored_delay_fires_at_the_new_time_once(
    clocked: tuple[System, Clock], http_receiver: HttpReceiver
) -> None:
    system, clock = clocked
    acc = system.account()
    an_hour_before = {
        "action": "logic.delay",
        "settings": {"until": "start", "offset_minutes": -60},
    }
    system.workflow(acc, [an_hour_before, hook(http_receiver, "/reminder")])
    old_start, new_start = T0 + timedelta(hours=3), T0 + timedelta(hours=5)
    [run_id] = system.hub.emit(event("booking.created", 1, old_start), account_id=acc.id).run_ids
    assert delivered(system, http_receiver) == []
    assert get_run(system.hub, acc.id, run_id).due_at == old_start - timedelta(hours=1)

    clock.advance(minutes=10)
    moved = event("booking.rescheduled", 2, new_start, at=clock.now)
    assert run_id in system.hub.emit(moved, account_id=acc.id).run_ids  # woken
    assert delivered(system, http_receiver) == []
    run = get_run(system.hub, acc.id, run_id)
    assert (run.status, run.due_at) == ("waiting", new_start - timedelta(hours=1))

    clock.now = old_start - timedelta(hours=1)  # the old time: nothing
    assert delivered(system, http_receiver) == []
    clock.now = new_start - timedelta(hours=1, seconds=1)
    assert delivered(system, http_receiver) == []
    clock.now = new_start - timedelta(hours=1)
    assert paths(delivered(system, http_receiver)) == ["/reminder"]
    clock.advance(days=1)
    [sent] = delivered(system, http_receiver)
    assert sent.json()["data"]["booking"]["start"] == "2026-12-01T14:00:00Z"

    run = get_run(system.hub, acc.id, run_id)
    assert run.status == "succeeded"
    # Parked at creation, taken up again at the reschedule and parked anew, then done.
    assert [(a.status, a.started_at) for a in run.steps[0].attempt_log] == [
        ("waiting", T0),
        ("waiting", T0 + timedelta(minutes=10)),
        ("succeeded", new_start - timedelta(hours=1)),
    ]
    assert [a.status for a in run.steps[1].attempt_log] == ["succeeded"]


def test_a_filter_after_a_delay_stops_the_run_of_a_booking_paid_meanwhile(
    clocked: tuple[System, Clock], http_receiver: HttpReceiver
) -> None:
    """Events over HTTP (POST /v1/events with the account's key); two bookings, one paid
    during the delay: only the unpaid one gets the reminder."""
    system, clock = clocked
    acc = system.account()
    day = {"action": "logic.delay", "settings": {"amount": 24, "unit": "hours"}}
    system.workflow(acc, [day, UNPAID, hook(http_receiver, "/unpaid")])
    start = T0 + timedelta(days=3)
    with TestClient(create_app(system.hub)) as client:
        [paid] = post_event(client, acc.api_key, event("booking.created", 1, start, uid="bk_paid"))
        [unpaid] = post_event(client, acc.api_key, event("booking.created", 2, start, uid="bk_due"))
        assert delivered(system, http_receiver) == []
        clock.advance(hours=5)
        payment = event("payment.received", 3, start, uid="bk_paid", at=clock.now)
        assert post_event(client, acc.api_key, payment) == []  # no workflow on payments
        clock.now = T0 + timedelta(hours=24)
        [sent] = delivered(system, http_receiver)
        assert sent.path == "/unpaid" and sent.json()["data"]["booking"]["uid"] == "bk_due"

        stopped = run_seen(client, acc.api_key, paid)
        went_on = run_seen(client, acc.api_key, unpaid)
    assert stopped["status"] == "succeeded"
    assert [s["status"] for s in stopped["steps"]] == ["succeeded", "stopped", "skipped"]
    filter_step = stopped["steps"][1]
    assert (filter_step["error_code"], filter_step["error"]) == (
        "filtered",
        "booking.paid eq false did not hold: it was true",
    )
    assert stopped["steps"][2]["attempt_log"] == []
    assert went_on["status"] == "succeeded"
    assert [s["status"] for s in went_on["steps"]] == ["succeeded"] * 3


def test_a_parked_run_costs_the_scheduler_nothing_until_its_time(
    make_system: Callable[..., System], pg_url: str, http_receiver: HttpReceiver
) -> None:
    clock = Clock(T0)
    system = make_system(clock=clock)
    acc = system.account()
    system.workflow(acc, [DELAY_3_DAYS, hook(http_receiver, "/late")])
    [run_id] = system.hub.emit(
        event("booking.created", 1, T0 + timedelta(days=5)), account_id=acc.id
    ).run_ids
    system.hub.process_run(run_id)  # by hand: no worker here
    parked = parked_row(pg_url, run_id)
    assert parked["run"][0] == "waiting"

    scheduler = CountingScheduler(system.hub)
    clock.now = T0 + timedelta(days=3, seconds=-1)
    assert [scheduler.tick() for _ in range(3)] == [0, 0, 0]
    # Not even pushed ahead: a parked run's row is left alone until it is due.
    assert parked_row(pg_url, run_id) == parked
    clock.now = T0 + timedelta(days=3)
    assert scheduler.tick() == 1
    assert scheduler.tick() == 0
