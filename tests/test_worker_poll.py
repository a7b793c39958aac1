"""``LINKTIME_WORKER_TIMEOUT_MS`` reaches the consumers of a worker started the way
``linktime worker`` starts them (Dramatiq's command line, which has no option for it)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from linktime.worker import QUEUE, PollTimeout


def test_the_consumers_poll_with_the_configured_timeout() -> None:
    broker = StubBroker()
    broker.add_middleware(PollTimeout(37))
    broker.declare_queue(QUEUE)
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=1)  # Dramatiq's default
    worker.start()
    try:
        assert worker.worker_timeout == 37
        # the queue and its delay queue
        assert {c.worker_timeout for c in worker.consumers.values()} == {37}
        assert QUEUE in worker.consumers
    finally:
        worker.stop()
