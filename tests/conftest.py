"""Shared fixtures: a fresh PostgreSQL database per test, Redis with a namespace per test, and
a running system (hub + Dramatiq worker + scheduler) over them. A missing service fails the
tests; it never skips them."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import pytest
import redis
from linktime import plugins, workflows
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionType
from linktime.api import create_app
from linktime.engine import Hub
from linktime.runs import get_run
from linktime.scheduler import Scheduler
from linktime.settings import Settings
from linktime.storage import Run
from linktime.testing import scratch_database
from linktime.worker import QUEUE, bind, make_broker, start_in_process
from litestar.testing import TestClient
from pydantic import BaseModel

# The browser stories' fixtures, for every test module (imported there, ruff sees them redefined).
from .browser import browser, viewport  # noqa: F401

PG = os.environ.get("LINKTIME_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("LINKTIME_TEST_REDIS", "redis://127.0.0.1:6379/0")
LOOPBACK = "127.0.0.0/8,::1/128"
TERMINAL = ("succeeded", "failed")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    with scratch_database(PG) as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    redis.Redis.from_url(REDIS).ping()
    return REDIS


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", LOOPBACK)


def fast_settings(**overrides: Any) -> Settings:
    """Test timings: retries in fractions of a second, lost work noticed within seconds."""
    values: dict[str, Any] = {
        "retry_schedule": [0.2, 0.2, 0.2],
        "requeue_after_seconds": 1.5,
        "step_lease_seconds": 5,
        "scheduler_interval": 0.05,
        "secret_key": "test-secret-key",
        "worker_threads": 4,
    }
    values.update(overrides)
    return Settings(**values)


class NoSettings(BaseModel):
    """The settings of a test action that takes none."""


def registry_with(*actions: ActionType, load: str | None = "") -> plugins.Registry:
    """The installed plugins named by ``load`` (none by default: the built-in triggers
    alone), plus test actions."""
    registry = plugins.load(load)
    for action in actions:
        registry.actions[action.name] = action
    return registry


class Clock:
    """A clock the test moves: the engine, the planner and the scheduler all read it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class CountingScheduler(Scheduler):
    """The real scheduler loop, counting the ticks it finishes, so that a test waits for the
    next ones instead of sleeping."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.ticks = 0
        self._ticked = threading.Condition()

    def tick(self) -> int:
        handed = super().tick()
        with self._ticked:
            self.ticks += 1
            self._ticked.notify_all()
        return handed

    def wait_ticks(self, count: int, timeout: float = 30) -> None:
        """Return once ``count`` more ticks have finished (a failed tick does not count)."""
        with self._ticked:
            target = self.ticks + count
            if not self._ticked.wait_for(lambda: self.ticks >= target, timeout):
                raise AssertionError(f"the scheduler did not tick {count} times in {timeout}s")


@dataclass
class System:
    hub: Hub
    broker: dramatiq.Broker
    worker: dramatiq.Worker | None = None
    scheduler: CountingScheduler | None = None

    def start(self) -> None:
        self.worker = start_in_process(self.hub, self.broker, self.hub.settings.worker_threads)
        self.scheduler = CountingScheduler(self.hub)
        self.scheduler.start()

    def settle(self, timeout: float = 30) -> None:
        """Return once everything due by now (by the test's clock) has been handed out and
        executed: two scheduler ticks finished after this call (the one under way may have
        read the clock before the test moved it), then every message in the broker, those
        ticks' included, acknowledged by the worker. A send that has not happened by then was
        not going to happen now; tests assert absence only after this."""
        assert self.scheduler is not None, "settle() needs a started system"
        self.scheduler.wait_ticks(2, timeout)
        self.broker.join(QUEUE, timeout=int(timeout * 1000))

    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        if self.worker:
            self.worker.stop()
        self.scheduler = self.worker = None

    def account(self, plan: str = "business") -> NewAccount:
        return create_account(self.hub, "test", plan)

    def workflow(self, account: NewAccount, steps: list[dict[str, Any]], **kw: Any) -> str:
        spec = workflows.WorkflowIn(
            name=kw.pop("name", "test workflow"),
            trigger=kw.pop("trigger", "booking.created"),
            enabled=kw.pop("enabled", True),
            steps=steps,
            **kw,
        )
        created, _ = workflows.create(self.hub, account.id, spec)
        return created.id

    def wait_run(self, account: NewAccount, run_id: str, timeout: float = 20) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            run = get_run(self.hub, account.id, run_id)
            if run.status in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")
            time.sleep(0.05)


@pytest.fixture
def make_system(tmp_path: Any, pg_url: str, redis_url: str) -> Iterator[Callable[..., System]]:
    """Build a hub on PostgreSQL with a Redis broker (own namespace); ``start()`` runs an
    in-process Dramatiq worker and a scheduler."""
    systems: list[System] = []

    def make(registry: Any = None, clock: Any = None, **overrides: Any) -> System:
        overrides.setdefault("broker_namespace", f"lt-test-{uuid.uuid4().hex[:8]}")
        settings = fast_settings(
            data_dir=tmp_path, database_url=pg_url, redis_url=redis_url, **overrides
        )
        hub = Hub(settings, registry=registry, **({"clock": clock} if clock else {}))
        hub.migrate()
        broker = make_broker(hub)
        bind(hub, broker)
        system = System(hub, broker)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop()
    for system in systems:
        system.broker.close()
        system.hub.close()
    for namespace in {system.hub.settings.broker_namespace for system in systems}:
        delete_namespace(redis_url, namespace)


def delete_namespace(redis_url: str, namespace: str) -> None:
    """Every key of a broker namespace: messages left behind (re-sends of finished runs, a killed
    worker's) and heartbeats would otherwise stay in Redis for good."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def system(make_system: Callable[..., System], allow_loopback: None) -> System:
    s = make_system()
    s.start()
    return s


@pytest.fixture
def running_api(system: System) -> Iterator[tuple[System, TestClient[Any]]]:
    """A running system (worker and scheduler) and a client of its API."""
    with TestClient(create_app(system.hub)) as client:
        yield system, client
