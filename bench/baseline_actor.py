"""The bare-Dramatiq baseline: an actor whose only work is one sync httpx POST.

Workers run it with ``python -m dramatiq bench.baseline_actor:setup --processes W --threads T``
and these environment variables (set by ``bench/webhooks.py``):

- ``BENCH_REDIS_URL``, ``BENCH_NAMESPACE``: the Redis broker, in its own namespace;
- ``BENCH_RECEIVER_URL``: where to POST.
"""

from __future__ import annotations

import json
import os

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench_baseline"
ACTOR = "bench.deliver"
# About the size of a LinkTime webhook body for a booking, so both move the same bytes.
PAD = "x" * 1900

# Module level and pooled: one keep-alive connection per worker thread, reused.
client = httpx.Client(
    limits=httpx.Limits(max_connections=128, max_keepalive_connections=128),
    timeout=15.0,
    trust_env=False,
)


def deliver(sent_at: float, seq: int) -> None:
    body = json.dumps(
        {"type": "bench", "sent_at": sent_at, "seq": seq, "pad": PAD}, separators=(",", ":")
    ).encode()
    response = client.post(
        os.environ["BENCH_RECEIVER_URL"],
        content=body,
        headers={"Content-Type": "application/json", "webhook-id": f"base_{seq}"},
    )
    response.raise_for_status()


def declare(broker: dramatiq.Broker) -> dramatiq.Actor[[float, int], None]:
    """The actor on ``broker``: the workers consume it, the bench process sends with it."""
    return dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, broker=broker)(deliver)


def make_broker(url: str | None = None, namespace: str | None = None) -> RedisBroker:
    """The broker from the arguments, else from the environment the bench gave the workers."""
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=url or os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        namespace=namespace or os.environ.get("BENCH_NAMESPACE", "bench-baseline"),
    )


def setup() -> None:
    """Entry for the dramatiq CLI (``bench.baseline_actor:setup``)."""
    broker = make_broker()
    dramatiq.set_broker(broker)  # the CLI's workers consume from the global broker
    declare(broker)
