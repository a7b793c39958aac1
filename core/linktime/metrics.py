"""Prometheus metrics (``prometheus_client``): what the engine, the scheduler and ingest count,
and the exposition ``GET /metrics`` serves.

Labels are few and bounded (event type, trigger, action, status, outcome): never an account,
run or booking id. Counters and histograms are updated where the work happens, in memory, with
no query of their own; the two gauges of what waits (``linktime_runs_due``,
``linktime_broker_queue_messages``) are read at scrape time only.

Processes: with ``LINKTIME_METRICS_DIR`` set, every ``linktime`` command runs prometheus_client
in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the CLI before this module is
imported), so ``linktime serve``'s /metrics adds up the workers and the scheduler of its
machine. Unset (the embedded default, one process), each process counts in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, ParamSpec

import dramatiq
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, event, func, or_, select

from . import statements as sql
from .statuses import RunStatus
from .storage import Run

if TYPE_CHECKING:
    from .engine import Hub

log = logging.getLogger(__name__)
_P = ParamSpec("_P")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. Steps are HTTP calls (tens of ms to the action's timeout); waits before a first step
# or past a reminder's due time are the scheduler's interval up to minutes when backed up.
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

EVENTS = Counter(
    "linktime_events_received",
    "Booking events received, by type and outcome (accepted, replayed, rejected)",
    ["type", "outcome"],
)
SOURCE_REQUESTS = Counter(
    "linktime_source_requests",
    "Requests providers made to source connections, by source and outcome (refused: a bad, "
    "missing or stale signature; nothing of them is stored)",
    ["source", "outcome"],
)
RUNS_STARTED = Counter(
    "linktime_runs_started", "Runs whose first step attempt began, by trigger", ["trigger"]
)
RUNS_FINISHED = Counter(
    "linktime_runs_finished",
    "Runs that ended, by status (succeeded, failed, cancelled, skipped)",
    ["status"],
)
ATTEMPTS = Counter(
    "linktime_step_attempts",
    "Step attempts recorded, by action and outcome (succeeded, retrying, failed, "
    "blocked_by_plan, ...: the attempt's status)",
    ["action", "outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "linktime_step_attempt_duration_seconds",
    "How long a step attempt took, by action",
    ["action"],
    buckets=_STEP_BUCKETS,
)
IN_PROGRESS = Gauge(
    "linktime_step_attempts_in_progress",
    "Step attempts executing now, by action",
    ["action"],
    multiprocess_mode="livesum",
)
FIRST_STEP_SECONDS = Histogram(
    "linktime_event_to_first_step_seconds",
    "From an event's receipt (a replay's request) to its run's first attempt starting",
    buckets=_WAIT_BUCKETS,
)
REMINDER_LATENESS = Histogram(
    "linktime_reminder_lateness_seconds",
    "A time-triggered run's first attempt start minus its due time",
    buckets=_WAIT_BUCKETS,
)
TICK_SECONDS = Histogram(
    "linktime_scheduler_tick_duration_seconds",
    "How long a scheduler tick took (claiming due runs and handing them to the broker)",
    buckets=_TICK_BUCKETS,
)

# An event type outside the installed triggers is not a label value: anyone can send one.
UNKNOWN_TYPE = "unknown"


# conn.info key: the counts waiting for the transaction under way on that connection to commit.
_PENDING = "linktime.metrics.after_commit"


def after_commit(
    conn: Connection, count: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs
) -> None:
    """``count(*args, **kwargs)`` once ``conn``'s transaction commits, never if it rolls back:
    what a rolled-back transaction did (a cancel, a claim) did not happen, and its retry counts
    it. In autocommit (each statement commits itself) or outside a transaction: now. Counted
    just before the COMMIT is sent (SQLAlchemy's ``commit`` event): a COMMIT that fails after
    every statement succeeded is the one case still counted."""
    autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    if autocommit or not conn.in_transaction():
        count(*args, **kwargs)
    else:
        conn.info.setdefault(_PENDING, []).append(partial(count, *args, **kwargs))


def _count_pending(conn: Connection) -> None:
    for count in conn.info.pop(_PENDING, ()):
        count()


def _drop_pending(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


event.listen(Engine, "commit", _count_pending)
event.listen(Engine, "rollback", _drop_pending)


def event_received(event_type: str, outcome: str) -> None:
    EVENTS.labels(event_type, outcome).inc()


def source_request(source: str, outcome: str) -> None:
    SOURCE_REQUESTS.labels(source, outcome).inc()


def runs_finished(status: str, count: int = 1) -> None:
    if count:
        RUNS_FINISHED.labels(status).inc(count)


def first_attempt(trigger: str, waited: timedelta, *, reminder: bool) -> None:
    """A run's first attempt begins, ``waited`` after its event (or its due time)."""
    RUNS_STARTED.labels(trigger).inc()
    seconds = max(waited.total_seconds(), 0.0)
    (REMINDER_LATENESS if reminder else FIRST_STEP_SECONDS).observe(seconds)


def attempt_recorded(action: str, outcome: str, seconds: float) -> None:
    ATTEMPTS.labels(action, outcome).inc()
    ATTEMPT_SECONDS.labels(action).observe(seconds)


class _DueAndQueued(Collector):
    """The gauges read at scrape time: runs due now that no scheduler has handed out (the
    sweeper's query, counted; served by the ``due_at`` index) and the broker queue's length.
    A database or broker that does not answer leaves its gauge out of that scrape (logged)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        yield from self._gauge(
            "linktime_runs_due",
            "Runs due now that no scheduler has handed to the broker yet",
            self._due,
        )
        if self.hub.queue_length is not None:
            yield from self._gauge(
                "linktime_broker_queue_messages",
                "Messages waiting in the broker queue for a worker",
                self.hub.queue_length,
            )

    def _due(self) -> int:
        with self.hub.db.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count())
                    .select_from(Run)
                    .where(
                        Run.due_at <= self.hub.clock(),
                        or_(Run.status != RunStatus.RUNNING, Run.lease_until <= sql.DB_NOW),
                    )
                )
                or 0
            )

    @staticmethod
    def _gauge(name: str, text: str, read: Callable[[], int]) -> Iterable[Metric]:
        try:
            value = read()
        except Exception:
            log.warning("metrics: %s could not be read", name, exc_info=True)
            return
        yield GaugeMetricFamily(name, text, value=value)


class _ThisProcess(Collector):
    """The default registry's metrics (this process's counters, and process_* / python_*)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def _counted() -> CollectorRegistry:
    """Every process's counters (multiprocess mode), or this process's."""
    registry = CollectorRegistry()
    if MULTIPROCESS_ENV in os.environ:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    return registry


def exposition(hub: Hub, accept: str = "") -> tuple[bytes, str]:
    """A scrape's body and content type, in the format the scraper's ``Accept`` asks for
    (Prometheus text, or OpenMetrics): the counters, plus the scrape-time gauges of ``hub``."""
    registry = _counted()
    registry.register(_DueAndQueued(hub))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def serve_port(port: int, host: str) -> None:
    """Serve the counters on ``host``:``port`` (prometheus_client's own server, in a thread,
    with no token): a worker or a scheduler on a machine without ``linktime serve``. The gauges
    read at scrape time are ``serve``'s only: they are the same from anywhere."""
    start_http_server(port, addr=host, registry=_counted())
    log.info("metrics on %s port %d (/metrics)", host, port)


class ProcessExit(dramatiq.Middleware):
    """In multiprocess mode, a worker process that stops takes its in-progress gauge with it
    (``mark_process_dead``); its counters stay in the directory, still counted."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if MULTIPROCESS_ENV in os.environ:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
