"""Webhook delivery throughput: bare Dramatiq vs LinkTime end to end, side by side in one run.

    /work/.venv/bin/python bench/webhooks.py --events 2000 --workers 2 --threads 8

1. Baseline: a Dramatiq actor whose only work is one sync httpx POST of ~2 KB to a loopback
   receiver (``bench/baseline_actor.py``), run by the dramatiq CLI on the same Redis; M*5
   messages.
2. LinkTime: a scratch PostgreSQL database, one account, one enabled workflow of 5
   ``webhook.call`` steps to the same receiver, ``linktime scheduler`` and ``linktime worker``
   as subprocesses; M events emitted through a ``Hub`` bound to the broker (messages go out
   right after commit, as the API does), so M*5 deliveries.

Deliveries/s is counted at the receiver, first to last delivery; latency is from enqueue
(baseline) or from just before ``Hub.emit`` (LinkTime) to the receipt of each delivery. Both
phases start after a warm-up, so process start-up and first connections are not measured.
Alongside, the CPU each delivery cost (workers, PostgreSQL, the sending/emitting bench process,
from /proc) and the CPU other processes on the shared machine took during each phase.

Target: LinkTime deliveries/s >= 0.7 x baseline deliveries/s (the median over ``--rounds``; issue
17 raised it from 0.5).
Exit status 1 on FAIL. ``--src DIR`` measures a snapshot (``git archive``) of LinkTime instead
of the installed work tree; ``--profile FILE`` records the LinkTime workers with py-spy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/webhooks.py` from anywhere
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.receiver import Receiver, Stats, self_test  # noqa: E402
from bench.report import Figure, write_json  # noqa: E402

if TYPE_CHECKING:
    from linktime.engine import Hub

PG_ADMIN = os.environ.get("BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
LOOPBACK = "127.0.0.0/8,::1/128"
TARGET_RATIO = 0.7
# Above this many cores used by processes outside the bench, a phase's figures are flagged.
NOISY_CORES = 0.25
STEPS = 5
LINKTIME = str(Path(sys.executable).parent / "linktime")
# Source directories put ahead of the installed (editable) packages by --src, here and in every
# subprocess: lets the bench measure a fixed snapshot while the work tree is being edited.
SRC_PATHS: list[str] = []


# --- processes -----------------------------------------------------------------------------------


class Procs:
    """Subprocesses in their own sessions, so stopping one reaches every process it forked."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=self.log_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child holds its own copy
        self.running[name] = proc
        return proc

    def check(self) -> None:
        """Fail fast, with the log tail, when a process died mid-measurement."""
        for name, proc in self.running.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM every group, wait (bounded) until no process of any group is left, then
        SIGKILL what remains: a worker's forked processes can outlive its main process."""
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.running.values():
            while time.monotonic() < deadline and (proc.poll() is None or group_alive(proc.pid)):
                time.sleep(0.05)
            if proc.poll() is None or group_alive(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.running.clear()


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any LINKTIME_*/BENCH_* the caller had, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINKTIME_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [*SRC_PATHS, str(ROOT), env.get("PYTHONPATH")])
    )
    env.update(values)
    return env


def drop_namespace(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def in_threads(n_items: int, threads: int, work: Callable[[int], None], timeout: float) -> float:
    """Call ``work(i)`` for every i in range(n_items), spread over ``threads``; returns the
    seconds it took. Several threads so the sender is not what limits the measurement."""
    errors: list[BaseException] = []

    def part(k: int) -> None:
        try:
            for i in range(k, n_items, threads):
                work(i)
        except BaseException as exc:
            errors.append(exc)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=part, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + timeout
    for t in pool:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in pool):
        raise TimeoutError(f"sending {n_items} items took over {timeout:g}s")
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


# --- CPU accounting ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(process group, CPU seconds user+system) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICK


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of a process group (a worker and the
    processes it forked)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            got = _proc_cpu(int(entry.name))
            if got is not None and got[0] == pgid:
                total += got[1]
    return total


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies aside)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    return True
    return False


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def redis_server_pids() -> list[int]:
    """The local redis-server (shared with anyone else using it, but during a phase it serves
    the bench)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == "redis-server":
                    found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class Cpu:
    worker: float  # CPU seconds of the worker processes
    sender: float  # CPU seconds of this process: sending messages, or Hub.emit for LinkTime
    db: float  # CPU seconds of the PostgreSQL backends serving the scratch database
    busy: float  # fraction of all cores busy
    others: float  # cores used on average by processes that are not part of the bench


class CpuMeter:
    """CPU spent over a measured phase by the workers, by the PostgreSQL backends of the scratch
    database, and by everything else on the machine. The machine is shared: CPU used by other
    work (another session's tests) starves whichever phase it overlaps and skews the ratio, so
    it is reported rather than silently folded into the figures."""

    def __init__(
        self,
        worker_pgid: int,
        own_groups: list[int],
        own_pids: list[int],
        db_pids: Callable[[], list[int]] | None = None,
    ) -> None:
        self.worker_pgid = worker_pgid
        self.own_groups = own_groups  # other process groups of the bench (the scheduler)
        self.own_pids = own_pids  # the receiver, redis-server
        self.db_pids = db_pids
        self.t0 = time.monotonic()
        self.worker0 = group_cpu(worker_pgid)
        self.groups0 = sum(group_cpu(g) for g in own_groups)
        self.pids0 = self._pids_cpu()
        self.sender0 = _self_cpu()
        self.db0 = self._db_cpu()
        self.machine0 = machine_busy()

    def _pids_cpu(self) -> float:
        return sum(got[1] for pid in self.own_pids if (got := _proc_cpu(pid)) is not None)

    def _db_cpu(self) -> dict[int, float]:
        found = {}
        for pid in self.db_pids() if self.db_pids else []:
            got = _proc_cpu(pid)
            if got is not None:
                found[pid] = got[1]
        return found

    def stop(self) -> Cpu:
        seconds = time.monotonic() - self.t0
        worker = group_cpu(self.worker_pgid) - self.worker0
        groups = sum(group_cpu(g) for g in self.own_groups) - self.groups0
        pids = self._pids_cpu() - self.pids0
        sender = _self_cpu() - self.sender0
        db = sum(cpu - self.db0.get(pid, 0.0) for pid, cpu in self._db_cpu().items())
        busy, total = machine_busy()
        busy_s = (busy - self.machine0[0]) / _TICK
        fraction = (busy - self.machine0[0]) / max(1.0, total - self.machine0[1])
        # PostgreSQL's own background processes land in "others"; they are small.
        others = max(0.0, busy_s - worker - sender - groups - pids - db) / max(seconds, 1e-9)
        return Cpu(worker=worker, sender=sender, db=db, busy=fraction, others=others)


def backend_pids(db_url: str) -> Callable[[], list[int]]:
    """A function listing the PostgreSQL backend pids connected to the database of ``db_url``
    (the server is local, so their CPU is readable from /proc)."""
    name = db_url.rsplit("/", 1)[1]

    def pids() -> list[int]:
        admin = create_engine(PG_ADMIN)
        try:
            with admin.connect() as conn:
                rows = conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                    {"name": name},
                )
                return [int(r[0]) for r in rows]
        finally:
            admin.dispose()

    return pids


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    name: str
    deliveries: int
    seconds: float  # first to last delivery
    rate: float  # deliveries/s over that span
    p50_ms: float
    p99_ms: float
    send_rate: float  # messages or events handed over per second by the bench process
    duplicates: int
    worker_cpu_ms: float  # worker processes' CPU per delivery
    db_cpu_ms: float  # PostgreSQL backends' CPU per delivery
    sender_cpu_ms: float  # the bench process's CPU (sending or emitting) per delivery
    machine_busy: float  # fraction of all cores busy during the phase
    others: float  # cores used by processes outside the bench during the phase


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def figures(name: str, stats: Stats, sent: int, send_seconds: float, cpu: Cpu) -> Figures:
    arrivals = sorted(stats.arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    latencies = sorted(stats.latencies)
    return Figures(
        name=name,
        deliveries=len(arrivals),
        seconds=span,
        # n arrivals enclose n-1 intervals.
        rate=(len(arrivals) - 1) / span if span > 0 else float("nan"),
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        send_rate=sent / send_seconds,
        duplicates=stats.duplicates,
        worker_cpu_ms=1000 * cpu.worker / max(1, len(arrivals)),
        db_cpu_ms=1000 * cpu.db / max(1, len(arrivals)),
        sender_cpu_ms=1000 * cpu.sender / max(1, len(arrivals)),
        machine_busy=cpu.busy,
        others=cpu.others,
    )


# --- 1. bare Dramatiq ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """A running, warmed-up bare-Dramatiq deployment and the actor the bench sends with."""

    actor: Any  # dramatiq.Actor[[float, int], None]: sent_at (time.time()), sequence number
    worker: subprocess.Popen[bytes]
    procs: Procs


@contextlib.contextmanager
def baseline_deployment(
    args: argparse.Namespace, receiver: Receiver, work: Path
) -> Iterator[Baseline]:
    """``args.workers`` x ``args.threads`` dramatiq workers of the bare actor in a Redis
    namespace of their own, warmed up (every process importing done, every thread's connection
    open) with the receiver reset; stopped and their namespace dropped on the way out."""
    from bench import baseline_actor

    namespace = f"bench-base-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        BENCH_REDIS_URL=REDIS_URL, BENCH_NAMESPACE=namespace, BENCH_RECEIVER_URL=receiver.url
    )
    procs = Procs(work)
    broker = baseline_actor.make_broker(REDIS_URL, namespace)  # the workers' namespace
    actor = baseline_actor.declare(broker)
    try:
        worker = procs.start(
            "baseline-worker",
            [
                sys.executable,
                "-m",
                "dramatiq",
                "bench.baseline_actor:setup",
                "--processes",
                str(args.workers),
                "--threads",
                str(args.threads),
                "--queues",
                baseline_actor.QUEUE,
            ],
            env,
        )
        warm = args.workers * args.threads * 4
        receiver.reset()
        for i in range(warm):
            actor.send(time.time(), -1 - i)
        receiver.wait_for(warm, args.timeout, procs.check)
        receiver.reset()
        yield Baseline(actor, worker, procs)
    finally:
        procs.stop_all()
        broker.close()
        drop_namespace(namespace)


def run_baseline(args: argparse.Namespace, receiver: Receiver, work: Path) -> Figures:
    with baseline_deployment(args, receiver, work) as base:
        n = args.events * STEPS

        def send(i: int) -> None:
            base.actor.send(time.time(), i)

        meter = CpuMeter(base.worker.pid, [], [receiver.pid, *redis_server_pids()])
        send_seconds = in_threads(n, args.senders, send, args.timeout)
        receiver.wait_for(n, args.timeout, base.procs.check)
        cpu = meter.stop()
        time.sleep(0.2)  # let a stray duplicate land before counting
        return figures("bare Dramatiq", receiver.collect(), n, send_seconds, cpu)


# --- 2. LinkTime end to end ----------------------------------------------------------------------


@dataclass(frozen=True)
class LinkTime:
    """A running LinkTime deployment on a scratch PostgreSQL database: ``hub`` is bound to no
    broker (the caller binds one to emit in process, or starts ``linktime serve`` with
    ``env``)."""

    hub: Hub
    account_id: str
    api_key: str
    db_url: str
    env: dict[str, str]  # of the linktime processes
    procs: Procs
    scheduler: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]


@contextlib.contextmanager
def linktime_deployment(
    args: argparse.Namespace,
    receiver: Receiver,
    work: Path,
    workflows_in: list[Any] | None = None,
    scheduler_env: dict[str, str] | None = None,
) -> Iterator[LinkTime]:
    """A scratch database (migrated), one ``business`` account, one enabled
    ``booking.created`` workflow of STEPS ``webhook.call`` steps to ``receiver`` (``/s0`` ..
    ``/s4``) or else ``workflows_in`` (``workflows.WorkflowIn``), ``linktime scheduler`` (its
    environment plus ``scheduler_env``) and ``linktime worker`` (``args.workers`` x
    ``args.threads``) in a broker namespace of their own; all removed on the way out."""
    from linktime import workflows
    from linktime.accounts import create_account
    from linktime.engine import Hub
    from linktime.settings import Settings
    from linktime.testing import scratch_database

    namespace = f"lt-bench-{uuid.uuid4().hex[:8]}"
    secret_key = uuid.uuid4().hex
    procs = Procs(work)
    with scratch_database(PG_ADMIN, "lt_bench_") as db_url:
        hub = Hub(
            Settings(
                data_dir=work / "hub",
                database_url=db_url,
                redis_url=REDIS_URL,
                broker_namespace=namespace,
                secret_key=secret_key,
                load_plugins="webhook",  # only what is measured: other plugins may be mid-edit
            )
        )
        try:
            hub.migrate()
            account = create_account(hub, "bench", "business")
            steps = [
                {"action": "webhook.call", "settings": {"url": f"{receiver.url}/s{i}"}}
                for i in range(STEPS)
            ]
            for workflow in workflows_in or [
                workflows.WorkflowIn(
                    name="bench", trigger="booking.created", enabled=True, steps=steps
                )
            ]:
                workflows.create(hub, account.id, workflow)
            env = clean_env(
                LINKTIME_DATABASE_URL=db_url,
                LINKTIME_REDIS_URL=REDIS_URL,
                LINKTIME_BROKER_NAMESPACE=namespace,
                LINKTIME_SECRET_KEY=secret_key,
                LINKTIME_DATA_DIR=str(work / "procs"),
                LINKTIME_CONFIG=str(work / "no-such-linktime.toml"),
                LINKTIME_LOAD_PLUGINS="webhook",
                LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK,
            )
            scheduler = procs.start(
                "linktime-scheduler", [LINKTIME, "scheduler"], {**env, **(scheduler_env or {})}
            )
            worker = procs.start(
                "linktime-worker",
                [
                    LINKTIME,
                    "worker",
                    "--processes",
                    str(args.workers),
                    "--threads",
                    str(args.threads),
                ],
                env,
            )
            yield LinkTime(hub, account.id, account.api_key, db_url, env, procs, scheduler, worker)
        finally:
            procs.stop_all()
            hub.close()
            drop_namespace(namespace)


def run_linktime(args: argparse.Namespace, receiver: Receiver, work: Path) -> tuple[Figures, str]:
    from linktime.models import sample_event
    from linktime.worker import bind, make_broker

    with linktime_deployment(args, receiver, work) as lt:
        hub, procs = lt.hub, lt.procs
        broker = None
        profiler: subprocess.Popen[bytes] | None = None
        try:
            # Send right after commit, as the API does; the scheduler only re-sends late runs.
            broker = make_broker(hub)
            bind(hub, broker)
            template = sample_event().model_dump(mode="json")

            def emit(event_id: str) -> None:
                # One booking per event, as real traffic has: events of one booking serialise
                # on its state row. sent_at rides along as an extra event field; webhooks carry
                # it in data.event.
                booking = {**template["booking"], "uid": f"bk_{event_id}"}
                event = {**template, "id": event_id, "booking": booking, "sent_at": time.time()}
                hub.emit(event, account_id=lt.account_id)

            warm = args.workers * args.threads * 2
            receiver.reset()
            for i in range(warm):
                emit(f"evt_warm_{i}")
            receiver.wait_for(warm * STEPS, args.timeout, procs.check)
            receiver.reset()

            if args.profile:
                profiler = start_profiler(lt.worker.pid, Path(args.profile), args.profile_gil)
            meter = CpuMeter(
                lt.worker.pid,
                [lt.scheduler.pid],
                [receiver.pid, *redis_server_pids()],
                backend_pids(lt.db_url),
            )
            send_seconds = in_threads(
                args.events, args.senders, lambda i: emit(f"evt_{i}"), args.timeout
            )
            n = args.events * STEPS
            receiver.wait_for(n, args.timeout, procs.check)
            cpu = meter.stop()
            if profiler is not None:
                stop_profiler(profiler)
                profiler = None
            time.sleep(0.2)
            result = figures(
                "LinkTime end to end", receiver.collect(), args.events, send_seconds, cpu
            )
            return result, verify_runs(lt.db_url, args.events + warm, args.timeout)
        finally:
            if profiler is not None:
                stop_profiler(profiler)
            if broker is not None:
                broker.close()


def verify_runs(db_url: str, expected: int, timeout: float) -> str:
    """Every run ended ``succeeded``. A run's last delivery lands just before its final commit,
    so wait (bounded) for the stragglers."""
    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, count(*) FROM runs GROUP BY status"))
                counts: dict[str, int] = {r[0]: int(r[1]) for r in rows}
            if counts.get("succeeded", 0) == expected and len(counts) == 1:
                return f"all {expected} runs succeeded"
            if time.monotonic() > deadline:
                raise RuntimeError(f"runs did not all succeed (expected {expected}): {counts}")
            time.sleep(0.1)
    finally:
        engine.dispose()


# --- optional profile ----------------------------------------------------------------------------


def start_profiler(pid: int, out: Path, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy over the worker and its forked processes, for the measured phase only. Without
    ``gil`` it samples every thread not idle (waits on PostgreSQL included); with it, only the
    thread holding each process's GIL (where the CPU goes). Sampling costs the workers some CPU:
    a profiled run's figures are not the benchmark's figures."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            *(["--gil"] if gil else []),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT makes py-spy record stop sampling and write its output.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- report --------------------------------------------------------------------------------------


def code_version(src: str | None) -> str:
    """Which LinkTime code is measured: the --src tree, or this checkout's commit and the files
    under core/ and plugins/webhook/ that differ from it."""
    if src:
        return f"LinkTime code from {src}"
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "core", "plugins/webhook"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "LinkTime code: installed (no git information)"
    dirty = [line[3:] for line in changed if line.strip()]
    return f"LinkTime code: commit {head}" + (
        f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean)"
    )


def table(rows: list[Figures]) -> str:
    lines = [
        "| system              | deliveries | seconds | deliveries/s | p50 ms | p99 ms "
        "| sent/s | dup | worker CPU ms/dlv | PG CPU ms/dlv | machine busy | others, cores |",
        "|---------------------|-----------:|--------:|-------------:|-------:|-------:"
        "|-------:|----:|------------------:|--------------:|-------------:|--------------:|",
    ]
    for f in rows:
        lines.append(
            f"| {f.name:<19} | {f.deliveries:>10} | {f.seconds:>7.2f} | {f.rate:>12,.0f} "
            f"| {f.p50_ms:>6,.0f} | {f.p99_ms:>6,.0f} | {f.send_rate:>6,.0f} | {f.duplicates:>3} "
            f"| {f.worker_cpu_ms:>17.2f} | {f.db_cpu_ms:>13.2f} | {f.machine_busy:>12.0%} "
            f"| {f.others:>13.2f} |"
        )
    return "\n".join(lines)


def json_figures(ratio: float, base: Figures, lt: Figures) -> list[Figure]:
    """The verdict (median ratio) and, for context, the last round's rates and CPU."""
    base_cpu = base.worker_cpu_ms + base.sender_cpu_ms
    lt_cpu = lt.worker_cpu_ms + lt.db_cpu_ms + lt.sender_cpu_ms
    return [
        Figure(
            "webhooks",
            "LinkTime/bare Dramatiq deliveries/s (median)",
            ratio,
            "x",
            f">= {TARGET_RATIO}",
            ratio >= TARGET_RATIO,
        ),
        Figure("webhooks", "LinkTime deliveries/s", lt.rate, "/s", "", None),
        Figure("webhooks", "bare Dramatiq deliveries/s", base.rate, "/s", "", None),
        Figure("webhooks", "LinkTime CPU per delivery", lt_cpu, "ms", "", None),
        Figure("webhooks", "bare Dramatiq CPU per delivery", base_cpu, "ms", "", None),
    ]


def verdict(ratio: float) -> str:
    return "PASS" if ratio >= TARGET_RATIO else "FAIL"


def _interrupt(signum: int, frame: FrameType | None) -> Any:
    # SIGTERM behaves like Ctrl-C: unwind through every finally, which cleans up.
    raise KeyboardInterrupt


class Scratch:
    """A bench's temporary directory, for its subprocesses' logs: kept (its path printed) when
    ``keep`` is still set at the end, where the logs explain a failure; removed otherwise."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep = True  # until the run completes


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Scratch]:
    """A bench's run: SIGTERM unwinds like Ctrl-C through every clean-up inside (even when the
    bench was started with SIGINT ignored, as a script's background job), then exits 130."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = Scratch(prefix)
    try:
        yield run
    except KeyboardInterrupt:
        run.keep = False
        print("interrupted; cleaned up", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if run.keep:
            print(f"subprocess logs kept in {run.path}", file=sys.stderr)
        else:
            shutil.rmtree(run.path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", "-m", type=int, default=2000, help="M events (M*5 deliveries)")
    parser.add_argument("--workers", "-w", type=int, default=2, help="W worker processes")
    parser.add_argument("--threads", "-t", type=int, default=8, help="T threads per process")
    parser.add_argument("--senders", type=int, default=4, help="bench threads sending/emitting")
    parser.add_argument("--rounds", type=int, default=1, help="repeat both phases this often")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on every wait (s)")
    parser.add_argument(
        "--profile",
        help="py-spy raw (collapsed) profile of the LinkTime worker "
        "during the measured phase, to this file (slows the run); "
        "summarise it with bench/profile_top.py",
    )
    parser.add_argument(
        "--src",
        help="measure the LinkTime tree in this directory (its core/ and "
        "plugins/webhook/, e.g. a `git archive` snapshot) instead of the installed "
        "one",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="profile only GIL-holding threads (CPU) rather than all busy ones",
    )
    parser.add_argument("--json", help="write the figures and verdict to this file")
    args = parser.parse_args()
    if args.src:
        src = Path(args.src).resolve()
        SRC_PATHS.extend([str(src / "core"), str(src / "plugins" / "webhook")])
        sys.path[:0] = SRC_PATHS

    cores = os.cpu_count()
    print(
        f"webhook delivery bench: {cores} cores, M={args.events} events "
        f"({args.events * STEPS} deliveries per system), W={args.workers} processes, "
        f"T={args.threads} threads, {args.senders} sender threads; Redis, PostgreSQL, the "
        "receiver and the bench share the CPU",
        flush=True,
    )
    print(code_version(args.src), flush=True)
    failed = False
    with scratch("lt-bench-") as run:
        work = run.path
        with Receiver() as receiver:
            rate = self_test(receiver.url)
            print(f"receiver self-test: {rate:,.0f} req/s (32 keep-alive connections)", flush=True)
            ratios: list[float] = []
            for round_no in range(1, args.rounds + 1):
                # Each system goes first in every other round: the shared machine's speed
                # drifts, and a fixed order would hand that drift to one of them.
                if round_no % 2:
                    base = run_baseline(args, receiver, work)
                    lt, verified = run_linktime(args, receiver, work)
                else:
                    lt, verified = run_linktime(args, receiver, work)
                    base = run_baseline(args, receiver, work)
                ratio = lt.rate / base.rate
                ratios.append(ratio)
                if args.rounds > 1:
                    print(f"\nround {round_no}/{args.rounds}")
                print(f"\n{table([base, lt])}")
                print(
                    f"ratio LinkTime/baseline deliveries/s = {ratio:.2f}  "
                    f"(target >= {TARGET_RATIO})  {verdict(ratio)}; {verified}"
                )
                # Less sensitive to other load than the throughput ratio: what one delivery
                # costs in CPU, sending/ingesting and (for LinkTime) PostgreSQL included.
                base_cpu = base.worker_cpu_ms + base.sender_cpu_ms
                lt_cpu = lt.worker_cpu_ms + lt.db_cpu_ms + lt.sender_cpu_ms
                print(
                    f"CPU ms per delivery: baseline {base_cpu:.2f} (workers "
                    f"{base.worker_cpu_ms:.2f} + sending {base.sender_cpu_ms:.2f}); LinkTime "
                    f"{lt_cpu:.2f} (workers {lt.worker_cpu_ms:.2f} + PostgreSQL "
                    f"{lt.db_cpu_ms:.2f} + Hub.emit {lt.sender_cpu_ms:.2f}); "
                    f"baseline/LinkTime = {base_cpu / lt_cpu:.2f}"
                )
                for f in (base, lt):
                    if f.others > NOISY_CORES:
                        print(
                            f"warning: other processes used {f.others:.2f} cores during the "
                            f"{f.name} phase: its figures are disturbed"
                        )
                sys.stdout.flush()
            ratio = statistics.median(ratios)
            if args.rounds > 1:
                listed = ", ".join(f"{r:.2f}" for r in ratios)
                print(f"\nratios {listed}; median {ratio:.2f}  {verdict(ratio)}")
            failed = ratio < TARGET_RATIO
            if args.json:
                write_json(args.json, json_figures(ratio, base, lt))
        run.keep = False
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
