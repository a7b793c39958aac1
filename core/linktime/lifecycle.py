"""Start and stop of a process that runs LinkTime: the plugins' ``startup`` and ``shutdown``
hooks, called once per process with what the process is."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from . import loop

if TYPE_CHECKING:
    import pluggy

    from .plugins import Registry
    from .settings import Settings

log = logging.getLogger(__name__)

Role = Literal["api", "worker", "scheduler"]


class StartFailed(Exception):
    """This process must not start; the message says why, naming the plugins at fault."""


@dataclass(frozen=True)
class ProcessContext:
    """What a starting (or stopping) process is: its ``roles`` (the embedded server has all
    three) and the operator's ``settings``."""

    roles: frozenset[Role]
    settings: Settings


def _named(impl: pluggy.HookImpl) -> str:
    # The loader registers each plugin as "<entry point>@<distribution>".
    entry_point, _, distribution = impl.plugin_name.partition("@")
    return f"{entry_point} ({distribution})" if distribution else entry_point


def refuse_unsafe_start(registry: Registry, step_lease_seconds: float | None = None) -> None:
    """Raise ``StartFailed`` naming every reason the installed plugins make starting unsafe
    (``Registry.start_refusals``; the step lease only for a process that runs steps)."""
    refusals = registry.start_refusals(step_lease_seconds)
    if refusals:
        raise StartFailed("cannot start:\n  " + "\n  ".join(refusals))


def start(registry: Registry, context: ProcessContext) -> None:
    """Call every loaded plugin's ``startup``, the core's built-ins first; a coroutine is run
    on the plugins' loop. One that raises stops the start with ``StartFailed`` naming the
    plugin, after the plugins already started are shut down: the process must not run half
    set up, nor leave what they opened behind."""
    impls = registry.hookimpls("startup")
    for done, impl in enumerate(impls):
        try:
            outcome = impl.function(context=context)
            if inspect.isawaitable(outcome):
                loop.run(outcome)
        except Exception as exc:
            log.exception("plugin %s: startup failed", _named(impl))
            stop(registry, context, skip={i.plugin_name for i in impls[done:]})
            raise StartFailed(
                f"cannot start:\n  plugin {_named(impl)}: startup failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def stop(registry: Registry, context: ProcessContext, skip: Set[str] = frozenset()) -> None:
    """Call every loaded plugin's ``shutdown`` but those ``skip`` names (plugins whose
    ``startup`` never ran), in the reverse order of ``start``; one that raises is logged and
    the others still run."""
    for impl in reversed(registry.hookimpls("shutdown")):
        if impl.plugin_name in skip:
            continue
        try:
            outcome = impl.function(context=context)
            if inspect.isawaitable(outcome):
                loop.run(outcome)
        except Exception:
            log.exception("plugin %s: shutdown failed", _named(impl))
