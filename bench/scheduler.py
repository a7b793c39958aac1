"""Scheduler bench: tick cost with 10k vs 1M pending reminders (few due), and how late due
reminders fire, on PostgreSQL.

    python bench/scheduler.py [--pending 10000,1000000] [--due 100] [--fire 2000]

Target: the 1M tick within 2x of the 10k tick (cost grows with what is due, not with what is
pending), and fire lateness p99 under 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from linktime import plugins, workflows
from linktime.accounts import create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.engine import Hub
from linktime.scheduler import Scheduler
from linktime.settings import Settings
from linktime.testing import scratch_database
from linktime.worker import bind, make_broker, start_in_process
from pydantic import BaseModel
from sqlalchemy import text

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
            steps=[{"action": "bench.fire"}],
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
    from linktime.models import sample_event

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


def _settings(url: str, tmp: str) -> Settings:
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
            )  # type: ignore[arg-type]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pending", default="10000,1000000")
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--fire", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=20.0)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
