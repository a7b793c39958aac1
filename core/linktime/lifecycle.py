"""Start and stop of a process that runs LinkTime: the plugins' ``startup`` and ``shutdown``
hooks, called once per process with what the process is."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from . import loop

if TYPE_CHECKING:
    from .plugins import Registry
    from .settings import Settings

log = logging.getLogger(__name__)

Role = Literal["api", "worker", "scheduler"]


@dataclass(frozen=True)
class ProcessContext:
    """What a starting (or stopping) process is: its ``roles`` (the embedded server has all
    three) and the operator's ``settings``."""

    roles: frozenset[Role]
    settings: Settings


def start(registry: Registry, context: ProcessContext) -> None:
    """Call every loaded plugin's ``startup``, the core's built-ins first; a coroutine is run
    on the plugins' loop. An exception propagates: the process must not start half set up."""
    for impl in registry.hookimpls("startup"):
        outcome = impl.function(context=context)
        if inspect.isawaitable(outcome):
            loop.run(outcome)


def stop(registry: Registry, context: ProcessContext) -> None:
    """Call every loaded plugin's ``shutdown``, in the reverse order of ``start``; one that
    raises is logged and the others still run."""
    for impl in reversed(registry.hookimpls("shutdown")):
        try:
            outcome = impl.function(context=context)
            if inspect.isawaitable(outcome):
                loop.run(outcome)
        except Exception:
            log.exception("plugin %s: shutdown failed", impl.plugin_name)
