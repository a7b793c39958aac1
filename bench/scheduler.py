"""Scheduler bench: tick cost with 10k vs 1M pending reminders (few due), and how late due
reminders fire, on PostgreSQL.

    python bench/scheduler.py [--pending 10000,1000000] [--due 100] [--fire 2000]

Target: the 1M tick within 2x of the 10k tick (cost grows with what is due, not with what is
pending), and fire lateness p99 under 1 s.

    python bench/scheduler.py --parked 10000 [--due 100] [--rounds 5] [--ticks 30] [--sqlite]

Parked runs (issue 14): N runs parked in a `logic.delay` by the engine itself, and the tick
(Hub.due_runs, Scheduler.tick) with none, N with nothing due, and N with K due, each beside a
database with nothing parked, in the same run. Target: ratio to that baseline <= 1.5 (parked
runs cost nothing per tick beyond what is due) and the due query reads ix_runs_due only.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dramatiq.brokers.stub import StubBroker
from linktime import plugins, workflows
from linktime.accounts import create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.scheduler import Scheduler
from linktime.settings import Settings
from linktime.statuses import RunStatus, StepStatus
from linktime.storage import Run, RunStep
from linktime.testing import scratch_database
from linktime.worker import bind, make_broker, start_in_process
from pydantic import BaseModel
from sqlalchemy import Engine, event, func, select, text, update

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/scheduler.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.report import Figure, write_json  # noqa: E402

PG = os.environ.get("LINKTIME_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Nothing(BaseModel):
    pass


def setup(hub: Hub) -> tuple[str, str]:
    acc = create_account(hub, "bench", "business")
    created, _ = workflows.create(
        hub,
        acc.id,
        workflows.WorkflowIn(
            name="reminder",
            trigger="meeting.before",
            offset_minutes=60,
            enabled=True,
            steps=[workflows.StepIn(action="bench.fire")],
        ),
    )
    with hub.db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (id, account_id, event_id, type, booking_uid, occurred_at,"
                " received_at, payload, payload_hash, answer) VALUES ('ev_bench', :acc, 'evt',"
                " 'booking.created', 'bk', now(), now(), CAST(:payload AS jsonb), '-', '{}')"
            ),
            {"acc": acc.id, "payload": _sample_payload()},
        )
    return acc.id, created.id


def _sample_payload() -> str:
    return sample_event().model_dump_json()


def add_runs(hub: Hub, acc: str, wf: str, count: int, due_sql: str, prefix: str) -> None:
    """Bulk-insert scheduled runs in the database itself (a million in seconds)."""
    with hub.db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (id, account_id, workflow_id, workflow_name, event_id, trigger,"
                " booking_uid, status, due_at, created_at)"
                f" SELECT '{prefix}' || g, :acc, :wf, 'reminder', 'ev_bench', 'meeting.before',"
                f" 'bk_' || g, 'scheduled', {due_sql}, now() FROM generate_series(1, :n) AS g"
            ),
            {"acc": acc, "wf": wf, "n": count},
        )
        conn.execute(text("ANALYZE runs"))


def tick_times(hub: Hub, due: int, ticks: int) -> list[float]:
    """Time ticks that each find ``due`` rows due among everything pending."""
    out = []
    for _ in range(ticks):
        with hub.db.begin() as conn:  # make the same few rows due again (not timed)
            conn.execute(
                text(
                    "UPDATE runs SET status = 'scheduled', due_at = now() - interval '1 second'"
                    " WHERE id LIKE 'due%'"
                )
            )
        t0 = time.perf_counter()
        handed = hub.due_runs()
        out.append(time.perf_counter() - t0)
        assert len(handed) == due, (len(handed), due)
    return out


def measure_ticks(pending: int, due: int) -> tuple[float, float]:
    with scratch_database(PG, "lt_bench_") as url, tempfile.TemporaryDirectory() as tmp:
        hub = Hub(_settings(url, tmp), registry=_registry(lambda ctx: Result.ok()))
        hub.migrate()
        acc, wf = setup(hub)
        add_runs(hub, acc, wf, pending, "now() + interval '30 days'", "pend")
        add_runs(hub, acc, wf, due, "now()", "due")
        tick_times(hub, due, 5)  # warm caches
        times = sorted(tick_times(hub, due, 40))
        hub.close()
        return statistics.median(times), times[int(len(times) * 0.99) - 1]


def _settings(url: str | None, tmp: str) -> Settings:
    return Settings(
        data_dir=Path(tmp),
        database_url=url,
        secret_key="bench",
        scheduler_interval=0.1,
        worker_threads=8,
    )


def _registry(fire: object) -> plugins.Registry:
    registry = plugins.load("")
    registry.actions["bench.fire"] = ActionType("bench.fire", "Fire", Nothing, fire)  # type: ignore[arg-type]
    return registry


def measure_lateness(pending: int, fire: int, spread: float) -> list[float]:
    """Reminders due over ``spread`` seconds among ``pending`` others: how late each fires."""
    late: list[float] = []
    lock = threading.Lock()
    due_of: dict[str, datetime] = {}

    def on_fire(ctx: ActionContext) -> Result:
        fired_at = datetime.now(UTC)
        with lock:
            late.append((fired_at - due_of[ctx.run_id]).total_seconds())
        return Result.ok()

    with scratch_database(PG, "lt_bench_") as url, tempfile.TemporaryDirectory() as tmp:
        hub = Hub(_settings(url, tmp), registry=_registry(on_fire))
        hub.migrate()
        acc, wf = setup(hub)
        add_runs(hub, acc, wf, pending, "now() + interval '30 days'", "pend")
        start = datetime.now(UTC) + timedelta(seconds=2)
        add_runs(
            hub,
            acc,
            wf,
            fire,
            f"TIMESTAMPTZ '{start.isoformat()}' + (g * {spread / fire}) * interval '1 second'",
            "fire",
        )
        with hub.db.connect() as conn:
            due_of.update(
                conn.execute(text("SELECT id, due_at FROM runs WHERE id LIKE 'fire%'")).all()
            )
        broker = make_broker(hub)
        bind(hub, broker)
        worker = start_in_process(hub, broker, 8)
        scheduler = Scheduler(hub)
        scheduler.start()
        deadline = time.monotonic() + spread + 60
        while len(late) < fire and time.monotonic() < deadline:
            time.sleep(0.2)
        scheduler.stop()
        worker.stop()
        hub.close()
    return sorted(late)


# --- Parked runs (issue 14) ----------------------------------------------------------------

PARK = timedelta(days=3)  # each parked run's delay: far from due while the bench runs
PARKED_TARGET = 1.5  # ≈ 1: what parked runs may add to a tick, with room for a shared machine


@dataclass
class ParkedDatabase:
    """One scratch database of the parked-runs bench: ``due`` are the runs a state makes due,
    ``parked`` how many runs sit in their delay beside them (themselves included)."""

    label: str
    hub: Hub
    scheduler: Scheduler
    broker: StubBroker
    due: list[str]
    parked: int

    def arrange(self, due: bool) -> None:
        """Put the ``due`` runs where a state wants them before a tick (not timed): come due
        (a delay that ended: waiting, due a second ago), back in their delay (waiting, due in
        three days), or finished (no due time: nothing parked at all)."""
        now = self.hub.clock()
        if due:
            values: dict[str, Any] = {
                "status": RunStatus.WAITING,
                "due_at": now - timedelta(seconds=1),
            }
        elif self.parked > len(self.due):
            values = {"status": RunStatus.WAITING, "due_at": now + PARK}
        else:
            values = {"status": RunStatus.SUCCEEDED, "due_at": None}
        with self.hub.db.begin() as conn:
            conn.execute(update(Run).where(Run.id.in_(self.due)).values(**values))
        self.broker.flush_all()


def park(hub: Hub, count: int, threads: int, deadline: float) -> list[str]:
    """Park ``count`` runs the engine's way: an enabled workflow [logic.delay 3 days,
    bench.fire]; one booking.created event per booking starts a run, executed once so its
    delay parks it. Checks the rows are what the engine leaves behind a delay."""
    acc = create_account(hub, "bench", "business")
    workflows.create(
        hub,
        acc.id,
        workflows.WorkflowIn(
            name="follow-up",
            trigger="booking.created",
            enabled=True,
            steps=[
                workflows.StepIn(
                    action="logic.delay", settings={"amount": PARK.days, "unit": "days"}
                ),
                workflows.StepIn(action="bench.fire"),
            ],
        ),
    )
    booking = sample_event().booking.model_dump()

    def one(n: int) -> str:
        event = sample_event(id=f"ev_park_{n}", booking={**booking, "uid": f"bk_park_{n}"})
        [run_id] = hub.emit(event, account_id=acc.id).run_ids
        hub.process_run(run_id)
        return run_id

    pool = ThreadPoolExecutor(threads)
    try:
        futures = [pool.submit(one, n) for n in range(count)]
        _, late = wait(futures, timeout=max(deadline - time.monotonic(), 0))
        if late:
            raise TimeoutError(f"parking {count} runs: {len(late)} not parked in time")
        run_ids = [future.result() for future in futures]
    finally:  # on a timeout, Ctrl-C or SIGTERM: only the runs being parked finish
        pool.shutdown(cancel_futures=True)
    with hub.db.begin() as conn:
        later = hub.clock() + PARK - timedelta(hours=1)
        runs = conn.execute(
            select(func.count())
            .select_from(Run)
            .where(Run.status == RunStatus.WAITING, Run.due_at > later)
        ).scalar_one()
        steps = conn.execute(
            select(func.count())
            .select_from(RunStep)
            .where(RunStep.status == StepStatus.WAITING, RunStep.action == "logic.delay")
        ).scalar_one()
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))  # as autovacuum would after such a batch
    assert runs == steps == count, f"parked {runs} runs and {steps} delay steps of {count}"
    return run_ids


def open_parked(
    stack: ExitStack, label: str, sqlite: bool, parked: int, due: int, deadline: float
) -> ParkedDatabase:
    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    url = None if sqlite else stack.enter_context(scratch_database(PG, "lt_bench_"))
    hub = Hub(_settings(url, tmp), registry=_registry(lambda ctx: Result.ok()))
    stack.callback(hub.close)
    hub.migrate()
    # SQLite takes one writer at a time: parking from several threads only queues on its lock.
    run_ids = park(hub, parked, 1 if sqlite else 4, deadline)
    broker = StubBroker()  # the tick's messages go to memory: the send is measured, not Redis
    bind(hub, broker)
    return ParkedDatabase(label, hub, Scheduler(hub), broker, run_ids[:due], parked)


def time_state(db: ParkedDatabase, due: bool, ticks: int) -> tuple[float, float]:
    """Median seconds of Hub.due_runs and of Scheduler.tick in one state; every tick must
    hand out exactly the runs that are due."""
    want = len(db.due) if due else 0
    medians = []
    ticks_of: list[Callable[[], int]] = [lambda: len(db.hub.due_runs()), db.scheduler.tick]
    for tick in ticks_of:
        times = []
        for n in range(ticks + 2):  # the first two warm the caches
            db.arrange(due)
            t0 = time.perf_counter()
            handed = tick()
            elapsed = time.perf_counter() - t0
            assert handed == want, f"{db.label}: a tick handed out {handed}, {want} due"
            if n >= 2:
                times.append(elapsed)
        medians.append(statistics.median(times))
    return medians[0], medians[1]


@contextmanager
def recorded(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``engine`` sends while the block runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# A list of bound parameters, shown as its first one: an IN of the 100 due ids is one line.
PLACEHOLDERS = re.compile(r"(\?|%\(\w+\)s(?:::VARCHAR)?)(?:, (?:\?|%\(\w+\)s(?:::VARCHAR)?))+")


def rows_examined(plan: list[str], index: str) -> int | None:
    """Rows an EXPLAIN ANALYZE plan's scan of ``index`` read: those it returned plus those its
    filter removed; None when no node scans that index."""
    at = next((i for i, line in enumerate(plan) if f"using {index} " in line), None)
    if at is None:
        return None
    returned = re.search(r"actual time=\S+ rows=(\d+)", plan[at])
    count = int(returned.group(1)) if returned else 0
    for line in plan[at + 1 :]:
        if "->" in line or not line.startswith(" "):
            break  # the next node: the scan's own details are over
        removed = re.search(r"Rows Removed by Filter: (\d+)", line)
        count += int(removed.group(1)) if removed else 0
    return count


def explain_tick(db: ParkedDatabase, due: bool) -> tuple[list[str], list[str], bool]:
    """One Scheduler.tick's SQL, and the plan of its due query as the database ran it
    (PostgreSQL: EXPLAIN ANALYZE, rolled back; SQLite: EXPLAIN QUERY PLAN). Also whether the
    query read the partial index and examined only the rows that were due."""
    db.arrange(due)
    with recorded(db.hub.db) as seen:
        db.scheduler.tick()
    [(query, params)] = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]
    db.arrange(due)
    with db.hub.db.connect() as conn, conn.begin() as trans:
        if conn.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + query, params
            ).all()
            plan = [r[0] for r in rows]
            examined = rows_examined(plan, "ix_runs_due")
            ok = examined == (len(db.due) if due else 0)
            plan.append(f"rows examined through ix_runs_due: {examined}")
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + query, params).all()
            plan = [r[-1] for r in rows]
            ok = any("USING INDEX ix_runs_due" in line for line in plan)
        trans.rollback()
    return [PLACEHOLDERS.sub(r"\1, …", " ".join(s.split())) for s, _ in seen], plan, ok


def measure_parked(
    parked: int, due: int, rounds: int, ticks: int, sqlite: bool, timeout: float
) -> list[Figure]:
    """The median ratios to nothing parked, each with its verdict (or the one failed check
    that the due query reads ix_runs_due only)."""
    kind = "SQLite" if sqlite else "PostgreSQL"
    deadline = time.monotonic() + timeout
    with ExitStack() as stack:
        t0 = time.monotonic()
        base = open_parked(stack, "nothing parked", sqlite, due, due, deadline)
        many = open_parked(stack, f"{parked} parked", sqlite, parked, due, deadline)
        print(
            f"\n{kind}: parked {parked + due} runs through the engine in "
            f"{time.monotonic() - t0:.0f} s (each in a {PARK.days}-day logic.delay: run and step "
            f"waiting); {rounds} rounds x {ticks} ticks per state"
        )
        for db, due_now in ((many, False), (many, True)):
            statements, plan, ok = explain_tick(db, due_now)
            print(f"one Scheduler.tick, {db.label}, {len(db.due) if due_now else 0} due:")
            for statement in statements:
                print(f"  SQL  {statement}")
            for line in plan:
                print(f"  plan {line}")
            claim = "reads ix_runs_due" + ("" if sqlite else ", examines only the due rows")
            print(f"  the due query {claim}: {'yes' if ok else 'NO'}")
            if not ok:
                return [Figure("scheduler", f"{kind}: the due query {claim}", 0, "", "yes", False)]
        states = [
            (f"{parked} parked, nothing due", False),
            (f"{parked} parked, {due} due", True),
        ]
        ratios: dict[tuple[str, str], list[float]] = {}
        header = (
            f"| {'state':<26} | {'due_runs ms':>11} | {'baseline':>8} | {'ratio':>5} "
            f"| {'tick ms':>7} | {'baseline':>8} | {'ratio':>5} |"
        )
        for r in range(rounds):
            print(f"round {r + 1}/{rounds} (baseline: the same state with nothing parked)")
            print(header)
            for label, due_now in states:
                # The two databases take turns going first, so a drift in load hits both.
                order = (base, many) if r % 2 == 0 else (many, base)
                timed = {db.label: time_state(db, due_now, ticks) for db in order}
                (b_hub, b_tick), (m_hub, m_tick) = timed[base.label], timed[many.label]
                ratios.setdefault((label, "due_runs"), []).append(m_hub / b_hub)
                ratios.setdefault((label, "tick"), []).append(m_tick / b_tick)
                print(
                    f"| {label:<26} | {m_hub * 1000:>11.2f} | {b_hub * 1000:>8.2f} "
                    f"| {m_hub / b_hub:>5.2f} | {m_tick * 1000:>7.2f} | {b_tick * 1000:>8.2f} "
                    f"| {m_tick / b_tick:>5.2f} |"
                )
    figures = []
    for (label, what), values in ratios.items():
        median = statistics.median(values)
        figures.append(
            Figure(
                "scheduler",
                f"{kind} {what}, {label}: ratio to nothing parked (median)",
                median,
                "x",
                f"<= {PARKED_TARGET}",
                median <= PARKED_TARGET,
            )
        )
        print(
            f"{kind} {what}, {label}: ratio to nothing parked, median of "
            f"{', '.join(f'{v:.2f}' for v in values)} = {median:.2f} "
            f"(target <= {PARKED_TARGET}: {'PASS' if median <= PARKED_TARGET else 'FAIL'})"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pending", default="10000,1000000")
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--fire", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=20.0)
    parser.add_argument("--parked", type=int, help="measure N runs parked in delays instead")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--sqlite", action="store_true", help="with --parked: SQLite as well")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on parking runs")
    parser.add_argument("--json", help="write the figures and verdicts to this file")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the scratch databases and directories are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.parked:
        print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        figures = [
            figure
            for sqlite in ([False, True] if args.sqlite else [False])
            for figure in measure_parked(
                args.parked, args.due, args.rounds, args.ticks, sqlite, args.timeout
            )
        ]
        passed = all(f.passed for f in figures)
        if args.json:
            write_json(args.json, figures)
        print(f"load average {os.getloadavg()[0]:.2f}; {'PASS' if passed else 'FAIL'}")
        raise SystemExit(0 if passed else 1)
    sizes = [int(n) for n in args.pending.split(",")]
    print(f"PostgreSQL, {os.cpu_count()} cores; {args.due} due rows per tick")
    print(f"{'pending':>10} {'tick p50 ms':>12} {'tick p99 ms':>12}")
    results = {}
    for size in sizes:
        p50, p99 = measure_ticks(size, args.due)
        results[size] = p50
        print(f"{size:>10} {p50 * 1000:>12.2f} {p99 * 1000:>12.2f}")
    ratio = results[sizes[-1]] / results[sizes[0]]
    print(
        f"tick p50 ratio {sizes[-1]} / {sizes[0]} pending: {ratio:.2f} (target <= 2.0: "
        f"{'PASS' if ratio <= 2.0 else 'FAIL'})"
    )
    late = measure_lateness(sizes[-1], args.fire, args.spread)
    p50 = statistics.median(late)
    p99 = late[int(len(late) * 0.99) - 1]
    print(
        f"fire lateness over {len(late)} reminders among {sizes[-1]} pending: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {late[-1] * 1000:.0f} ms "
        f"(target p99 < 1000 ms: {'PASS' if p99 < 1.0 else 'FAIL'})"
    )
    if args.json:
        write_json(
            args.json,
            [
                Figure(
                    "scheduler",
                    f"tick p50, {sizes[-1]} / {sizes[0]} pending",
                    ratio,
                    "x",
                    "<= 2.0",
                    ratio <= 2.0,
                ),
                Figure(
                    "scheduler",
                    f"fire lateness p99, {len(late)} reminders among {sizes[-1]} pending",
                    p99 * 1000,
                    "ms",
                    "< 1000",
                    p99 < 1.0,
                ),
            ],
        )


if __name__ == "__main__":
    main()
