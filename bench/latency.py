"""Latency at steady load: event POST -> first delivery, LinkTime beside bare Dramatiq.

    /work/main/.venv/bin/python bench/latency.py [--seconds 60] [--rate EVENTS_PER_S]

The deployment is bench/webhooks.py's (``linktime_deployment``: a scratch PostgreSQL database,
one workflow of 5 ``webhook.call`` steps to a loopback receiver, ``linktime scheduler`` and
``linktime worker`` on Redis), plus ``linktime serve``: events come in over HTTP,
``POST /v1/events`` with the account's API key, each for a booking of its own.

1. Saturation (unless ``--rate`` gives it): a burst of ``--saturation-events`` posted with 32
   in flight; the saturation rate is the deliveries/s the receiver counts, divided by 5.
2. Steady load at 25 %, 50 % and 75 % of it, ``--seconds`` each: an open-loop generator
   (asyncio + httpx) starts POST i at t0 + i/rate by the clock, never waiting for an answer.
   Latency: from just before the POST (the event's extra field ``sent_at``, which the webhook
   carries in ``data.event``) to the first step's request at the receiver (path ``/s0``).
3. The bare-Dramatiq actor (bench/baseline_actor.py) at the same rates, in deliveries: 5
   messages per event (the same POSTs per second as LinkTime makes), evenly spaced, each
   enqueued from a thread pool by the same open-loop clock; latency from enqueue to delivery.

Besides p50/p95/p99/max, each phase reports how late the generator started its sends against
its schedule (a starved generator shows there, not as a faster system) and the cores taken by
processes outside the bench. Targets: LinkTime p99 < 50 ms at 50 % load, and LinkTime p99 <=
3 x the bare actor's p99 at every load. Exit status 1 on FAIL; ``--json FILE`` writes the
figures for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/latency.py` from anywhere
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.receiver import Receiver, Stats  # noqa: E402
from bench.report import Figure, write_json  # noqa: E402
from bench.webhooks import (  # noqa: E402
    LINKTIME,
    NOISY_CORES,
    STEPS,
    CpuMeter,
    LinkTime,
    backend_pids,
    baseline_deployment,
    code_version,
    linktime_deployment,
    percentile,
    redis_server_pids,
    scratch,
    verify_runs,
)
from tests.procs import free_port, wait_http  # noqa: E402

LOADS = (0.25, 0.50, 0.75)
TARGET_P99_MS = 50.0  # LinkTime at 50 % load
TARGET_FACTOR = 3.0  # LinkTime p99 / bare actor p99, at every load
BURST_IN_FLIGHT = 32
FIRST_STEP = "/s0"  # the path of the workflow's first webhook (linktime_deployment)


# --- the open-loop generator ---------------------------------------------------------------------


@dataclass
class Schedule:
    """What the generator did in one phase."""

    sent: int = 0
    lateness: list[float] = field(default_factory=list)  # s each send started after its slot
    answers: list[float] = field(default_factory=list)  # s each send took (POST answered)
    errors: list[str] = field(default_factory=list)


async def open_loop(
    rate: float, seconds: float, send: Callable[[int], Awaitable[None]], timeout: float
) -> Schedule:
    """Start ``send(i)`` at t0 + i/rate for ``rate * seconds`` sends, each in a task of its
    own: a slow answer never delays the next send. A send that starts after its slot (the
    generator's loop was starved) is counted in ``lateness``, not hidden."""
    loop = asyncio.get_running_loop()
    schedule = Schedule(sent=max(1, round(rate * seconds)))
    t0 = loop.time() + 0.05

    async def one(i: int, slot: float) -> None:
        started = loop.time()
        schedule.lateness.append(started - slot)
        try:
            await send(i)
        except Exception as exc:  # counted and reported: an open loop does not stop for it
            schedule.errors.append(f"{type(exc).__name__}: {exc}")
        else:
            schedule.answers.append(loop.time() - started)

    tasks = []
    for i in range(schedule.sent):
        slot = t0 + i / rate
        await asyncio.sleep(max(0.0, slot - loop.time()))
        tasks.append(asyncio.create_task(one(i, slot)))
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        raise TimeoutError(f"{len(pending)} of {schedule.sent} sends unanswered after {timeout}s")
    return schedule


class Poster:
    """Posts ``booking.created`` events to ``linktime serve``; ``sent_at`` rides in the event."""

    def __init__(self, base: str, api_key: str) -> None:
        from linktime.models import sample_event

        self.url = f"{base}/v1/events"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.template = sample_event().model_dump(mode="json")

    def event(self, event_id: str) -> dict[str, Any]:
        booking = {**self.template["booking"], "uid": f"bk_{event_id}"}
        return {**self.template, "id": event_id, "booking": booking, "sent_at": time.time()}

    def client(self) -> httpx.AsyncClient:
        # Open loop: as many connections as sends in flight, so none waits for a free one.
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        return httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False)

    async def post(self, client: httpx.AsyncClient, event_id: str) -> None:
        answer = await client.post(self.url, json=self.event(event_id), headers=self.headers)
        if answer.status_code not in (200, 201, 202):
            raise RuntimeError(f"{event_id}: {answer.status_code} {answer.text[:200]}")

    async def steady(self, prefix: str, rate: float, seconds: float, timeout: float) -> Schedule:
        async with self.client() as client:
            return await open_loop(
                rate, seconds, lambda i: self.post(client, f"{prefix}_{i}"), timeout
            )

    async def burst(self, prefix: str, n: int, timeout: float) -> None:
        """``n`` events as fast as the server answers them, ``BURST_IN_FLIGHT`` at a time."""
        gate = asyncio.Semaphore(BURST_IN_FLIGHT)
        async with self.client() as client:

            async def one(i: int) -> None:
                async with gate:
                    await self.post(client, f"{prefix}_{i}")

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout)


async def enqueue_steady(actor: Any, rate: float, seconds: float, timeout: float) -> Schedule:
    """The bare actor's messages on the same open-loop clock; ``actor.send`` blocks on Redis,
    so it runs in a thread pool, and ``sent_at`` is read in the thread just before it."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(8, thread_name_prefix="enqueue") as pool:

        async def send(i: int) -> None:
            await loop.run_in_executor(pool, lambda: actor.send(time.time(), i))

        return await open_loop(rate, seconds, send, timeout)


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    system: str
    load: float  # share of the saturation rate
    rate: float  # events/s (the bare actor: messages/s divided by STEPS)
    sent: int  # events, or messages
    measured: int  # latencies taken (first deliveries, or messages)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    answer_p99_ms: float  # the POST answered (LinkTime), the enqueue returned (bare actor)
    late_p99_ms: float  # the generator's lateness against its schedule
    late_max_ms: float
    errors: int
    others: float  # cores used by processes outside the bench


def ms(values: list[float], q: float) -> float:
    return percentile(sorted(values), q) * 1000 if values else float("nan")


def phase(
    system: str, load: float, rate: float, schedule: Schedule, latencies: list[float], others: float
) -> Phase:
    ordered = sorted(latencies)
    return Phase(
        system=system,
        load=load,
        rate=rate,
        sent=schedule.sent,
        measured=len(ordered),
        p50_ms=ms(ordered, 0.50),
        p95_ms=ms(ordered, 0.95),
        p99_ms=ms(ordered, 0.99),
        max_ms=ordered[-1] * 1000 if ordered else float("nan"),
        answer_p99_ms=ms(schedule.answers, 0.99),
        late_p99_ms=ms(schedule.lateness, 0.99),
        late_max_ms=max(schedule.lateness, default=float("nan")) * 1000,
        errors=len(schedule.errors),
        others=others,
    )


def deliveries_per_s(stats: Stats) -> float:
    arrivals = sorted(stats.arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return (len(arrivals) - 1) / span if span > 0 else float("nan")  # n arrivals, n-1 gaps


# --- LinkTime ------------------------------------------------------------------------------------


def start_serve(lt: LinkTime, timeout: float) -> tuple[str, int]:
    """``linktime serve`` on a free loopback port with the deployment's environment; its base
    URL and process group, once /healthz answers."""
    port = free_port()
    serve = lt.procs.start(
        "linktime-serve", [LINKTIME, "serve", "--host", "127.0.0.1", "--port", str(port)], lt.env
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", timeout=min(timeout, 60))
    return base, serve.pid


def run_linktime(
    args: argparse.Namespace, receiver: Receiver, work: Path
) -> tuple[float, list[Phase], str]:
    """The saturation rate in events/s (measured, or ``--rate``), the steady phases, and
    the check that every run succeeded."""
    with linktime_deployment(args, receiver, work) as lt:
        base, serve_pgid = start_serve(lt, args.timeout)
        poster = Poster(base, lt.api_key)
        posted = 0

        def burst(prefix: str, n: int) -> Stats:
            nonlocal posted
            receiver.reset()
            asyncio.run(poster.burst(prefix, n, args.timeout))
            posted += n
            receiver.wait_for(n * STEPS, args.timeout, lt.procs.check)
            return receiver.collect()

        burst("evt_warm", args.workers * args.threads * 2)  # processes and connections warm
        saturation = args.rate
        if saturation is None:
            stats = burst("evt_sat", args.saturation_events)
            saturation = deliveries_per_s(stats) / STEPS
            print(
                f"saturation: {args.saturation_events} events posted with {BURST_IN_FLIGHT} in "
                f"flight -> {saturation * STEPS:,.0f} deliveries/s = {saturation:,.1f} events/s",
                flush=True,
            )
        phases = []
        for load in LOADS:
            rate = saturation * load
            receiver.reset()
            meter = CpuMeter(
                lt.worker.pid,
                [lt.scheduler.pid, serve_pgid],
                [receiver.pid, *redis_server_pids()],
                backend_pids(lt.db_url),
            )
            schedule = asyncio.run(
                poster.steady(f"evt_{load:.2f}", rate, args.seconds, args.timeout)
            )
            posted += schedule.sent - len(schedule.errors)
            delivered = (schedule.sent - len(schedule.errors)) * STEPS
            receiver.wait_for(delivered, args.timeout, lt.procs.check)
            cpu = meter.stop()
            firsts = receiver.collect().by_path.get(FIRST_STEP, [])
            phases.append(phase("LinkTime", load, rate, schedule, firsts, cpu.others))
            print(row(phases[-1]), flush=True)
        return saturation, phases, verify_runs(lt.db_url, posted, args.timeout)


def run_baseline(
    args: argparse.Namespace, receiver: Receiver, work: Path, saturation: float
) -> list[Phase]:
    with baseline_deployment(args, receiver, work) as base:
        phases = []
        for load in LOADS:
            rate = saturation * load
            receiver.reset()
            meter = CpuMeter(base.worker.pid, [], [receiver.pid, *redis_server_pids()])
            schedule = asyncio.run(
                enqueue_steady(base.actor, rate * STEPS, args.seconds, args.timeout)
            )
            receiver.wait_for(schedule.sent - len(schedule.errors), args.timeout, base.procs.check)
            cpu = meter.stop()
            latencies = receiver.collect().latencies
            phases.append(phase("bare Dramatiq", load, rate, schedule, latencies, cpu.others))
            print(row(phases[-1]), flush=True)
        return phases


# --- report --------------------------------------------------------------------------------------

HEADER = (
    "| system        | load | events/s |  sent | measured | p50 ms | p95 ms | p99 ms | max ms "
    "| answer p99 ms | sched late p99/max ms | errors | others, cores |\n"
    "|---------------|-----:|---------:|------:|---------:|-------:|-------:|-------:|-------:"
    "|--------------:|----------------------:|-------:|--------------:|"
)


def row(p: Phase) -> str:
    late = f"{p.late_p99_ms:.1f} / {p.late_max_ms:.1f}"
    return (
        f"| {p.system:<13} | {p.load:>4.0%} | {p.rate:>8.1f} | {p.sent:>5} | {p.measured:>8} "
        f"| {p.p50_ms:>6.1f} | {p.p95_ms:>6.1f} | {p.p99_ms:>6.1f} | {p.max_ms:>6.1f} "
        f"| {p.answer_p99_ms:>13.1f} | {late:>21} | {p.errors:>6} | {p.others:>13.2f} |"
    )


def verdicts(lt: list[Phase], base: list[Phase]) -> list[Figure]:
    """The targets, each a figure with PASS/FAIL; and the p99s themselves for context."""
    out = []
    for mine, bare in zip(lt, base, strict=True):
        load = f"{mine.load:.0%}"
        # A phase that lost deliveries or sends has no valid p99: it fails.
        complete = not mine.errors and not bare.errors and mine.measured == mine.sent
        if mine.load == 0.50:
            out.append(
                Figure(
                    "latency",
                    f"LinkTime p99 POST->first delivery at {load} load",
                    mine.p99_ms,
                    "ms",
                    f"< {TARGET_P99_MS:g}",
                    complete and mine.p99_ms < TARGET_P99_MS,
                )
            )
        factor = mine.p99_ms / bare.p99_ms
        out.append(
            Figure(
                "latency",
                f"LinkTime p99 / bare Dramatiq p99 at {load} load "
                f"({mine.p99_ms:.1f} / {bare.p99_ms:.1f} ms)",
                factor,
                "x",
                f"<= {TARGET_FACTOR:g}",
                complete and factor <= TARGET_FACTOR,
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each load phase")
    parser.add_argument(
        "--rate", type=float, help="saturation rate in events/s (skips measuring it)"
    )
    parser.add_argument("--saturation-events", type=int, default=1000, help="burst size")
    parser.add_argument("--workers", "-w", type=int, default=2, help="W worker processes")
    parser.add_argument("--threads", "-t", type=int, default=8, help="T threads per process")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on every wait (s)")
    parser.add_argument("--json", help="write the figures and verdicts to this file")
    args = parser.parse_args()

    print(
        f"latency at steady load: {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}; W={args.workers} T={args.threads}; loads "
        f"{', '.join(f'{x:.0%}' for x in LOADS)} x {args.seconds:g} s",
        flush=True,
    )
    print(code_version(None), flush=True)
    with scratch("lt-latency-") as run:
        work = run.path
        with Receiver() as receiver:
            print(HEADER, flush=True)
            saturation, lt, verified = run_linktime(args, receiver, work)
            base = run_baseline(args, receiver, work, saturation)
        run.keep = False

    print(f"\nside by side ({verified}; load average {os.getloadavg()[0]:.2f}):\n{HEADER}")
    for mine, bare in zip(lt, base, strict=True):
        print(row(mine))
        print(row(bare))
    figures = [
        Figure("latency", "saturation (LinkTime over HTTP)", saturation, "events/s", "", None),
        *verdicts(lt, base),
    ]
    for f in figures[1:]:
        print(
            f"{f.name}: {f.value:.2f} {f.unit} (target {f.target})  "
            f"{'PASS' if f.passed else 'FAIL'}"
        )
    for p in (*lt, *base):
        if p.others > NOISY_CORES:
            print(
                f"warning: other processes used {p.others:.2f} cores during {p.system} at "
                f"{p.load:.0%}: its figures are disturbed"
            )
        if p.late_p99_ms > 5:
            print(
                f"warning: the generator started {p.system} sends at {p.load:.0%} up to "
                f"{p.late_max_ms:.0f} ms late (p99 {p.late_p99_ms:.1f} ms): it was starved"
            )
    if args.json:
        write_json(args.json, figures)
    return 0 if all(f.passed for f in figures[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
