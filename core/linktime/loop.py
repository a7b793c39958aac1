"""The one event loop a process runs plugins' coroutines on: async ``execute`` calls and
async ``startup``/``shutdown`` hooks, so a pool a plugin opens at start serves its actions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable
from typing import TypeVar

from dramatiq.asyncio import EventLoopThread

log = logging.getLogger(__name__)

T = TypeVar("T")

_thread: EventLoopThread | None = None
_lock = threading.Lock()


def run(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` on the process's plugin loop (started on first use) and wait for it."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = EventLoopThread(log)
            _thread.daemon = True
            _thread.start(timeout=5)
    return _thread.run_coroutine(awaitable)
