"""Two schedulers and two workers (each with its own database pool and broker connection) on
PostgreSQL fire 10,000 due reminders, each exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from linktime.actions import ActionContext, ActionType, Result
from linktime.models import sample_event
from linktime.storage import Event, Run, new_id
from sqlalchemy import func, insert, select

from .conftest import NoSettings, System, registry_with

ROWS = 10_000


def test_each_due_row_fires_exactly_once(make_system: Callable[..., System]) -> None:
    fired: Counter[str] = Counter()
    lock = threading.Lock()

    def count(ctx: ActionContext) -> Result:
        with lock:
            fired[ctx.run_id] += 1
        return Result.ok()

    registry = registry_with(ActionType("test.count", "Count", NoSettings, count))
    # One broker namespace (one queue) for both, of this test run only. A queued run is re-sent
    # every 10 s, not every 1.5 s: a few copies of each message while the backlog drains (the
    # fence must hold), not dozens to drain before settle() returns.
    options: dict[str, Any] = {
        "broker_namespace": f"lt-scale-{uuid.uuid4().hex[:8]}",
        "scheduler_batch": 500,
        "requeue_after_seconds": 10,
    }
    first = make_system(registry=registry, **options)
    second = make_system(registry=registry, **options)
    acc = first.account()
    wf_id = first.workflow(acc, [{"action": "test.count"}], trigger="meeting.before")
    now = datetime.now(UTC)
    event = sample_event()
    with first.hub.db.begin() as conn:
        conn.execute(
            insert(Event).values(
                id="ev_scale",
                account_id=acc.id,
                event_id=event.id,
                type=event.type,
                booking_uid=event.booking.uid,
                occurred_at=event.occurred_at,
                received_at=now,
                payload=event.model_dump(mode="json"),
                payload_hash="-",
                answer={},
            )
        )
        conn.execute(
            insert(Run),
            [
                {
                    "id": new_id("run"),
                    "account_id": acc.id,
                    "workflow_id": wf_id,
                    "workflow_name": "reminder",
                    "event_id": "ev_scale",
                    "trigger": "meeting.before",
                    "booking_uid": f"bk_{i}",
                    "status": "scheduled",
                    "due_at": now - timedelta(seconds=i % 60),
                    "created_at": now,
                }
                for i in range(ROWS)
            ],
        )

    first.start()
    second.start()
    deadline = time.monotonic() + 240
    while sum(fired.values()) < ROWS and time.monotonic() < deadline:
        time.sleep(0.5)
    # A duplicate, had there been one, was handed out by now and executed before this returns.
    first.settle()
    second.settle()

    assert len(fired) == ROWS
    assert set(fired.values()) == {1}
    with first.hub.db.connect() as conn:
        statuses = dict(
            conn.execute(select(Run.status, func.count()).group_by(Run.status)).all()  # type: ignore[arg-type]
        )
    assert statuses == {"succeeded": ROWS}
