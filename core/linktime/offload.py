"""Blocking work (the database, a plugin's sync code) run for an async request handler in a
worker thread, so that the event loop goes on serving other requests meanwhile."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread. (Litestar's sync_to_thread handlers break a
    GET that shares its path with a DELETE, so the handlers are async and offload.)"""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
