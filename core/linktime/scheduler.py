"""The scheduler loop: turns due runs into broker messages. With PostgreSQL, any number of
schedulers may run side by side (rows are claimed with FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import logging
import threading

from . import metrics
from .engine import Hub

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Enqueue what is due; returns how many runs were handed out."""
        with metrics.TICK_SECONDS.time():
            run_ids = self.hub.due_runs()
            self.hub.enqueue(run_ids)
        return len(run_ids)

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
