"""Fewer malloc arenas for ``linktime serve``, a process of many threads.

glibc's malloc gives a thread that allocates while another holds an arena an arena of its own,
up to eight per core, and each keeps what was freed in it: the embedded default (the API's
threads, the worker's, the scheduler's in one process) held about 9 MB more after 3,000 events
of bench/embedded.py's workload than with two arenas. The GIL serializes most allocations there
anyway. Worker processes (113 MB after 100,000 deliveries, bench/memory.py) keep glibc's
default: their threads' allocations outside the GIL (the database driver's) are what arenas are
for. ``MALLOC_ARENA_MAX`` in the environment, the operator's own choice, wins.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit() -> None:
    """Cap the arenas this process's threads create from now on (glibc only; elsewhere, or
    when the environment says otherwise, nothing changes)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not a C library with mallopt (macOS)
        return
    mallopt(M_ARENA_MAX, ARENAS)
