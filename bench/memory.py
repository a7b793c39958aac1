"""Memory: process RSS as deliveries add up, LinkTime beside bare Dramatiq (issue 17 item 3).

    /work/main/.venv/bin/python bench/memory.py [--events 20000] [--rate 150] [--samples 10]

The deployment is bench/webhooks.py's (``linktime_deployment``: a scratch PostgreSQL database,
one workflow of 5 ``webhook.call`` steps to a loopback receiver, ``linktime worker --processes
W --threads T`` and ``linktime scheduler`` on Redis) plus ``linktime serve``
(bench/latency.py's ``start_serve``). After a warm-up, ``--events`` events (each a booking of
its own, so 5 deliveries) are posted to ``POST /v1/events`` by latency.py's open-loop generator
at ``--rate`` events/s, in ``--samples`` chunks. After each chunk the bench waits (bounded) until
the receiver has counted every delivery so far, then reads the memory of EVERY process of the
worker's process group (Dramatiq's main process and each forked one), of the scheduler and of
the API: VmRSS (and the peak, VmHWM) from /proc/PID/status, PSS and USS (private pages) from
/proc/PID/smaps_rollup. MB here is 10^6 bytes.

The baseline, in the same run: the bare Dramatiq actor of bench/baseline_actor.py
(``baseline_deployment``, same W x T), fed the same number of deliveries (5 messages per
event) on the same open-loop clock and chunks, its processes sampled the same way.

Targets (issue 17): the largest worker-process RSS after all deliveries (100,000 at the full
size) < 150 MB, and every worker process's RSS growth from half-way to the end (50,000 ->
100,000 deliveries) < 5 % (no leak). For context: the API's RSS right after start (its
baseline) and the most it reached under the load; the scheduler's. At the end, every run must
have succeeded and no webhook-id may have arrived twice. Exit status 1 on FAIL; ``--json FILE``
writes the figures for bench/run_all.py. ``--quick``-size run: ``--events 2000`` (the growth
figure then compares 5,000 with 10,000 deliveries, and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/memory.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.latency import (  # noqa: E402
    Poster,
    Schedule,
    enqueue_steady,
    open_loop,
    start_serve,
)
from bench.receiver import Receiver  # noqa: E402
from bench.report import Figure, write_json  # noqa: E402
from bench.webhooks import (  # noqa: E402
    NOISY_CORES,
    STEPS,
    CpuMeter,
    backend_pids,
    baseline_deployment,
    code_version,
    linktime_deployment,
    redis_server_pids,
    scratch,
    verify_runs,
)

TARGET_RSS_MB = 150.0  # per worker process, after all deliveries
TARGET_GROWTH = 0.05  # per worker process, half-way -> end
MB = 1e6
RETRIES = 5  # per POST, with the same event id


# --- reading memory ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mem:
    rss: float  # MB, VmRSS now
    peak: float  # MB, VmHWM: the most RSS the process ever had
    pss: float  # MB, proportional set size (shared pages split among their users)
    uss: float  # MB, private pages only (what ending the process would free)


def read_mem(pid: int) -> Mem | None:
    """The memory of a live process, from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in (*status.splitlines(), *rollup.splitlines()):
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            kb[key] = int(parts[0])  # smaps_rollup's Rss repeats status's VmRSS
    if "VmRSS" not in kb:  # a zombie has no memory left to report
        return None
    return Mem(
        rss=kb["VmRSS"] * 1024 / MB,
        peak=kb.get("VmHWM", 0) * 1024 / MB,
        pss=kb.get("Pss", 0) * 1024 / MB,
        uss=(kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024 / MB,
    )


def members(pgid: int) -> list[int]:
    """The live processes of a process group (a ``linktime worker`` and what it forked)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
    return sorted(found)


@dataclass
class Watched:
    """Processes of one system, each under a short stable label: ``role`` for the group's
    leader, ``role-1``, ``role-2``... for what it forked, in order of pid."""

    groups: dict[str, int]  # role -> process group id
    workers: set[str] = field(default_factory=set)  # labels of worker processes
    labels: dict[int, str] = field(default_factory=dict)  # pid -> label
    worker_role: str = "worker"

    def sample(self) -> dict[str, Mem]:
        got = {}
        for role, pgid in self.groups.items():
            for pid in members(pgid):
                if pid not in self.labels:
                    forked = sum(1 for p in self.labels.values() if p.startswith(f"{role}-"))
                    self.labels[pid] = role if pid == pgid else f"{role}-{forked + 1}"
                    if role == self.worker_role:
                        self.workers.add(self.labels[pid])
                mem = read_mem(pid)
                if mem is not None:
                    got[self.labels[pid]] = mem
        return got

    def legend(self) -> str:
        return ", ".join(f"{label}={pid}" for pid, label in sorted(self.labels.items()))


@dataclass(frozen=True)
class Checkpoint:
    deliveries: int
    mem: dict[str, Mem]  # label -> memory


@dataclass(frozen=True)
class Phase:
    system: str
    checkpoints: list[Checkpoint]
    watched: Watched
    others: float  # cores used by processes outside the bench over the fed part
    duplicates: int
    verified: str
    retried: list[str] = field(default_factory=list)  # POSTs sent again, and why


def all_sent(chunk: int, schedule: Schedule, expected: int, what: str) -> None:
    """A chunk's feed ends the phase unless every one of its ``expected`` sends went out."""
    if schedule.errors or schedule.sent != expected:
        raise RuntimeError(
            f"chunk {chunk}: {len(schedule.errors)} of {schedule.sent} {what} failed: "
            f"{schedule.errors[:3]}"
        )


def feed_and_sample(
    system: str,
    watched: Watched,
    feed: Callable[[int], None],
    chunks: int,
    per_chunk: int,
    receiver: Receiver,
    check: Callable[[], None],
    timeout: float,
) -> list[Checkpoint]:
    """Sample once (0 deliveries), then ``feed(chunk)`` each chunk, wait for the receiver to
    count every delivery so far (``per_chunk`` deliveries a chunk) and sample again. The
    receiver is not reset in between, so duplicates are counted over the whole run."""
    checkpoints = [Checkpoint(0, watched.sample())]
    print(f"\n{system}:\n{header(checkpoints[0])}", flush=True)
    print(row(checkpoints[0]), flush=True)
    for chunk in range(chunks):
        feed(chunk)
        delivered = (chunk + 1) * per_chunk
        receiver.wait_for(delivered, timeout, check)
        checkpoints.append(Checkpoint(delivered, watched.sample()))
        print(row(checkpoints[-1]), flush=True)
    print(f"processes: {watched.legend()}", flush=True)
    return checkpoints


def header(first: Checkpoint) -> str:
    names = "".join(f" | {label:>9}" for label in first.mem)
    return (
        f"| deliveries{names} |   (RSS, MB)\n|-----------:"
        + "".join("|----------:" for _ in first.mem)
        + "|"
    )


def row(c: Checkpoint) -> str:
    return f"| {c.deliveries:>10,}" + "".join(f" | {m.rss:>9.1f}" for m in c.mem.values()) + " |"


# --- the two systems -----------------------------------------------------------------------------


def run_linktime(
    args: argparse.Namespace, receiver: Receiver, work: Path
) -> tuple[Phase, Mem | None]:
    """The LinkTime phase, and the API's memory right after it started (before any event)."""
    chunk_events = args.events // args.samples
    with linktime_deployment(args, receiver, work) as lt:
        base, serve_pgid = start_serve(lt, args.timeout)
        api_at_start = read_mem(serve_pgid)
        poster = Poster(base, lt.api_key)
        warm = args.workers * args.threads * 2
        retried: list[str] = []
        receiver.reset()
        asyncio.run(poster.burst("evt_warm", warm, args.timeout))
        receiver.wait_for(warm * STEPS, args.timeout, lt.procs.check)
        receiver.reset()
        watched = Watched(
            {"worker": lt.worker.pid, "scheduler": lt.scheduler.pid, "api": serve_pgid}
        )
        meter = CpuMeter(
            lt.worker.pid,
            [lt.scheduler.pid, serve_pgid],
            [receiver.pid, *redis_server_pids()],
            backend_pids(lt.db_url),
        )

        async def steady(chunk: int) -> Schedule:
            async with poster.client() as client:

                async def send(i: int) -> None:
                    # As a client would: a refused POST (a 500 when the shared PostgreSQL has
                    # no connection left) is sent again with the same event id, a few times.
                    for attempt in range(RETRIES + 1):
                        try:
                            return await poster.post(client, f"evt_{chunk}_{i}")
                        except Exception as exc:
                            if attempt == RETRIES:
                                raise
                            retried.append(f"{type(exc).__name__}: {exc}"[:200])
                            await asyncio.sleep(0.2 * (attempt + 1))

                return await open_loop(args.rate, chunk_events / args.rate, send, args.timeout)

        def feed(chunk: int) -> None:
            all_sent(chunk, asyncio.run(steady(chunk)), chunk_events, "posts")

        checkpoints = feed_and_sample(
            "LinkTime",
            watched,
            feed,
            args.samples,
            chunk_events * STEPS,
            receiver,
            lt.procs.check,
            args.timeout,
        )
        others = meter.stop().others
        duplicates = receiver.collect().duplicates
        verified = verify_runs(lt.db_url, warm + args.events, args.timeout)
        phase = Phase("LinkTime", checkpoints, watched, others, duplicates, verified, retried)
        return phase, api_at_start


class _Numbered:
    """The bare actor, numbering messages from ``offset``: latency.py's ``enqueue_steady``
    counts from 0 each call, and the receiver tells duplicates apart by that number."""

    def __init__(self, actor: Any, offset: int) -> None:
        self.actor, self.offset = actor, offset

    def send(self, sent_at: float, i: int) -> Any:
        return self.actor.send(sent_at, self.offset + i)


def run_baseline(args: argparse.Namespace, receiver: Receiver, work: Path) -> Phase:
    chunk_messages = args.events // args.samples * STEPS
    with baseline_deployment(args, receiver, work) as base:
        watched = Watched({"bare": base.worker.pid}, worker_role="bare")
        meter = CpuMeter(base.worker.pid, [], [receiver.pid, *redis_server_pids()])

        def feed(chunk: int) -> None:
            actor = _Numbered(base.actor, chunk * chunk_messages)
            rate = args.rate * STEPS  # the same POSTs per second as LinkTime makes
            all_sent(
                chunk,
                asyncio.run(enqueue_steady(actor, rate, chunk_messages / rate, args.timeout)),
                chunk_messages,
                "sends",
            )

        checkpoints = feed_and_sample(
            "bare Dramatiq",
            watched,
            feed,
            args.samples,
            chunk_messages,
            receiver,
            base.procs.check,
            args.timeout,
        )
        others = meter.stop().others
        duplicates = receiver.collect().duplicates
        n = args.events * STEPS
        return Phase("bare Dramatiq", checkpoints, watched, others, duplicates, f"{n} delivered")


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    label: str
    half: Mem | None
    end: Mem | None
    peak: float  # MB, VmHWM at the end (or the most RSS sampled)

    @property
    def growth(self) -> float:
        if self.half is None or self.end is None:
            return float("nan")  # replaced or gone: a restarted process would hide a leak
        return self.end.rss / self.half.rss - 1


def growths(phase: Phase) -> list[Growth]:
    half, end = phase.checkpoints[len(phase.checkpoints) // 2], phase.checkpoints[-1]
    out = []
    for label in sorted(phase.watched.labels.values()):
        seen = [c.mem[label].rss for c in phase.checkpoints if label in c.mem]
        at_end = end.mem.get(label)
        peak = at_end.peak if at_end is not None else max(seen, default=float("nan"))
        out.append(Growth(label, half.mem.get(label), at_end, peak))
    return out


def summary(phases: list[Phase]) -> str:
    lines = [
        "| system        | process     | RSS at 0 | RSS half-way | RSS at end | growth | peak RSS "
        "| PSS at end | USS at end |",
        "|---------------|-------------|---------:|-------------:|-----------:|-------:|---------:"
        "|-----------:|-----------:|",
    ]
    for p in phases:
        first = p.checkpoints[0]
        for g in growths(p):
            start = first.mem.get(g.label)

            def mb(m: Mem | None, attr: str) -> str:
                return f"{getattr(m, attr):.1f}" if m is not None else "-"

            lines.append(
                f"| {p.system:<13} | {g.label:<11} | {mb(start, 'rss'):>8} | "
                f"{mb(g.half, 'rss'):>12} | {mb(g.end, 'rss'):>10} | {g.growth:>+6.1%} | "
                f"{g.peak:>8.1f} | {mb(g.end, 'pss'):>10} | {mb(g.end, 'uss'):>10} |"
            )
    return "\n".join(lines)


def figures(lt: Phase, bare: Phase, api_at_start: Mem | None, events: int) -> list[Figure]:
    n = events * STEPS
    at = f"{n:,} deliveries"
    span = f"{n // 2:,}->{n:,} deliveries"

    def worst(phase: Phase) -> tuple[float, float, bool]:
        """Largest worker RSS at the end, largest growth, and whether every worker process
        that was there half-way is still there (the same pid) at the end."""
        mine = [g for g in growths(phase) if g.label in phase.watched.workers]
        rss = max((g.end.rss for g in mine if g.end is not None), default=float("nan"))
        growth = max((g.growth for g in mine if g.half is not None), default=float("nan"))
        complete = all(g.end is not None for g in mine if g.half is not None)
        return rss, growth if complete else float("nan"), complete

    lt_rss, lt_growth, lt_complete = worst(lt)
    bare_rss, bare_growth, _ = worst(bare)
    end = lt.checkpoints[-1].mem
    api = [g for g in growths(lt) if g.label.startswith("api")]
    scheduler = [g for g in growths(lt) if g.label.startswith("scheduler")]
    return [
        Figure(
            "memory",
            f"LinkTime max worker-process RSS at {at} (bare Dramatiq {bare_rss:.1f})",
            lt_rss,
            "MB",
            f"< {TARGET_RSS_MB:g}",
            lt_rss < TARGET_RSS_MB,
        ),
        Figure(
            "memory",
            f"LinkTime worker RSS growth {span}, max per process "
            f"(bare Dramatiq {bare_growth:+.1%})",
            lt_growth * 100,
            "%",
            f"< {TARGET_GROWTH * 100:g}",
            lt_complete and lt_growth < TARGET_GROWTH,
        ),
        Figure("memory", f"bare Dramatiq max worker-process RSS at {at}", bare_rss, "MB", "", None),
        Figure(
            "memory",
            f"bare Dramatiq worker RSS growth {span}, max per process",
            bare_growth * 100,
            "%",
            "",
            None,
        ),
        Figure(
            "memory",
            "API RSS right after start (its baseline)",
            api_at_start.rss if api_at_start is not None else float("nan"),
            "MB",
            "",
            None,
        ),
        Figure(
            "memory",
            "API peak RSS under the steady load",
            max((g.peak for g in api), default=float("nan")),
            "MB",
            "",
            None,
        ),
        Figure(
            "memory",
            f"scheduler RSS at {at}",
            sum(m.rss for label, m in end.items() if label.startswith("scheduler")),
            "MB",
            "",
            None,
        )
        if scheduler
        else Figure("memory", "scheduler RSS (not found)", float("nan"), "MB", "", None),
        Figure(
            "memory",
            "duplicate webhook-ids at the receiver (LinkTime + bare Dramatiq)",
            float(lt.duplicates + bare.duplicates),
            "",
            "= 0",
            lt.duplicates + bare.duplicates == 0,
        ),
        Figure("memory", "POSTs sent again (same event id)", len(lt.retried), "", "", None),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=20000, help="events per system (x5 deliveries)"
    )
    parser.add_argument("--rate", type=float, default=150.0, help="events/s, open loop")
    parser.add_argument(
        "--samples", type=int, default=10, help="chunks, each followed by a sample (even)"
    )
    parser.add_argument("--workers", "-w", type=int, default=2, help="W worker processes")
    parser.add_argument("--threads", "-t", type=int, default=8, help="T threads per process")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on every wait (s)")
    parser.add_argument("--json", help="write the figures and verdicts to this file")
    args = parser.parse_args()
    if args.samples < 2 or args.samples % 2 or args.events % args.samples:
        parser.error("--samples must be even and divide --events (half-way is a sample)")

    load0 = os.getloadavg()[0]
    print(
        f"memory bench: {os.cpu_count()} cores, load average {load0:.2f}; "
        f"{args.events} events ({args.events * STEPS:,} deliveries) per system at "
        f"{args.rate:g} events/s in {args.samples} chunks; W={args.workers} T={args.threads}; "
        "RSS in MB (10^6 bytes)",
        flush=True,
    )
    print(code_version(None), flush=True)
    with scratch("lt-memory-") as run:
        work = run.path
        with Receiver() as receiver:
            lt, api_at_start = run_linktime(args, receiver, work)
            bare = run_baseline(args, receiver, work)
        run.keep = False

    print(f"\n{summary([lt, bare])}")
    if api_at_start is not None:
        print(f"API right after start (before any event): RSS {api_at_start.rss:.1f} MB")
    print(
        f"LinkTime: {lt.verified}, {lt.duplicates} duplicate webhook-ids; bare Dramatiq: "
        f"{bare.verified}, {bare.duplicates} duplicates"
    )
    if lt.retried:
        kinds = Counter(why[:80] for why in lt.retried).most_common(3)
        print(f"{len(lt.retried)} POSTs sent again with their event id; why: {kinds}")
    print(
        f"load: others, cores {lt.others:.2f} (LinkTime) / {bare.others:.2f} (bare Dramatiq); "
        f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    figures_ = figures(lt, bare, api_at_start, args.events)
    for f in figures_:
        verdict = (
            ""
            if f.passed is None
            else f"  (target {f.target})  " + ("PASS" if f.passed else "FAIL")
        )
        print(f"{f.name}: {f.value:.1f} {f.unit}{verdict}")
    for p in (lt, bare):
        if p.others > NOISY_CORES:
            print(
                f"warning: other processes used {p.others:.2f} cores during the {p.system} "
                "phase (memory figures are little affected; its timing is)"
            )
    if args.json:
        write_json(args.json, figures_)
    return 0 if all(f.passed is not False for f in figures_) else 1


if __name__ == "__main__":
    sys.exit(main())
