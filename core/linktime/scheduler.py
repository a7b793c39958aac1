"""The scheduler loop: turns due runs into broker messages. With PostgreSQL, any number of
schedulers may run side by side (rows are claimed with FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from . import metrics
from .engine import Hub

log = logging.getLogger(__name__)

# How much the broker's queue may hold before a tick hands out more: at most BACKLOG_BATCHES
# batches, and, once the workers' pace is known, at most BACKLOG_SHARE of
# ``requeue_after_seconds`` of their work. A run handed out behind a longer backlog waits there;
# once it has waited ``requeue_after_seconds`` a tick sends it again as lost, and those second
# messages lengthen the backlog in turn (a burst of 5,000 reminders was sent 5,284 times more,
# bench/burst.py). Due runs wait in the database instead, still in due order, and the queue is
# topped up as the workers drain it.
BACKLOG_BATCHES = 2
BACKLOG_SHARE = 0.5


class Scheduler:
    def __init__(self, hub: Hub, clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.clock = clock  # seconds, for the workers' pace
        # Messages/s the workers take from the queue, measured while it held a backlog (0: not
        # measured yet).
        self.drain_rate = 0.0
        self._left: tuple[float, int] | None = None  # (when, queue length) after the last tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Enqueue what is due, as much as the broker's queue has room for; returns how many
        runs were handed out."""
        with metrics.TICK_SECONDS.time():
            queued = self._queued()
            room = self.room(queued)
            run_ids = self.hub.due_runs(room) if room else []
            self.hub.enqueue(run_ids)
            if queued is not None:
                self._left = (self.clock(), queued + len(run_ids))
        return len(run_ids)

    def _queued(self) -> int | None:
        """Messages waiting in the broker's queue; None when unknown."""
        if self.hub.queue_length is None:
            return None
        try:
            return self.hub.queue_length()
        except Exception:  # the broker unreachable: the sends will say so, as before
            log.warning("scheduler: could not read the broker's queue length", exc_info=True)
            return None

    def room(self, queued: int | None) -> int:
        """How many runs this tick may hand out: a batch, or less when the broker's queue
        already holds what the workers take ``BACKLOG_SHARE`` of the re-send delay to drain (at
        most ``BACKLOG_BATCHES`` batches). Unknown queue length: a batch."""
        batch = self.hub.settings.scheduler_batch
        if queued is None:
            return batch
        now = self.clock()
        if self._left is not None and queued > 0 and now > self._left[0]:
            # Still a backlog: the workers were busy all along, what went is their pace.
            then, left = self._left
            sample = max(0, left - queued) / (now - then)
            self.drain_rate = (self.drain_rate + sample) / 2 if self.drain_rate else sample
        allowed = BACKLOG_BATCHES * batch
        if self.drain_rate:
            within = self.drain_rate * self.hub.settings.requeue_after_seconds * BACKLOG_SHARE
            allowed = min(allowed, max(1, int(within)))
        return max(0, min(batch, allowed - queued))

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
