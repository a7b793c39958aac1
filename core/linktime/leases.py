"""A worker process's heartbeat: while its threads execute runs, one thread renews their leases.

A step may take longer than the lease (a slow receiver, a plugin past its deadline); without
renewal another worker would take the run over mid-send and send the step again. The heartbeat
renews every lease this process holds every third of the lease, fenced by the lease token, so a
run this process no longer owns is left alone. A process that dies, or stalls whole, stops
renewing, and its runs are taken over once their leases run out, as before. So does an attempt
that outlives its action's deadline (a sync plugin that hangs cannot be interrupted): its lease
is no longer renewed, so another worker takes the run over and logs the attempt `worker_lost`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from . import statements as sql

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, db: Engine, lease_seconds: float) -> None:
        self._db = db
        self._lease = lease_seconds
        self._held: dict[str, str] = {}  # run id -> lease token
        self._deadlines: dict[str, float] = {}  # run id -> monotonic end of its attempt
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, run_id: str, token: str) -> Iterator[None]:
        """Renew this run's lease until the block ends."""
        with self._lock:
            self._held[run_id] = token
            if self._thread is None and not self._stopped.is_set():
                # Started by the first run, so processes that execute none never beat.
                self._thread = threading.Thread(
                    target=self._run, name="linktime-heartbeat", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(run_id) == token:
                    del self._held[run_id]

    @contextmanager
    def attempting(self, run_id: str, seconds: float) -> Iterator[None]:
        """Renew this run's lease during the block for ``seconds`` at most."""
        with self._lock:
            self._deadlines[run_id] = time.monotonic() + seconds
        try:
            yield
        finally:
            with self._lock:
                self._deadlines.pop(run_id, None)

    def beat(self) -> int:
        """Renew every lease held now whose attempt is within its deadline; returns how many
        were still this process's."""
        now = time.monotonic()
        with self._lock:
            held = [
                {"b_run": r, "b_token": t, "b_lease": self._lease}
                for r, t in self._held.items()
                if self._deadlines.get(r, now) >= now
            ]
        renewed = 0
        with self._db.connect() as conn:
            for params in held:
                # A transaction per run: no row stays locked while the next one is waited
                # for, so the heartbeat never deadlocks with a worker's writes.
                with conn.begin():
                    renewed += conn.execute(sql.HEARTBEAT, params).rowcount
        return renewed

    def stop(self) -> None:
        """Stop renewing, for good: what the process's death would do."""
        self._stopped.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(self._lease / 3):
            try:
                self.beat()
            except Exception:  # a database hiccup: the next beat tries again
                log.exception("could not renew the leases of this worker's runs")
