"""Running the real ``linktime`` command as separate processes, for crash tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from linktime.testing import Received
from linktime.worker import QUEUE
from sqlalchemy import create_engine, text

LINKTIME = str(Path(sys.executable).parent / "linktime")


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKTIME_")}
    env.update(values)
    return env


def services_env(pg_url: str, redis_url: str, namespace: str, **values: str) -> dict[str, str]:
    """The environment of ``linktime`` processes over PostgreSQL and Redis (in a broker
    namespace of the test's own), with the webhook channel alone, allowed to reach loopback
    receivers, and a quick scheduler; ``values`` add to it."""
    from .conftest import LOOPBACK  # conftest imports this module (through browser.py)

    return clean_env(
        LINKTIME_DATABASE_URL=pg_url,
        LINKTIME_REDIS_URL=redis_url,
        LINKTIME_BROKER_NAMESPACE=namespace,
        LINKTIME_LOAD_PLUGINS="webhook",
        LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK,
        LINKTIME_SCHEDULER_INTERVAL="0.1",
        **values,
    )


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    # Its own session, so a kill -9 reaches every process it forked.
    return subprocess.Popen(
        [LINKTIME, *args],
        env=env,
        cwd=cwd,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill9(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up in {timeout}s")


def drain(redis_url: str, namespace: str, timeout: float = 60) -> None:
    """Return once every message in the broker has been processed, those a killed worker had
    fetched included. Dramatiq hands those back to the queue once the dead worker's heartbeat
    is older than 60 s, at a random later call; here every call looks, and 3 s of silence is
    enough (a live idle worker polls Redis every second). Call it once nothing hands out runs
    any more (the scheduler stopped): a send that has not happened by then never will."""
    broker = RedisBroker(
        url=redis_url,
        namespace=namespace,
        heartbeat_timeout=3000,
        maintenance_chance=MAINTENANCE_SCALE,
    )
    try:
        broker.join(QUEUE, timeout=int(timeout * 1000))
    finally:
        broker.close()


@dataclass(frozen=True)
class Served:
    """A running ``linktime serve`` and the API key of the account created before it."""

    proc: subprocess.Popen[bytes]
    key: str
    port: int
    base: str  # http://127.0.0.1:<port>
    log: Path


def serve_with_account(env: dict[str, str], cwd: Path, *account_args: str) -> Served:
    """Create an account with the CLI (``linktime accounts create *account_args``), start
    ``linktime serve`` on a free port in ``cwd`` and wait for its /healthz. If it does not come
    up, the end of its log is printed and the server stopped."""
    key = subprocess.run(
        [LINKTIME, "accounts", "create", *account_args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = cwd / "serve.log"
    proc = start(["serve", "--port", str(port)], env, cwd, log)
    try:
        wait_http(f"{base}/healthz")
    except BaseException:
        print(log.read_text()[-4000:])
        stop([proc])
        raise
    return Served(proc, key, port, base, log)


def step_states(database_url: str, run_id: str | None = None) -> dict[str, str]:
    """webhook-id → step status (of one run, or of all), straight from the database."""
    engine = create_engine(database_url)
    query = "SELECT id, status FROM run_steps" + (" WHERE run_id = :run" if run_id else "")
    with engine.connect() as conn:
        rows = conn.execute(text(query), {"run": run_id}).all()
    engine.dispose()
    return {"msg_" + r.id.removeprefix("stp_"): r.status for r in rows}


def assert_nothing_lost_nothing_resent(
    before_kill: dict[str, str], after: dict[str, str], received: list[Received]
) -> None:
    """Every step delivered; a step recorded as succeeded before the kill was never sent
    again; only the step in flight at the kill may have been sent twice."""
    sent = Counter(r.headers["webhook-id"] for r in received)
    assert set(after.values()) == {"succeeded"}
    assert set(sent) == set(after), "a step was never delivered"
    succeeded_before = {i for i, s in before_kill.items() if s == "succeeded"}
    in_flight = {i for i, s in before_kill.items() if s == "running"}
    assert succeeded_before, "the kill came before any step succeeded: the test proved nothing"
    for webhook_id in succeeded_before:
        assert sent[webhook_id] == 1, f"{webhook_id} succeeded before the kill, was re-sent"
    assert {i for i, n in sent.items() if n > 1} <= in_flight
