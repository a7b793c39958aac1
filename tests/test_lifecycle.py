"""The plugins' ``startup`` and ``shutdown`` hooks in every process that runs LinkTime: a real
plugin distribution records each call, from real ``linktime serve``, ``worker`` and
``scheduler`` processes (and Dramatiq's own entry) started and stopped by signals."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from linktime import lifecycle, plugins, workflows
from linktime.accounts import create_account
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.settings import Settings
from linktime.testing import HttpReceiver
from linktime.worker import bind, make_broker

from .conftest import delete_namespace
from .procs import LINKTIME, clean_env, serve_with_account, start, stop
from .test_crash import wait_run
from .test_plugins import install_distribution

DISTRIBUTION = "lifecycle-probe"

# Each hook call appends a JSON line to $LIFE_LOG: the process, its roles and its threads
# (the in-process worker's and scheduler's must not be running at either end).
PROBE = """
import asyncio, json, os, signal, threading

import httpx
from pydantic import BaseModel
from linktime import ActionType, Result, hookimpl

opened = {}


def note(event, context):
    threads = sorted(
        f"{type(t).__module__}.{type(t).__name__}:{t.name}" for t in threading.enumerate()
    )
    record = {"event": event, "pid": os.getpid(), "roles": sorted(context.roles),
              "threads": threads}
    with open(os.environ["LIFE_LOG"], "a") as log:
        log.write(json.dumps(record) + "\\n")


@hookimpl
async def startup(context):
    if os.environ.get("LIFE_FAIL"):
        raise RuntimeError("the pool is out of water")
    opened["loop"] = asyncio.get_running_loop()
    opened["client"] = httpx.AsyncClient(base_url=os.environ.get("LIFE_TARGET", ""))
    if os.environ.get("LIFE_TARGET"):
        await opened["client"].get("/opened")  # a pooled connection, on the startup loop
    note("startup", context)
    if os.environ.get("LIFE_STOP_IN_STARTUP"):  # Ctrl-C while the process is starting
        os.kill(os.getpid(), getattr(signal, os.environ["LIFE_STOP_IN_STARTUP"]))


@hookimpl
async def shutdown(context):
    await opened.pop("client").aclose()
    note("shutdown", context)


class NoSettings(BaseModel):
    pass


async def ping(ctx):
    if asyncio.get_running_loop() is not opened["loop"]:
        return Result.fail("not the loop startup ran on")
    answer = await opened["client"].post("/used")
    return Result.ok(external_id=f"used-{answer.status_code}")


@hookimpl
def register_actions(register):
    register(ActionType("life.ping", "Ping the pool", NoSettings, ping))
"""

IN_PROCESS_THREADS = (
    "dramatiq.worker.WorkerThread:",
    "dramatiq.worker.ConsumerThread:",
    "threading.Thread:linktime-scheduler",
)


@dataclass(frozen=True)
class Probe:
    site: Path  # on PYTHONPATH: the probe distribution
    log: Path  # its hooks' JSON lines

    def env(self, **values: str) -> dict[str, str]:
        return clean_env(
            PYTHONPATH=str(self.site),
            LIFE_LOG=str(self.log),
            LINKTIME_LOAD_PLUGINS="life",
            **values,
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def wait_calls(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The hook calls, once at least ``count`` have been recorded."""
        deadline = time.monotonic() + timeout
        while len(calls := self.calls()) < count:
            assert time.monotonic() < deadline, f"{count} hook calls expected, got {calls}"
            time.sleep(0.05)
        return calls


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    site = tmp_path / "site"
    install_distribution(site, DISTRIBUTION, "lifecycle_probe", PROBE, "life")
    return Probe(site, tmp_path / "hooks.jsonl")


@pytest.fixture
def services(pg_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    """The environment of a deployment at scale: a migrated PostgreSQL and a Redis namespace."""
    namespace = f"lt-life-{uuid.uuid4().hex[:8]}"
    hub = Hub(Settings(database_url=pg_url, secret_key="life", load_plugins=""))
    hub.migrate()
    hub.close()
    yield {
        "LINKTIME_DATABASE_URL": pg_url,
        "LINKTIME_REDIS_URL": redis_url,
        "LINKTIME_BROKER_NAMESPACE": namespace,
        "LINKTIME_SECRET_KEY": "life",
    }
    delete_namespace(redis_url, namespace)


def signalled(proc: subprocess.Popen[bytes], how: str) -> int:
    """Stop ``proc`` cleanly and return its exit code: Ctrl-C in a terminal (SIGINT to its
    process group), or a process manager's SIGTERM to the process it started."""
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=30)


def assert_started_and_stopped_once(
    calls: list[dict[str, Any]], pids: set[int], roles: list[str]
) -> None:
    """Each of ``pids`` called startup, then shutdown, once each, with ``roles``."""
    for pid in pids:
        mine = [(c["event"], c["roles"]) for c in calls if c["pid"] == pid]
        assert mine == [("startup", roles), ("shutdown", roles)], calls
    assert {c["pid"] for c in calls} == pids


def running_in_process(call: dict[str, Any]) -> list[str]:
    return [t for t in call["threads"] if t.startswith(IN_PROCESS_THREADS)]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_embedded_serve_starts_plugins_before_its_worker_and_stops_them_after(
    probe: Probe, tmp_path: Path, http_receiver: HttpReceiver, how: str
) -> None:
    served = serve_with_account(probe.env(LIFE_TARGET=http_receiver.url), tmp_path)
    try:
        headers = {"Authorization": f"Bearer {served.key}"}
        created = httpx.post(
            f"{served.base}/v1/workflows",
            headers=headers,
            json={
                "name": "ping",
                "trigger": "booking.created",
                "enabled": True,
                "steps": [{"action": "life.ping", "settings": {}}],
            },
        )
        assert created.status_code == 201, created.text
        event = sample_event(id="evt_life").model_dump(mode="json")
        [run] = httpx.post(f"{served.base}/v1/events", headers=headers, json=event).json()["runs"]
        # The async step used the client the async startup opened, on the same loop.
        assert wait_run(served.base, headers, run["id"])["status"] == "succeeded"
        assert [r.path for r in http_receiver.requests] == ["/opened", "/used"]
        assert signalled(served.proc, how) in (0, -signal.SIGTERM)
    finally:
        stop([served.proc])
    calls = probe.calls()
    all_three = ["api", "scheduler", "worker"]
    assert_started_and_stopped_once(calls, {served.proc.pid}, all_three)
    started, stopped = calls
    assert running_in_process(started) == []  # before the worker and scheduler start
    assert running_in_process(stopped) == []  # after they stopped
    assert "Application shutdown complete" in served.log.read_text()


def test_serve_with_redis_is_the_api_alone(
    probe: Probe, tmp_path: Path, services: dict[str, str]
) -> None:
    served = serve_with_account(probe.env(**services), tmp_path)
    try:
        assert probe.wait_calls(1)[0]["event"] == "startup"
        assert signalled(served.proc, "SIGTERM") in (0, -signal.SIGTERM)
    finally:
        stop([served.proc])
    assert_started_and_stopped_once(probe.calls(), {served.proc.pid}, ["api"])


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_each_worker_process_starts_and_stops_the_plugins_once(
    probe: Probe,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    services: dict[str, str],
    http_receiver: HttpReceiver,
    how: str,
) -> None:
    env = probe.env(LIFE_TARGET=http_receiver.url, **services)
    worker = start(["worker", "--processes", "2", "--threads", "2"], env, tmp_path, tmp_path / "w")
    # This process saves the workflow and emits the event, straight to the broker.
    monkeypatch.syspath_prepend(str(probe.site))
    hub = Hub(
        Settings(
            database_url=services["LINKTIME_DATABASE_URL"],
            redis_url=services["LINKTIME_REDIS_URL"],
            broker_namespace=services["LINKTIME_BROKER_NAMESPACE"],
            secret_key="life",
            load_plugins="life",
        )
    )
    bind(hub, make_broker(hub))
    try:
        started = probe.wait_calls(2)
        account = create_account(hub, "life", "free")
        steps = [{"action": "life.ping", "settings": {}}]
        wf = workflows.WorkflowIn(name="ping", trigger="booking.created", enabled=True, steps=steps)
        workflows.create(hub, account.id, wf)
        [run_id] = hub.emit(sample_event(id="evt_life"), account_id=account.id).run_ids
        http_receiver.wait_for(3, timeout=30)  # /opened by each process, then /used
        # A clean stop lets the step under way finish before the plugins shut down.
        assert signalled(worker, how) == 0, (tmp_path / "w").read_text()[-3000:]
        # The step used the client its process's async startup opened, on the same loop.
        assert get_run(hub, account.id, run_id).status == "succeeded"
    finally:
        stop([worker])
        hub.close()
    calls = probe.calls()
    pids = {c["pid"] for c in started}
    assert len(pids) == 2 and worker.pid not in pids  # Dramatiq's worker processes, not main
    assert_started_and_stopped_once(calls, pids, ["worker"])
    assert all(running_in_process(c) == [] for c in calls if c["event"] == "shutdown")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stop_asked_while_starting_still_shuts_the_plugins_down(
    probe: Probe, tmp_path: Path, services: dict[str, str], how: str
) -> None:
    env = probe.env(**services, LIFE_STOP_IN_STARTUP=how)
    scheduler = start(["scheduler"], env, tmp_path, tmp_path / "s")
    try:
        assert scheduler.wait(timeout=60) == 0, (tmp_path / "s").read_text()[-3000:]
    finally:
        stop([scheduler])
    assert_started_and_stopped_once(probe.calls(), {scheduler.pid}, ["scheduler"])


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_the_scheduler_starts_and_stops_the_plugins_once(
    probe: Probe, tmp_path: Path, services: dict[str, str], how: str
) -> None:
    scheduler = start(["scheduler"], probe.env(**services), tmp_path, tmp_path / "s")
    try:
        probe.wait_calls(1)
        assert signalled(scheduler, how) == 0, (tmp_path / "s").read_text()[-3000:]
    finally:
        stop([scheduler])
    assert_started_and_stopped_once(probe.calls(), {scheduler.pid}, ["scheduler"])


STARTUP_FAILED = (
    "cannot start:\n  plugin life (lifecycle-probe): startup failed: RuntimeError: "
    "the pool is out of water"
)


@pytest.mark.parametrize(
    "command",
    [
        [LINKTIME, "serve", "--port", "1"],
        [LINKTIME, "worker"],
        [LINKTIME, "scheduler"],
        [sys.executable, "-m", "dramatiq", "linktime.worker:setup", "--processes", "1"],
    ],
    ids=["serve", "worker", "scheduler", "dramatiq"],
)
def test_a_failing_startup_stops_the_process_naming_the_plugin(
    probe: Probe, tmp_path: Path, services: dict[str, str], command: list[str]
) -> None:
    env = probe.env(LIFE_FAIL="1", **services)
    if command[1] == "serve":
        env.pop("LINKTIME_REDIS_URL")  # the embedded server, which would run steps
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert f"Error: {STARTUP_FAILED}" in done.stderr
    assert probe.calls() == []


def test_dramatiq_entry_refuses_what_linktime_worker_refuses(
    tmp_path: Path, services: dict[str, str]
) -> None:
    env = clean_env(**services, LINKTIME_LOAD_PLUGINS="webhook", LINKTIME_STEP_LEASE_SECONDS="5")
    done = subprocess.run(
        [sys.executable, "-m", "dramatiq", "linktime.worker:setup", "--processes", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Error: cannot start:\n  action 'webhook.call' (linktime-webhook) may take 15s" in (
        done.stderr
    )


# --- in one process: order, and a shutdown that fails -----------------------------------------

RECORDER = """
from linktime import hookimpl

def note(what):
    with open({log!r}, "a") as log:
        log.write(what + "\\n")

@hookimpl
def startup(context):
    note("startup {name}")

@hookimpl
def shutdown(context):
    note("shutdown {name}")
    if "{name}" == "first":
        raise RuntimeError("cannot close")
"""


def test_shutdown_runs_in_reverse_and_one_failing_stops_none_of_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "order"
    for name in ("first", "second"):
        source = RECORDER.format(name=name, log=str(log))
        install_distribution(tmp_path, f"{name}-dist", f"{name}_mod", source, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = plugins.load("first,second")
    context = lifecycle.ProcessContext(frozenset({"worker"}), Settings(secret_key="k"))
    lifecycle.start(registry, context)
    lifecycle.stop(registry, context)

    order = log.read_text().splitlines()
    assert order == ["startup first", "startup second", "shutdown second", "shutdown first"]
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failed == ["plugin first (first-dist): shutdown failed"]


def test_a_failing_startup_shuts_down_only_the_plugins_already_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "order"
    failing = RECORDER.replace('note("startup {name}")', 'raise RuntimeError("no pool")')
    for name, source in (("first", RECORDER), ("second", failing), ("third", RECORDER)):
        code = source.format(name=name, log=str(log))
        # Module names of their own: the test above imported first_mod and second_mod.
        install_distribution(tmp_path, f"{name}-dist", f"{name}_failing_mod", code, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = plugins.load("first,second,third")
    context = lifecycle.ProcessContext(frozenset({"worker"}), Settings(secret_key="k"))
    with pytest.raises(
        lifecycle.StartFailed, match=re.escape("plugin second (second-dist): startup failed")
    ):
        lifecycle.start(registry, context)
    # "first" started and is closed again; "second" failed and "third" never started.
    assert log.read_text().splitlines() == ["startup first", "shutdown first"]
