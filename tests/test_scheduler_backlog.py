"""The scheduler hands out no more than the broker's queue has room for: runs handed out behind
a long backlog were sent again as lost once they had waited ``requeue_after_seconds``, and a
burst of reminders then went out several times over (bench/burst.py)."""

from __future__ import annotations

from pathlib import Path

from dramatiq.brokers.stub import StubBroker
from linktime.actions import ActionType, Result
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.scheduler import BACKLOG_BATCHES, Scheduler
from linktime.storage import Run
from linktime.worker import QUEUE, bind
from sqlalchemy import func, select, update

from .conftest import NoSettings, fast_settings, registry_with

BATCH = 10


def test_a_tick_hands_out_only_what_the_broker_queue_has_room_for(tmp_path: Path) -> None:
    from linktime import workflows
    from linktime.accounts import create_account

    registry = registry_with(ActionType("test.ok", "Ok", NoSettings, lambda ctx: Result.ok()))
    hub = Hub(fast_settings(data_dir=tmp_path, scheduler_batch=BATCH), registry=registry)
    try:
        hub.migrate()
        broker = StubBroker()
        bind(hub, broker)  # no worker: every message stays in the queue
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
        total = BACKLOG_BATCHES * BATCH + 5
        for n in range(total):  # each sent once, right after commit
            hub.emit(
                sample_event(id=f"ev_{n}", booking={**booking, "uid": f"bk_{n}"}),
                account_id=acc.id,
            )
        queue = broker.queues[QUEUE]
        assert queue.qsize() == total
        # Their messages wait behind one another past the re-send time: all due again.
        with hub.db.begin() as conn:
            conn.execute(update(Run).values(due_at=hub.clock()))
        scheduler = Scheduler(hub)

        assert scheduler.tick() == 0  # the queue holds more than the backlog allowed
        assert queue.qsize() == total
        with hub.db.connect() as conn:
            due = conn.execute(
                select(func.count()).select_from(Run).where(Run.due_at <= hub.clock())
            ).scalar_one()
        assert due == total  # still due, in the database: handed out once there is room

        while queue.qsize() > BACKLOG_BATCHES * BATCH - 7:  # workers take messages
            queue.get_nowait()
        assert scheduler.tick() == 7  # topped up to the backlog allowed
        queue.queue.clear()
        assert scheduler.tick() == BATCH  # a batch at most, as before
    finally:
        hub.close()
