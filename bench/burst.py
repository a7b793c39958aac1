"""The 9 o'clock reminder burst (issue 17, item 4): R ``meeting.before`` reminders (one
``webhook.call`` step each) due in the same second among P pending, drained by the real
processes (``linktime scheduler`` + ``linktime worker --processes 2 --threads 8``) on PostgreSQL
and Redis, beside the same number of immediate runs measured in the same run.

    /work/main/.venv/bin/python bench/burst.py [--reminders 100000] [--pending 1000000]
    /work/main/.venv/bin/python bench/burst.py --quick        # 5,000 due among 50,000

A. Baseline: one enabled ``booking.created`` workflow (one webhook step to ``/a``); R events
   stored through ``Hub.emit`` without being sent, then every run handed to the broker at once
   (as if all were made in the same instant: their re-send time set to now + the requeue
   delay). Time A: first to last delivery at the receiver.
B. Burst: a fresh scratch database; P - R - K reminders due in 30 days, R due at one instant T
   (a few seconds after the fill, so the scheduler sees them arrive) and K due over the S
   seconds after T, all bulk-inserted the way ``bench/scheduler.py`` fills (``add_runs``,
   imported). Every webhook body carries ``sent_at`` = the reminder's due time, so the
   receiver's latency is each delivery's lateness. Drain B: T to the last burst delivery.
   Checked: every reminder delivered, no ``webhook-id`` twice, every run ``succeeded`` with one
   attempt in the database. The scheduler's tick durations while it drains come from its own
   histogram (``linktime_scheduler_tick_duration_seconds`` on ``LINKTIME_METRICS_PORT``),
   scraped before T and after the last delivery: quantiles are bucket bounds.

Targets: drain B / time A <= 1.5; every tick while draining <= 1 s (a tick hands out at most
``scheduler_batch`` = 1,000 runs, a few hundred ms at most on this machine: a tick of a second or
more would mean it grew with the burst, and would hold back every reminder due meanwhile). The
lateness of the K after-burst reminders is context (p50/p99/max), flagged when its max exceeds
the drain time. Load ("others, cores") is printed with each phase. Exit status 1 on FAIL.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/burst.py` from anywhere
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from bench.receiver import Receiver  # noqa: E402
from bench.report import Figure, write_json  # noqa: E402
from bench.scheduler import add_runs  # noqa: E402
from bench.webhooks import (  # noqa: E402
    NOISY_CORES,
    Cpu,
    CpuMeter,
    LinkTime,
    backend_pids,
    code_version,
    in_threads,
    linktime_deployment,
    percentile,
    redis_server_pids,
    scratch,
)
from tests.procs import free_port  # noqa: E402

TARGET_RATIO = 1.5
TARGET_TICK = 1.0  # seconds: the longest tick allowed while the burst drains
SWEEPER = "re-enqueued by the sweeper"  # the scheduler's log line for a re-sent run


def webhook_workflow(name: str, trigger: str, url: str) -> object:
    from linktime import workflows

    return workflows.WorkflowIn(
        name=name,
        trigger=trigger,
        offset_minutes=60 if trigger == "meeting.before" else 0,
        enabled=True,
        steps=[workflows.StepIn(action="webhook.call", settings={"url": url})],
    )


def resent(lt: LinkTime) -> int:
    """Runs the scheduler has re-sent so far (still queued past the requeue delay)."""
    log = lt.procs.log_dir / "linktime-scheduler.log"
    return log.read_text(errors="replace").count(SWEEPER) if log.exists() else 0


def start_phase(lt: LinkTime, receiver: Receiver) -> tuple[int, CpuMeter]:
    """The measured part begins: the receiver emptied, the scheduler's re-sends so far, and
    the CPU meter started."""
    receiver.reset()
    meter = CpuMeter(
        lt.worker.pid,
        [lt.scheduler.pid],
        [receiver.pid, *redis_server_pids()],
        backend_pids(lt.db_url),
    )
    return resent(lt), meter


def wait_succeeded(db_url: str, like: str, expected: int, timeout: float) -> tuple[int, int]:
    """(runs succeeded, step attempts) of the runs whose id is LIKE ``like``, once all
    ``expected`` have succeeded (a run commits just after its delivery) or at the bound."""
    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                done, attempts = conn.execute(
                    text(
                        "SELECT count(DISTINCT r.id) FILTER (WHERE r.status = 'succeeded'),"
                        " coalesce(sum(s.attempts), 0) FROM runs r"
                        " LEFT JOIN run_steps s ON s.run_id = r.id WHERE r.id LIKE :like"
                    ),
                    {"like": like},
                ).one()
            if done >= expected or time.monotonic() > deadline:
                return int(done), int(attempts)
            time.sleep(0.2)
    finally:
        engine.dispose()


# --- A. immediate runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseA:
    seconds: float  # first to last delivery
    delivered: int
    duplicates: int
    succeeded: int
    attempts: int
    emit_seconds: float  # storing the R events (not measured)
    resent: int
    cpu: Cpu


def phase_a(args: argparse.Namespace, receiver: Receiver, work: Path) -> PhaseA:
    from linktime.models import sample_event
    from linktime.worker import bind, make_broker

    wf = webhook_workflow("immediate", "booking.created", f"{receiver.url}/a")
    with linktime_deployment(args, receiver, work, [wf]) as lt:
        hub = lt.hub
        broker = make_broker(hub)
        try:
            actor = bind(hub, broker)
            template = sample_event().model_dump(mode="json")

            def emit(event_id: str) -> list[str]:
                booking = {**template["booking"], "uid": f"bk_{event_id}"}
                event = {**template, "id": event_id, "booking": booking, "sent_at": time.time()}
                return hub.emit(event, account_id=lt.account_id).run_ids

            warm = args.workers * args.threads * 2
            receiver.reset()
            for i in range(warm):
                emit(f"evt_warm_{i}")
            receiver.wait_for(warm, args.timeout, lt.procs.check)
            # The R runs are stored, not sent: the scheduler would hand them out at their
            # re-send time, so that is put far off while they are being made.
            requeue = hub.settings.requeue_after_seconds
            hub.enqueue = lambda run_ids: None
            hub.settings.requeue_after_seconds = 24 * 3600.0
            run_ids: list[str] = []
            lock = threading.Lock()

            def store(i: int) -> None:
                ids = emit(f"evt_{i}")
                with lock:
                    run_ids.extend(ids)

            emit_seconds = in_threads(args.reminders, args.senders, store, args.timeout)
            hub.settings.requeue_after_seconds = requeue
            assert len(run_ids) == args.reminders, (len(run_ids), args.reminders)
            with hub.db.begin() as conn:  # all made at this instant, as far as re-sends go
                conn.execute(
                    text(
                        "UPDATE runs SET due_at = now() + make_interval(secs => :s)"
                        " WHERE status = 'queued'"
                    ),
                    {"s": requeue},
                )
            before, meter = start_phase(lt, receiver)
            in_threads(args.reminders, args.senders, lambda i: actor.send(run_ids[i]), args.timeout)
            receiver.wait_for(args.reminders, args.timeout, lt.procs.check)
            cpu = meter.stop()
            time.sleep(0.2)  # let a stray duplicate land before counting
            stats = receiver.collect()
            arrivals = sorted(stats.arrivals)
            succeeded, attempts = wait_succeeded(
                lt.db_url, "%", args.reminders + warm, args.timeout
            )
            return PhaseA(
                seconds=arrivals[-1] - arrivals[0],
                delivered=len(arrivals),
                duplicates=stats.duplicates,
                succeeded=succeeded - warm,
                attempts=attempts - warm,
                emit_seconds=emit_seconds,
                resent=resent(lt) - before,
                cpu=cpu,
            )
        finally:
            broker.close()


# --- B. the burst --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ticks:
    count: int
    mean: float
    p50: float  # bucket upper bounds (seconds)
    p99: float
    max: float


_BUCKET = re.compile(r'linktime_scheduler_tick_duration_seconds_bucket\{le="([^"]+)"\} (\S+)')
_SUM = re.compile(r"linktime_scheduler_tick_duration_seconds_sum (\S+)")


def scrape_ticks(port: int, timeout: float) -> tuple[dict[float, float], float]:
    """The scheduler's tick histogram: cumulative count by bucket bound, and the sum."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                body = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    buckets = {float(le): float(n) for le, n in _BUCKET.findall(body)}
    found = _SUM.search(body)
    return buckets, float(found.group(1)) if found else 0.0


def tick_delta(
    before: tuple[dict[float, float], float], after: tuple[dict[float, float], float]
) -> Ticks:
    counts = {le: after[0][le] - before[0].get(le, 0.0) for le in sorted(after[0])}
    total = counts.get(math.inf, 0.0)

    def bound(q: float) -> float:
        return next((le for le, n in counts.items() if n >= q * total), math.inf)

    return Ticks(
        count=int(total),
        mean=(after[1] - before[1]) / total if total else float("nan"),
        p50=bound(0.5),
        p99=bound(0.99),
        max=bound(1.0),
    )


@dataclass(frozen=True)
class PhaseB:
    drain: float  # T to the last burst delivery
    first: float  # T to the first burst delivery
    delivered: int
    after_delivered: int
    duplicates: int
    succeeded: int
    attempts: int
    after_late: list[float]  # sorted lateness of the after-burst reminders
    fill_seconds: float
    lead: float  # seconds between the end of the fill and T
    resent: int
    ticks: Ticks
    cpu: Cpu


def add_events(hub: object, account_id: str, due_at: float) -> None:
    """The event the reminders carry (``ev_bench``, as ``add_runs`` names it), with ``sent_at``
    = ``due_at``: the receiver's latency is the burst reminder's lateness."""
    from linktime.models import sample_event
    from linktime.storage import Event

    payload = {**sample_event().model_dump(mode="json"), "sent_at": due_at}
    with hub.db.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            insert(Event).values(
                id="ev_bench",
                account_id=account_id,
                event_id="evt_bench",
                type="booking.created",
                booking_uid=payload["booking"]["uid"],
                occurred_at=hub.clock(),  # type: ignore[attr-defined]
                received_at=hub.clock(),  # type: ignore[attr-defined]
                payload=payload,
                payload_hash="-",
                answer={},
            )
        )


def own_events(hub: object, prefix: str) -> None:
    """Each run whose id starts with ``prefix`` gets an event of its own, a copy of
    ``ev_bench`` whose ``sent_at`` is the run's due time (its lateness at the receiver)."""
    with hub.db.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text(
                "INSERT INTO events (id, account_id, event_id, type, booking_uid, occurred_at,"
                " received_at, payload, payload_hash, answer, decisions)"
                " SELECT 'ev_' || r.id, e.account_id, 'evt_' || r.id, e.type, e.booking_uid,"
                " e.occurred_at, e.received_at, jsonb_set(e.payload, '{sent_at}',"
                " to_jsonb(extract(epoch FROM r.due_at))), e.payload_hash, e.answer, e.decisions"
                " FROM runs r JOIN events e ON e.id = 'ev_bench' WHERE r.id LIKE :p"
            ),
            {"p": f"{prefix}%"},
        )
        conn.execute(
            text("UPDATE runs SET event_id = 'ev_' || id WHERE id LIKE :p"), {"p": f"{prefix}%"}
        )


def phase_b(args: argparse.Namespace, receiver: Receiver, work: Path) -> PhaseB:
    burst_url, after_url = f"{receiver.url}/burst", f"{receiver.url}/after"
    flows = [
        webhook_workflow("burst", "meeting.before", burst_url),
        webhook_workflow("after", "meeting.before", after_url),
    ]
    port = free_port()
    with linktime_deployment(
        args, receiver, work, flows, {"LINKTIME_METRICS_PORT": str(port)}
    ) as lt:
        hub = lt.hub
        with hub.db.connect() as conn:
            ids = dict(conn.execute(text("SELECT name, id FROM workflows")).all())
        burst_wf, after_wf = ids["burst"], ids["after"]
        t0 = time.monotonic()
        add_events(hub, lt.account_id, 0.0)
        # Warm-up: a few reminders due now, through the scheduler and the workers.
        warm = args.workers * args.threads * 2
        receiver.reset()
        add_runs(hub, lt.account_id, burst_wf, warm, "now()", "warm")
        receiver.wait_for(warm, args.timeout, lt.procs.check)
        far = args.pending - args.reminders - args.after
        add_runs(hub, lt.account_id, burst_wf, far, "now() + interval '30 days'", "pend")
        # T: a whole second, --lead seconds after the far fill (the burst's insert included).
        due = float(math.ceil(time.time() + args.lead))
        with hub.db.begin() as conn:
            conn.execute(
                text(
                    "UPDATE events SET payload = jsonb_set(payload, '{sent_at}', to_jsonb(:t))"
                    " WHERE id = 'ev_bench'"
                ),
                {"t": due},
            )
        add_runs(hub, lt.account_id, burst_wf, args.reminders, f"to_timestamp({due})", "burst")
        step = args.after_spread / args.after
        add_runs(
            hub,
            lt.account_id,
            after_wf,
            args.after,
            f"to_timestamp({due}) + (g * {step}) * interval '1 second'",
            "after",
        )
        own_events(hub, "after")
        fill_seconds = time.monotonic() - t0
        lead = due - time.time()
        ticks0 = scrape_ticks(port, args.timeout)
        before, meter = start_phase(lt, receiver)
        total = args.reminders + args.after
        receiver.wait_for(total, max(lead, 0) + args.timeout, lt.procs.check)
        cpu = meter.stop()
        ticks = tick_delta(ticks0, scrape_ticks(port, args.timeout))
        time.sleep(0.2)  # let a stray duplicate land before counting
        stats = receiver.collect()
        burst = sorted(stats.by_path.get("/burst", []))
        after = sorted(stats.by_path.get("/after", []))
        succeeded, attempts = wait_succeeded(lt.db_url, "burst%", args.reminders, args.timeout)
        return PhaseB(
            drain=burst[-1] if burst else float("nan"),
            first=burst[0] if burst else float("nan"),
            delivered=len(burst),
            after_delivered=len(after),
            duplicates=stats.duplicates,
            succeeded=succeeded,
            attempts=attempts,
            after_late=after,
            fill_seconds=fill_seconds,
            lead=lead,
            resent=resent(lt) - before,
            ticks=ticks,
            cpu=cpu,
        )


# --- report --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(args: argparse.Namespace, a: PhaseA, b: PhaseB) -> tuple[list[Figure], bool]:
    n = args.reminders
    ratio = b.drain / a.seconds
    ratio_ok = ratio <= TARGET_RATIO
    exact_a = a.delivered == n and a.duplicates == 0 and a.succeeded == n and a.attempts == n
    exact_b = (
        b.delivered == n
        and b.after_delivered == args.after
        and b.duplicates == 0
        and b.succeeded == n
        and b.attempts == n
    )
    tick_ok = b.ticks.count > 0 and b.ticks.max <= TARGET_TICK
    late = b.after_late
    p50, p99 = statistics.median(late) if late else float("nan"), percentile(late, 0.99)
    late_max = late[-1] if late else float("nan")
    starved = not late or late_max > b.drain
    print(
        f"\nA: {n} immediate runs stored through Hub.emit in {a.emit_seconds:.1f} s (not "
        f"measured), then all sent at once; B: fill of {args.pending} reminders took "
        f"{b.fill_seconds:.1f} s, the burst fell due {b.lead:.1f} s after it"
    )
    print(
        "\n| phase | runs | seconds | runs/s | delivered | dup | DB succeeded | step attempts "
        "| re-sent by scheduler | worker CPU ms/run | PG CPU ms/run | others, cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, secs, dlv, dup, ok, att, res, cpu in (
        ("A immediate (first->last)", a.seconds, a.delivered, a.duplicates, a.succeeded,
         a.attempts, a.resent, a.cpu),
        ("B burst (due->last)", b.drain, b.delivered, b.duplicates, b.succeeded, b.attempts,
         b.resent, b.cpu),
    ):  # fmt: skip
        print(
            f"| {name} | {n} | {secs:.2f} | {n / secs:,.0f} | {dlv} | {dup} | {ok} | {att} "
            f"| {res} | {1000 * cpu.worker / n:.2f} | {1000 * cpu.db / n:.2f} "
            f"| {cpu.others:.2f} |"
        )
    t = b.ticks
    print(
        f"\ndrain B / time A = {b.drain:.2f} / {a.seconds:.2f} s = {ratio:.2f} "
        f"(target <= {TARGET_RATIO}): {verdict(ratio_ok)}"
    )
    print(
        f"every reminder sent once: A {verdict(exact_a)}, B {verdict(exact_b)} "
        f"(burst: first delivery {b.first:.2f} s after the due second)"
    )
    print(
        f"scheduler ticks while draining (its histogram, bucket bounds): {t.count} ticks, "
        f"mean {t.mean * 1000:.1f} ms, p50 <= {t.p50 * 1000:g} ms, p99 <= {t.p99 * 1000:g} ms, "
        f"max <= {t.max * 1000:g} ms (target max <= {TARGET_TICK * 1000:g} ms): {verdict(tick_ok)}"
    )
    print(
        f"after-burst reminders ({len(late)} of {args.after}, due 0-{args.after_spread:g} s after "
        f"the burst): lateness p50 {p50:.2f} s, p99 {p99:.2f} s, max {late_max:.2f} s"
        + ("  FLAG: later than the burst's drain" if starved else " (within the drain time)")
    )
    for name, cpu in (("A", a.cpu), ("B", b.cpu)):
        if cpu.others > NOISY_CORES:
            print(f"warning: other processes used {cpu.others:.2f} cores during phase {name}")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    figures = [
        Figure("burst", "drain of the burst / same number of immediate runs", ratio, "x",
               f"<= {TARGET_RATIO}", ratio_ok),
        Figure("burst", "reminders sent exactly once (A and B)", float(exact_a and exact_b), "",
               "1", exact_a and exact_b),
        Figure("burst", "scheduler tick max while draining (bucket bound)", t.max * 1000, "ms",
               f"<= {TARGET_TICK * 1000:g}", tick_ok),
        Figure("burst", "burst drain (due -> last delivery)", b.drain, "s", "", None),
        Figure("burst", "immediate runs, first -> last delivery", a.seconds, "s", "", None),
        Figure("burst", "after-burst reminder lateness p99", p99, "s", "", None),
        Figure("burst", "after-burst reminder lateness max", late_max, "s", "", None),
        Figure("burst", "others, cores (phase B)", b.cpu.others, "cores", "", None),
    ]  # fmt: skip
    return figures, ratio_ok and exact_a and exact_b and tick_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reminders", type=int, default=100_000, help="R due in one second")
    parser.add_argument("--pending", type=int, default=1_000_000, help="P pending in all")
    parser.add_argument("--after", type=int, default=1_000, help="K due after the burst")
    parser.add_argument("--after-spread", type=float, default=30.0, help="S seconds")
    parser.add_argument("--lead", type=float, default=10.0, help="fill end to due second (s)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", "-t", type=int, default=8, help="threads per process")
    parser.add_argument("--senders", type=int, default=4, help="bench threads (phase A)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on every wait (s)")
    parser.add_argument("--quick", action="store_true", help="5,000 due among 50,000")
    parser.add_argument("--json", help="write the figures and verdicts to this file")
    args = parser.parse_args()
    if args.quick:
        args.reminders, args.pending, args.after, args.after_spread = 5000, 50_000, 200, 10.0
        args.lead, args.timeout = 5.0, min(args.timeout, 300.0)
    print(
        f"reminder burst: {args.reminders} due in one second among {args.pending} pending, "
        f"{args.after} due over the {args.after_spread:g} s after; worker {args.workers} x "
        f"{args.threads}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print(code_version(None), flush=True)
    with scratch("lt-burst-") as run:
        work = run.path
        with Receiver(timeout=60) as receiver:  # a loaded machine starts it slowly
            a = phase_a(args, receiver, work)
            print(f"A done: {a.seconds:.2f} s first->last delivery", flush=True)
            b = phase_b(args, receiver, work)
        figures, passed = report(args, a, b)
        if args.json:
            write_json(args.json, figures)
        run.keep = not passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
