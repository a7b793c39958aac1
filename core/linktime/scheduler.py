"""The scheduler loop: turns due runs into broker messages. With PostgreSQL, any number of
schedulers may run side by side (rows are claimed with FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import logging
import threading

from . import metrics
from .engine import Hub

log = logging.getLogger(__name__)

# The most messages, in batches, the broker's queue may hold before a tick hands out more. A run
# handed out behind a longer backlog waits there; once it has waited ``requeue_after_seconds``
# the next tick sends it again as lost, and those second messages lengthen the backlog in turn
# (a burst of 5,000 reminders sent 5,284 times more). Due runs wait in the database instead,
# still in due order, and the queue is topped up as the workers drain it.
BACKLOG_BATCHES = 2


class Scheduler:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Enqueue what is due, as much as the broker's queue has room for; returns how many
        runs were handed out."""
        with metrics.TICK_SECONDS.time():
            room = self.room()
            if room == 0:
                return 0
            run_ids = self.hub.due_runs(room)
            self.hub.enqueue(run_ids)
        return len(run_ids)

    def room(self) -> int:
        """How many runs this tick may hand out: a batch, or less when the broker's queue
        already holds close to ``BACKLOG_BATCHES`` batches (unknown length: a batch)."""
        batch = self.hub.settings.scheduler_batch
        if self.hub.queue_length is None:
            return batch
        try:
            queued = self.hub.queue_length()
        except Exception:  # the broker unreachable: the sends will say so, as before
            log.warning("scheduler: could not read the broker's queue length", exc_info=True)
            return batch
        return max(0, min(batch, BACKLOG_BATCHES * batch - queued))

    def run_forever(self) -> None:
        interval = self.hub.settings.scheduler_interval
        while not self._stop.is_set():
            try:
                handed = self.tick()
            except Exception:  # a database hiccup must not end the loop
                log.exception("scheduler tick failed")
                handed = 0
            # A full batch means more is due: go again at once.
            if handed < self.hub.settings.scheduler_batch:
                self._stop.wait(interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="linktime-scheduler")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
