"""The scheduler hands out no more than the broker's queue has room for: runs handed out behind
a long backlog were sent again as lost once they had waited ``requeue_after_seconds``, and a
burst of reminders then went out several times over (bench/burst.py)."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from dramatiq.brokers.stub import StubBroker
from linktime.actions import ActionType, Result
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.scheduler import BACKLOG_BATCHES, BACKLOG_SHARE, Scheduler
from linktime.storage import Run
from linktime.worker import QUEUE, bind
from sqlalchemy import func, select, update

from .conftest import NoSettings, fast_settings, registry_with

BATCH = 10
TOTAL = BACKLOG_BATCHES * BATCH + 5


def backlog(tmp_path: Path) -> tuple[Hub, queue.Queue[Any]]:
    """A hub bound to a broker no worker reads, ``BACKLOG_BATCHES`` batches and 5 runs queued
    there, each of them due again (as if its message had waited past the re-send time)."""
    from linktime import workflows
    from linktime.accounts import create_account

    registry = registry_with(ActionType("test.ok", "Ok", NoSettings, lambda ctx: Result.ok()))
    hub = Hub(fast_settings(data_dir=tmp_path, scheduler_batch=BATCH), registry=registry)
    hub.migrate()
    broker = StubBroker()
    bind(hub, broker)
    acc = create_account(hub, "backlog", "business")
    workflows.create(
        hub,
        acc.id,
        workflows.WorkflowIn(
            name="now",
            trigger="booking.created",
            enabled=True,
            steps=[workflows.StepIn(action="test.ok")],
        ),
    )
    booking = sample_event().booking.model_dump()
    for n in range(TOTAL):  # each sent once, right after commit
        hub.emit(
            sample_event(id=f"ev_{n}", booking={**booking, "uid": f"bk_{n}"}),
            account_id=acc.id,
        )
    with hub.db.begin() as conn:
        conn.execute(update(Run).values(due_at=hub.clock()))
    messages: queue.Queue[Any] = broker.queues[QUEUE]
    assert messages.qsize() == TOTAL
    return hub, messages


def test_a_tick_hands_out_only_what_the_broker_queue_has_room_for(tmp_path: Path) -> None:
    hub, messages = backlog(tmp_path)
    try:
        scheduler = Scheduler(hub, clock=lambda: 0.0)  # no time passes: no pace measured

        assert scheduler.tick() == 0  # the queue holds more than the backlog allowed
        assert messages.qsize() == TOTAL
        with hub.db.connect() as conn:
            due = conn.execute(
                select(func.count()).select_from(Run).where(Run.due_at <= hub.clock())
            ).scalar_one()
        assert due == TOTAL  # still due, in the database: handed out once there is room

        while messages.qsize() > BACKLOG_BATCHES * BATCH - 7:  # workers take messages
            messages.get_nowait()
        assert scheduler.tick() == 7  # topped up to the backlog allowed
        messages.queue.clear()
        assert scheduler.tick() == BATCH  # a batch at most, as before
    finally:
        hub.close()


def test_the_queue_holds_at_most_half_the_resend_delay_of_the_workers_pace(
    tmp_path: Path,
) -> None:
    hub, messages = backlog(tmp_path)
    try:
        now = [0.0]
        scheduler = Scheduler(hub, clock=lambda: now[0])
        assert hub.settings.requeue_after_seconds == 1.5
        assert scheduler.tick() == 0
        for _ in range(4):  # slow workers: 4 messages in a second
            messages.get_nowait()
        now[0] += 1
        # 21 queued is over 5 s of their work; a message handed out now would be re-sent
        assert scheduler.tick() == 0
        assert scheduler.drain_rate == 4
        while messages.qsize() > 1:  # faster: 20 in the next second (pace now 12/s)
            messages.get_nowait()
        now[0] += 1
        # room for 12/s x 1.5 s x BACKLOG_SHARE = 9 queued: 8 more
        assert scheduler.tick() == int(12 * 1.5 * BACKLOG_SHARE) - 1
    finally:
        hub.close()
