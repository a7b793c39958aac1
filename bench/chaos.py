"""Chaos: under kill -9 of workers, a Redis flush and a server restart, nothing is lost and
duplicates stay within the steps in flight at a kill.

    /work/main/.venv/bin/python bench/chaos.py --events 500 --rounds 2

The at-scale deployment as separate processes, on a scratch PostgreSQL database and a Redis
namespace of its own: ``linktime serve`` (the API), two ``linktime worker`` processes and
``linktime scheduler``, delivering to a loopback receiver. One enabled workflow of 5 signed
``webhook.call`` steps; EVENTS ``booking.created`` events, each its own booking, are posted to
``/v1/events`` at a steady pace from 4 threads, each retried with the same id until answered
(as a client would), so EVENTS x 5 deliveries. While they flow, by events posted:

    30%  kill -9 of worker 1; a fresh worker takes its place
    50%  the Redis namespace deleted: every queued message lost (a FLUSHALL, for this system)
    70%  kill -9 of the server; it is started again (posts fail meanwhile and are retried)
    85%  kill -9 of worker 2; a fresh worker takes its place

Right after each kill of a worker, the steps recorded as ``running`` are noted: those are in
flight (the receiver may have had the request when the worker died). Once every run has
finished, the scheduler is stopped and the broker drained (the killed workers' fetched messages
included, ``tests.procs.drain``), then the receiver's requests are counted by ``webhook-id``
(one per step, the same across retries):

- lost: a step never received, or a run that did not succeed;
- duplicates: a webhook-id received more than once; allowed only for a step in flight at a kill.

PASS when nothing is lost and every duplicate was in flight; exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/chaos.py` from anywhere
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from linktime.models import sample_event  # noqa: E402
from linktime.testing import HttpReceiver, Reply, scratch_database  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.webhooks import LOOPBACK, PG_ADMIN, REDIS_URL, STEPS, drop_namespace  # noqa: E402
from tests.procs import (  # noqa: E402
    LINKTIME,
    clean_env,
    drain,
    kill9,
    serve_with_account,
    start,
    step_states,
    stop,
    wait_http,
)

SECRET = "whsec_" + base64.b64encode(b"chaos-bench-signing-secret").decode()
POSTERS = 4


@dataclass
class Round:
    """What one round saw."""

    events: int
    in_flight: set[str] = field(default_factory=set)  # webhook-ids running at a kill
    chaos: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    expected: set[str] = field(default_factory=set)  # every step's webhook-id
    sent: Counter[str] = field(default_factory=Counter)  # webhook-id -> requests received
    finished_after: float = 0.0  # seconds from the last event answered to every run finished

    @property
    def lost(self) -> set[str]:
        return self.expected - set(self.sent)

    @property
    def duplicates(self) -> set[str]:
        return {i for i, n in self.sent.items() if n > 1}

    @property
    def ok(self) -> bool:
        succeeded = self.statuses == Counter({"succeeded": self.events})
        return succeeded and not self.lost and self.duplicates <= self.in_flight

    def report(self) -> str:
        dup = self.duplicates
        lines = [
            f"  events {self.events}, runs {dict(self.statuses)}, steps {len(self.expected)}",
            f"  received {sum(self.sent.values())} requests, {len(self.sent)} webhook-ids",
            f"  lost {len(self.lost)}",
            f"  duplicates {len(dup)} ({len(dup & self.in_flight)} of them in flight at a kill;"
            f" {len(self.in_flight)} steps were in flight at the kills)",
            f"  every run finished {self.finished_after:.1f} s after the last event was answered",
            *(f"  - {c}" for c in self.chaos),
            f"  {'PASS' if self.ok else 'FAIL'}",
        ]
        return "\n".join(lines)


class Poster:
    """Posts events 0..n-1 at ``rate`` per second from a few threads; each is retried with the
    same id until the server answers it, whatever happens to the server meanwhile."""

    def __init__(self, base: str, key: str, n: int, rate: float, timeout: float) -> None:
        self.base, self.n, self.rate, self.timeout = base, n, rate, timeout
        self.headers = {"Authorization": f"Bearer {key}"}
        self.posted = 0  # answered
        self.retries = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(POSTERS)]
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                while (i := next(self._next)) < self.n:
                    # The steady pace: event i goes out at i / rate seconds.
                    time.sleep(max(0.0, self._t0 + i / self.rate - time.monotonic()))
                    self._post(client, i)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def _post(self, client: httpx.Client, i: int) -> None:
        event = sample_event(id=f"evt_chaos_{i}").model_dump(mode="json")
        event["booking"]["uid"] = f"bk_chaos_{i}"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                r = client.post(f"{self.base}/v1/events", json=event, headers=self.headers)
                if r.status_code in (200, 201, 202):
                    with self._lock:
                        self.posted += 1
                    return
                if r.status_code < 500:
                    raise RuntimeError(f"event {i} refused: {r.status_code} {r.text}")
            except httpx.TransportError:
                pass  # the server is down: try again
            if time.monotonic() > deadline:
                raise TimeoutError(f"event {i} not accepted within {self.timeout}s")
            with self._lock:
                self.retries += 1
            time.sleep(0.2)


class Deployment:
    """The processes of one round, in ``workdir``."""

    def __init__(self, env: dict[str, str], workdir: Path, threads: int) -> None:
        self.env, self.workdir, self.threads = env, workdir, threads
        self.log = workdir / "procs.log"
        self.procs: dict[str, Any] = {}

    def start(self, name: str, args: list[str]) -> None:
        self.procs[name] = start(args, self.env, self.workdir, self.log)

    def worker(self, name: str) -> None:
        self.start(name, ["worker", "--processes", "1", "--threads", str(self.threads)])

    def stop_all(self) -> None:
        stop(self.procs.values())


def running_steps(db_url: str) -> set[str]:
    return {i for i, s in step_states(db_url).items() if s == "running"}


def run_statuses(db_url: str) -> Counter[str]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM runs GROUP BY status")).all()
    engine.dispose()
    return Counter({status: n for status, n in rows})


def wait_until_posted(poster: Poster, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while poster.posted < count:
        if poster.error is not None:
            raise poster.error
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {poster.posted} of {count} events posted in {timeout}s")
        time.sleep(0.05)


@dataclass(frozen=True)
class Options:
    events: int
    rate: float
    threads: int
    delay: float
    lease: float
    timeout: float


def one_round(opts: Options) -> Round:
    namespace = f"lt-chaos-{uuid.uuid4().hex[:8]}"
    receiver = HttpReceiver()
    # Each delivery takes ``delay`` at the receiver, so that a kill finds steps mid-request.
    receiver.default = Reply(delay=opts.delay)
    # A killed worker's connection is gone when the reply goes out: no traceback for that.
    receiver.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    outcome = Round(opts.events)
    try:
        with (
            scratch_database(PG_ADMIN, prefix="lt_chaos_") as db_url,
            tempfile.TemporaryDirectory(prefix="lt-chaos-") as tmp,
        ):
            workdir = Path(tmp)
            env = clean_env(
                LINKTIME_DATABASE_URL=db_url,
                LINKTIME_REDIS_URL=REDIS_URL,
                LINKTIME_BROKER_NAMESPACE=namespace,
                LINKTIME_SECRET_KEY="chaos-bench",
                LINKTIME_STEP_LEASE_SECONDS=str(opts.lease),
                # Every installed action's timeout must be below the lease.
                LINKTIME_LOAD_PLUGINS="webhook",
                LINKTIME_WEBHOOK_TIMEOUT=str(opts.lease / 2),
                LINKTIME_REQUEUE_AFTER_SECONDS=str(opts.lease / 2),
                LINKTIME_SCHEDULER_INTERVAL="0.2",
                LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK,
            )
            subprocess.run(
                [LINKTIME, "db", "upgrade"],
                env=env,
                cwd=workdir,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            deployment = Deployment(env, workdir, opts.threads)
            try:
                _play(opts, outcome, deployment, receiver, db_url, namespace)
            except BaseException:
                print(f"  procs.log ends:\n{deployment.log.read_text()[-3000:]}", file=sys.stderr)
                raise
            finally:
                deployment.stop_all()
    finally:
        receiver.close()
        drop_namespace(namespace)
    return outcome


def _play(
    opts: Options,
    outcome: Round,
    deployment: Deployment,
    receiver: HttpReceiver,
    db_url: str,
    namespace: str,
) -> None:
    served = serve_with_account(deployment.env, deployment.workdir, "--plan", "business")
    deployment.procs["serve"] = served.proc
    steps = [
        {"action": "webhook.call", "settings": {"url": f"{receiver.url}/s{i}", "secret": SECRET}}
        for i in range(STEPS)
    ]
    created = httpx.post(
        f"{served.base}/v1/workflows",
        headers={"Authorization": f"Bearer {served.key}"},
        json={"name": "chaos", "trigger": "booking.created", "enabled": True, "steps": steps},
    )
    created.raise_for_status()
    deployment.start("scheduler", ["scheduler"])
    deployment.worker("worker1")
    deployment.worker("worker2")

    poster = Poster(served.base, served.key, opts.events, opts.rate, opts.timeout)
    poster.start()

    def at(share: float) -> None:
        wait_until_posted(poster, int(opts.events * share), opts.timeout)

    def kill_worker(name: str) -> None:
        # A kill that finds nothing under way would prove little: wait for steps in flight
        # (other than those a worker killed before left running).
        deadline = time.monotonic() + opts.timeout
        while not running_steps(db_url) - outcome.in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no step running within {opts.timeout}s")
            time.sleep(0.02)
        kill9(deployment.procs[name])
        in_flight = running_steps(db_url)
        outcome.in_flight |= in_flight
        deployment.worker(name)
        outcome.chaos.append(
            f"{name} killed at {poster.posted} events answered, {len(receiver.requests)} "
            f"requests received: {len(in_flight)} steps in flight"
        )

    at(0.30)
    kill_worker("worker1")
    at(0.50)
    drop_namespace(namespace)
    outcome.chaos.append(f"Redis namespace flushed at {poster.posted} events")
    at(0.70)
    kill9(deployment.procs["serve"])
    down = time.monotonic()
    deployment.start("serve", ["serve", "--port", str(served.port)])
    wait_http(f"{served.base}/healthz")
    outcome.chaos.append(
        f"server killed at {poster.posted} events, answering again after "
        f"{time.monotonic() - down:.1f} s"
    )
    at(0.85)
    kill_worker("worker2")
    poster.join()
    outcome.chaos.append(f"{poster.retries} posts retried (server down or refusing)")

    answered = time.monotonic()
    deadline = answered + opts.timeout
    unfinished = ("queued", "running", "waiting", "scheduled")
    while True:
        outcome.statuses = run_statuses(db_url)
        total = sum(outcome.statuses.values())
        if total >= opts.events and not any(outcome.statuses[s] for s in unfinished):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished after {opts.timeout}s: {outcome.statuses}")
        time.sleep(0.5)
    outcome.finished_after = time.monotonic() - answered
    # Nothing hands out runs any more, and every message already handed out is processed.
    stop([deployment.procs["scheduler"]])
    drain(REDIS_URL, namespace, timeout=opts.timeout)
    outcome.expected = set(step_states(db_url))
    outcome.sent = Counter(r.headers["webhook-id"] for r in receiver.requests)


def rounds(opts: Options, n: int) -> Iterator[Round]:
    for i in range(n):
        print(f"round {i + 1} of {n}", flush=True)
        outcome = one_round(opts)
        print(outcome.report(), flush=True)
        yield outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=40.0, help="events posted per second")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--delay", type=float, default=0.02, help="receiver's delay per request")
    parser.add_argument("--lease", type=float, default=6.0, help="LINKTIME_STEP_LEASE_SECONDS")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="limit of every wait")
    args = parser.parse_args()
    opts = Options(args.events, args.rate, args.threads, args.delay, args.lease, args.timeout)
    results = list(rounds(opts, args.rounds))
    passed = all(r.ok for r in results)
    print(f"{'PASS' if passed else 'FAIL'}: {sum(r.ok for r in results)} of {len(results)} rounds")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
