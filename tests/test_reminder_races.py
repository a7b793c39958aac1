"""Reminders racing the events that move them, on SQLite and PostgreSQL: a reschedule landing
while the reminder is being sent or is queued for a worker, an enable while a new booking comes
in, a worker claiming a reminder whose booking has just moved. Each interleaving is forced with
threads held at a chosen statement; runs are driven by hand (no scheduler, no broker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from linktime import workflows
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.storage import Run, new_id
from sqlalchemy import Engine, event, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .conftest import Clock, NoSettings, fast_settings, registry_with

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
START = T0 + timedelta(hours=3)  # the 1-hour reminder is due at T0 + 2 h
MOVED = T0 + timedelta(hours=5)  # rescheduled: due at T0 + 4 h


@dataclass
class Sender:
    """The reminder's one step: records the meeting start each send carries. ``hold`` makes the
    next send wait (``sending`` is set) until ``release``; ``fail_first`` makes the first send a
    retryable failure."""

    sent: list[datetime] = field(default_factory=list)
    hold: bool = False
    fail_first: bool = False
    sending: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, ctx: ActionContext) -> Result:
        if self.hold:
            self.hold = False
            self.sending.set()
            assert self.release.wait(30)
        if self.fail_first:
            self.fail_first = False
            return Result.retry("receiver down", error_code="http_503")
        self.sent.append(ctx.event.booking.start)
        return Result.ok()


@dataclass
class Setup:
    hub: Hub
    clock: Clock
    sender: Sender
    account: NewAccount
    workflow_id: str

    def emit(self, kind: str, n: int, start: datetime) -> dict[str, Any]:
        booking = {
            **sample_event().booking.model_dump(mode="json"),
            "uid": "bk_1",
            "start": start,
            "end": start + timedelta(minutes=30),
        }
        evt = sample_event(kind, id=f"evt_{n}", occurred_at=self.clock.now, booking=booking)
        return self.hub.emit(evt, account_id=self.account.id).answer

    def runs(self) -> list[Run]:
        with Session(self.hub.db) as session:
            return list(
                session.scalars(
                    select(Run)
                    .where(Run.workflow_id == self.workflow_id)
                    .order_by(Run.created_at, Run.id)
                )
            )

    def fire_due(self) -> None:
        """One scheduler tick and a worker for each run it hands out."""
        for run_id in self.hub.due_runs():
            self.hub.process_run(run_id)


def make_setup(request: pytest.FixtureRequest, tmp_path: Path, dialect: str) -> Setup:
    url = request.getfixturevalue("pg_url") if dialect == "postgresql" else None
    sender = Sender()
    clock = Clock(T0)
    hub = Hub(
        fast_settings(data_dir=tmp_path, database_url=url, retry_schedule=[60.0]),
        registry=registry_with(ActionType("test.remind", "Remind", NoSettings, sender)),
        clock=clock,
    )
    request.addfinalizer(hub.close)
    hub.migrate()
    account = create_account(hub, "test", "business")
    spec = workflows.WorkflowIn(
        name="reminder",
        trigger="meeting.before",
        offset_minutes=60,
        enabled=True,
        steps=[{"action": "test.remind"}],
    )
    created, _ = workflows.create(hub, account.id, spec)
    return Setup(hub, clock, sender, account, created.id)


@pytest.fixture(params=["sqlite", "postgresql"])
def s(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return make_setup(request, tmp_path, request.param)


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    """PostgreSQL only: there a worker's statements are each their own transaction, so an event
    can commit between its claim and its check of the booking (SQLite runs one writer at a
    time, and the claim with its check is one transaction)."""
    return make_setup(request, tmp_path, "postgresql")


def postgres(s: Setup) -> bool:
    return s.hub.db.dialect.name == "postgresql"


class Hold:
    """Stops one thread's connection at a chosen point (``where`` tells it from the statement,
    or a transaction event), sets ``reached``, and goes on at ``go``."""

    def __init__(self, engine: Engine, identifier: str, where: Callable[[str], bool]) -> None:
        self.reached, self.go = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None
        self.where = where
        self.engine, self.identifier = engine, identifier
        event.listen(engine, identifier, self._hook)

    def _hook(self, conn: Any, *args: Any) -> None:
        statement = args[1] if len(args) > 1 else ""
        mine = threading.current_thread() is self.thread and not self.reached.is_set()
        if mine and self.where(statement):
            self.reached.set()
            assert self.go.wait(30)

    def run(self, target: Callable[[], object]) -> threading.Thread:
        self.thread = threading.Thread(target=target)
        self.thread.start()
        return self.thread

    def remove(self) -> None:
        event.remove(self.engine, self.identifier, self._hook)


def waits_or_ends(hub: Hub, done: threading.Event) -> None:
    """PostgreSQL: return once a connection waits for a lock another holds, or ``done``."""
    deadline = time.monotonic() + 10
    with hub.db.connect() as monitor:
        while not done.is_set():
            waiting = monitor.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            # pg_stat_activity is read once per transaction: end it, or every poll would see
            # the first one's snapshot.
            monitor.rollback()
            if waiting:
                return
            assert time.monotonic() < deadline, "nothing waits for a lock, and nothing ended"
            time.sleep(0.01)


def updates_runs(statement: str) -> bool:
    return statement.lstrip().startswith("UPDATE runs")


def moves_the_reminder(statement: str) -> bool:
    return statement.lstrip().startswith("UPDATE runs SET event_id")  # bookings.plan's move


def test_a_reschedule_while_the_reminder_is_sent_plans_one_for_the_new_time(s: Setup) -> None:
    [planned] = s.emit("booking.created", 1, START)["runs"]
    old = planned["id"]
    s.clock.advance(hours=2)  # due: a worker may claim it (here straight from scheduled)
    s.sender.hold = True
    worker = threading.Thread(target=s.hub.process_run, args=(old,))
    if postgres(s):
        # The reschedule has stored its event and moved the booking, and is about to touch the
        # runs when the worker claims the reminder and starts sending.
        hold = Hold(s.hub.db, "before_cursor_execute", updates_runs)
        ingest = hold.run(lambda: s.emit("booking.rescheduled", 2, MOVED))
        assert hold.reached.wait(10)
        worker.start()
        assert s.sender.sending.wait(10)
        hold.go.set()
        ingest.join(10)
        hold.remove()
    else:
        # One writer at a time: the reschedule lands whole between the claim and the send's end.
        worker.start()
        assert s.sender.sending.wait(10)
        s.emit("booking.rescheduled", 2, MOVED)
    s.sender.release.set()
    worker.join(10)

    assert s.sender.sent == [START]  # claimed before the reschedule committed: it went out
    runs = s.runs()
    assert [(r.status, r.due_at) for r in runs] == [
        ("succeeded", None),
        ("scheduled", MOVED - timedelta(hours=1)),
    ]
    assert runs[0].id == old
    s.clock.advance(hours=2)
    s.fire_due()
    assert s.sender.sent == [START, MOVED]


def test_a_worker_taking_the_reminder_as_a_reschedule_moves_it_finds_it_moved(pg: Setup) -> None:
    [planned] = pg.emit("booking.created", 1, START)["runs"]
    pg.clock.advance(hours=2)
    # The reschedule has moved the reminder and not committed yet when a worker tries to take
    # it: the worker waits for the row, then finds it scheduled for later.
    hold = Hold(pg.hub.db, "after_cursor_execute", moves_the_reminder)
    ingest = hold.run(lambda: pg.emit("booking.rescheduled", 2, MOVED))
    assert hold.reached.wait(10)
    done = threading.Event()

    def work() -> None:
        pg.hub.process_run(planned["id"])
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    waits_or_ends(pg.hub, done)
    hold.go.set()
    ingest.join(10)
    worker.join(10)
    hold.remove()

    assert pg.sender.sent == []
    assert [(r.id, r.status, r.due_at) for r in pg.runs()] == [
        (planned["id"], "scheduled", MOVED - timedelta(hours=1))
    ]


def test_a_reschedule_while_the_reminder_is_queued_moves_it(s: Setup) -> None:
    s.emit("booking.created", 1, START)
    s.clock.advance(hours=2)
    [queued] = s.hub.due_runs()  # handed to the broker, not claimed yet
    answer = s.emit("booking.rescheduled", 2, MOVED)
    assert [(r["id"], r["status"], r["due_at"]) for r in answer["runs"]] == [
        (queued, "scheduled", "2026-12-01T13:00:00Z")
    ]
    s.hub.process_run(queued)  # its message arrives: too early now
    assert s.sender.sent == []
    assert [(r.id, r.status, r.due_at) for r in s.runs()] == [
        (queued, "scheduled", MOVED - timedelta(hours=1))
    ]
    s.clock.advance(hours=2)
    s.fire_due()
    assert s.sender.sent == [MOVED]
    assert [r.status for r in s.runs()] == ["succeeded"]


def test_enabling_while_a_new_booking_comes_in_plans_its_reminder(s: Setup) -> None:
    workflows.set_enabled(s.hub, s.account.id, s.workflow_id, False)
    # The event has read the workflow (disabled) and is about to commit its new booking.
    ingest_hold = Hold(s.hub.db, "commit", lambda _: True)
    ingest = ingest_hold.run(lambda: s.emit("booking.created", 1, START))
    assert ingest_hold.reached.wait(10)
    enable_begins = threading.Event()
    done = threading.Event()

    def enable() -> None:
        workflows.set_enabled(s.hub, s.account.id, s.workflow_id, True)
        done.set()

    def begins(conn: Any) -> None:  # its connection is out of the pool: BEGIN comes next
        if threading.current_thread() is enabler:
            enable_begins.set()

    event.listen(s.hub.db, "engine_connect", begins)
    enabler = threading.Thread(target=enable)
    enabler.start()
    if postgres(s):
        # The enable runs until it waits for the event's transaction (or, without that lock,
        # to its end, having read the bookings without the new one).
        waits_or_ends(s.hub, done)
    else:
        # SQLite: the enable's transaction cannot begin while the event's is open.
        assert enable_begins.wait(10)
    ingest_hold.go.set()
    ingest.join(10)
    enabler.join(10)
    assert done.is_set()
    ingest_hold.remove()
    event.remove(s.hub.db, "engine_connect", begins)

    assert [(r.booking_uid, r.status, r.due_at) for r in s.runs()] == [
        ("bk_1", "scheduled", START - timedelta(hours=1))
    ]


@pytest.mark.parametrize("news", ["booking.rescheduled", "booking.cancelled"])
def test_a_reminder_claimed_as_its_booking_changes_is_not_sent(pg: Setup, news: str) -> None:
    pg.emit("booking.created", 1, START)
    pg.clock.advance(hours=2)
    [old] = pg.hub.due_runs()
    # The worker has claimed the reminder; the event commits before it reads the booking.
    hold = Hold(pg.hub.db, "after_cursor_execute", lambda sql: "UPDATE runs SET status" in sql)
    worker = hold.run(lambda: pg.hub.process_run(old))
    assert hold.reached.wait(10)
    pg.clock.advance(minutes=1)
    pg.emit(news, 2, MOVED)
    hold.go.set()
    worker.join(10)
    hold.remove()

    assert pg.sender.sent == []
    runs = pg.runs()
    if news == "booking.cancelled":
        assert [(r.status, r.note) for r in runs] == [("cancelled", "the booking was cancelled")]
        return
    assert [r.status for r in runs] == ["cancelled", "scheduled"]
    assert runs[0].id == old
    assert runs[0].note == (
        "the booking moved: the reminder planned for its new time replaces this one"
    )
    pg.clock.advance(hours=2)
    pg.fire_due()
    assert pg.sender.sent == [MOVED]


@pytest.mark.parametrize(
    "moved_to", [MOVED, START - timedelta(minutes=30)], ids=["later", "earlier"]
)
def test_a_reminder_whose_booking_moved_unplanned_follows_it_when_claimed(
    s: Setup, moved_to: datetime
) -> None:
    """Only booking.created and booking.rescheduled plan reminders; a payment event that carries
    a new start moves the booking without them. The reminder due for the old time finds it out
    when claimed: a later start plans it again, an earlier one sends it with the new time."""
    s.emit("booking.created", 1, START)
    s.clock.advance(minutes=10)
    s.emit("payment.received", 2, moved_to)
    s.clock.advance(hours=1, minutes=50)  # the old due time
    s.fire_due()
    if moved_to < START:
        assert s.sender.sent == [moved_to]
        [run] = s.runs()
        assert run.status == "succeeded"
        assert run.note == (
            "the booking moved: due 2026-12-01T10:30:00Z, already past when planned: sent at once"
        )
        return
    assert s.sender.sent == []
    [run] = s.runs()
    assert (run.status, run.due_at) == ("scheduled", MOVED - timedelta(hours=1))
    assert run.note == "the booking moved: planned again for 2026-12-01T13:00:00Z"
    s.clock.advance(hours=2)
    s.fire_due()
    assert s.sender.sent == [MOVED]


def test_a_reschedule_cancels_a_reminder_waiting_to_retry_with_the_old_time(s: Setup) -> None:
    s.sender.fail_first = True
    s.emit("booking.created", 1, START)
    s.clock.advance(hours=2)
    s.fire_due()
    [retrying] = s.runs()
    assert retrying.status == "waiting"
    s.emit("booking.rescheduled", 2, MOVED)
    old, new = s.runs()
    assert (old.status, old.note) == (
        "cancelled",
        "the booking moved: a reminder for its new time is planned",
    )
    assert (new.status, new.due_at) == ("scheduled", MOVED - timedelta(hours=1))
    s.clock.advance(minutes=5)  # past the old one's retry time
    s.fire_due()
    assert s.sender.sent == []
    s.clock.advance(hours=2)
    s.fire_due()
    assert s.sender.sent == [MOVED]


def test_the_database_refuses_a_second_pending_reminder(s: Setup) -> None:
    s.emit("booking.created", 1, START)
    [planned] = s.runs()
    twin = {
        c: getattr(planned, c)
        for c in ("account_id", "workflow_id", "workflow_name", "event_id", "trigger")
    }
    twin.update(booking_uid="bk_1", created_at=T0, due_at=T0, unfired=True)
    with pytest.raises(IntegrityError), s.hub.db.begin() as conn:
        conn.execute(insert(Run).values(id=new_id("run"), status="queued", **twin))
    # A reminder that has fired (retrying, queued again) is not pending: one may be planned
    # beside it.
    with s.hub.db.begin() as conn:
        conn.execute(
            insert(Run).values(id=new_id("run"), status="queued", **{**twin, "unfired": False})
        )


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_upgrading_keeps_the_newest_of_duplicate_pending_reminders(
    request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    """A database the old races left two pending reminders in (the old time's, queued, and the
    new time's) takes the one-pending index: the newest stays, the older is cancelled; a run
    that has steps (an event's) is not a reminder and is left alone."""
    from linktime.migrations import upgrade
    from linktime.storage import make_engine

    url = request.getfixturevalue("pg_url") if dialect == "postgresql" else None
    engine = make_engine(url or f"sqlite:///{tmp_path / 'old.db'}")
    request.addfinalizer(engine.dispose)
    upgrade(engine, "0004")
    at = {"t": T0 if dialect == "postgresql" else T0.replace(tzinfo=None)}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts VALUES ('acc', 'a', 'business', :t)"), at)
        conn.execute(
            text(
                "INSERT INTO events (id, account_id, event_id, type, booking_uid, occurred_at,"
                " received_at, payload, payload_hash, answer, decisions) VALUES ('ev', 'acc',"
                " 'evt_1', 'booking.created', 'bk_1', :t, :t, '{}', '-', '{}', '[]')"
            ),
            at,
        )
        for run_id, status in [("run_1", "queued"), ("run_2", "scheduled"), ("run_3", "queued")]:
            conn.execute(
                text(
                    "INSERT INTO runs (id, account_id, workflow_id, workflow_name, event_id,"
                    " trigger, booking_uid, status, created_at, test, continue_when_blocked)"
                    " VALUES (:id, 'acc', 'wf_1', 'w', 'ev', 'meeting.before', 'bk_1', :status,"
                    " :t, false, false)"
                ),
                {"id": run_id, "status": status, **at},
            )
        conn.execute(
            text(
                "INSERT INTO run_steps (id, run_id, position, action, settings, status, attempts)"
                " VALUES ('stp', 'run_3', 0, 'test.remind', '{}', 'pending', 0)"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        runs = conn.execute(select(Run.id, Run.status, Run.unfired).order_by(Run.id)).all()
        steps = conn.scalar(text("SELECT count(*) FROM run_steps"))
    assert [tuple(r) for r in runs] == [
        ("run_1", "cancelled", True),
        ("run_2", "scheduled", True),
        ("run_3", "queued", False),
    ]
    assert steps == 1  # the column was added in place: no cascade emptied the steps
