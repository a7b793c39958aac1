"""Dramatiq wiring: the broker (Redis when ``LINKTIME_REDIS_URL`` is set, in-process otherwise),
the one actor that executes runs, and the in-process worker of the embedded default.

The broker only carries run ids that are due now; retry delays live in the database, so
Dramatiq's own retries only cover infrastructure errors (the database briefly unreachable).
"""

from __future__ import annotations

import functools
import logging

import dramatiq
from dramatiq.brokers.stub import StubBroker

from . import lifecycle, logs, metrics
from .engine import Hub
from .lifecycle import ProcessContext
from .plugins import Registry
from .settings import Settings

log = logging.getLogger(__name__)

QUEUE = "linktime"
ACTOR = "linktime.execute_run"


def make_broker(hub: Hub) -> dramatiq.Broker:
    if hub.settings.redis_url:
        # Imported here: the embedded default (no Redis) never loads redis-py.
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=hub.settings.redis_url, namespace=hub.settings.broker_namespace)
    return StubBroker()


def bind(hub: Hub, broker: dramatiq.Broker) -> dramatiq.Actor[[str], None]:
    """Declare the actor on ``broker`` and point the hub's enqueue at it."""
    dramatiq.set_broker(broker)

    def execute_run(run_id: str) -> None:
        hub.process_run(run_id)

    actor: dramatiq.Actor[[str], None] = dramatiq.actor(
        actor_name=ACTOR,
        queue_name=QUEUE,
        broker=broker,
        max_retries=5,
        min_backoff=500,
        max_backoff=30_000,
    )(execute_run)

    def enqueue(run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                actor.send(run_id)
            except Exception:  # the scheduler re-sends it once due: the database is the truth
                log.exception("could not enqueue run %s; the scheduler will re-send it", run_id)

    hub.enqueue = enqueue
    hub.queue_length = functools.partial(queue_length, broker)
    return actor


def queue_length(broker: dramatiq.Broker) -> int:
    """Messages waiting for a worker (not those a worker has fetched): the queue's Redis list
    (Dramatiq's ``<namespace>:<queue>``), or the in-process broker's queue."""
    if isinstance(broker, StubBroker):
        return int(broker.queues[QUEUE].qsize())
    return int(broker.client.llen(f"{broker.namespace}:{QUEUE}"))  # type: ignore[attr-defined]


class PluginLifecycle(dramatiq.Middleware):
    """Calls the plugins' ``shutdown`` hooks when this worker process stops, after its threads
    have finished the messages they held (Dramatiq's ``after_worker_shutdown``)."""

    def __init__(self, registry: Registry, context: ProcessContext) -> None:
        self.registry = registry
        self.context = context

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        lifecycle.stop(self.registry, self.context)


class PollTimeout(dramatiq.Middleware):
    """Sets the worker's ``worker_timeout`` (how long its consumers' polls of an empty queue
    back off to) before its consumers start: Dramatiq's command line has no option for it."""

    def __init__(self, milliseconds: int) -> None:
        self.milliseconds = milliseconds

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        worker.worker_timeout = self.milliseconds


def setup() -> None:
    """Entry for ``dramatiq linktime.worker:setup``: one hub per worker process, started as
    ``linktime worker`` starts (the same refusals), with the plugins' ``startup`` called here
    and their ``shutdown`` once the worker has stopped."""
    # Dramatiq runs with --skip-logging: this process logs as the `linktime` command does.
    settings = Settings()
    logs.configure(settings.log_format)
    hub = Hub(settings)
    if not hub.settings.redis_url:
        raise SystemExit(
            "linktime worker needs LINKTIME_REDIS_URL (the embedded default runs "
            "its worker inside `linktime serve`)"
        )
    context = ProcessContext(frozenset({"worker"}), hub.settings)
    try:
        lifecycle.refuse_unsafe_start(hub.registry, hub.settings.step_lease_seconds)
        lifecycle.start(hub.registry, context)
    except lifecycle.StartFailed as exc:
        # Dramatiq's process prints it and the main process stops every worker.
        raise SystemExit(f"Error: {exc}") from None
    broker = make_broker(hub)
    broker.add_middleware(PluginLifecycle(hub.registry, context))
    broker.add_middleware(metrics.ProcessExit())
    broker.add_middleware(PollTimeout(hub.settings.worker_timeout_ms))
    bind(hub, broker)


def start_in_process(hub: Hub, broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(
        broker,
        queues={QUEUE},
        worker_threads=threads,
        worker_timeout=hub.settings.worker_timeout_ms,
    )
    worker.start()
    return worker
