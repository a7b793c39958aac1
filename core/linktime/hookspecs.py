"""The hooks a LinkTime plugin may implement.

Each hook receives a ``register`` callback; the host validates and merges what every plugin
offers, so plugins never touch the registry directly (the llm pattern).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .actions import ActionType, Template, TriggerType
    from .callbacks import Callback
    from .lifecycle import ProcessContext
    from .sources import SourceType

hookspec = pluggy.HookspecMarker("linktime")
hookimpl = pluggy.HookimplMarker("linktime")


@hookspec
def register_triggers(register: Callable[[TriggerType], None]) -> None:
    """Offer triggers: call ``register(TriggerType(...))`` once per trigger."""


@hookspec
def register_actions(register: Callable[[ActionType], None]) -> None:
    """Offer actions: call ``register(ActionType(...))`` once per action."""


@hookspec
def register_templates(register: Callable[[Template], None]) -> None:
    """Offer ready-made workflows: call ``register(Template(...))`` once per template."""


@hookspec
def register_callbacks(register: Callable[[Callback], None]) -> None:
    """Offer endpoints a provider calls back (delivery reports, inbound replies): call
    ``register(Callback(...))`` once per callback; each is served at
    ``POST /v1/callbacks/{name}/{account key}``."""


@hookspec
def register_sources(register: Callable[[SourceType], None]) -> None:
    """Offer booking sources (Cal.com, Calendly, Stripe webhooks taken in directly): call
    ``register(SourceType(...))`` once per source; an account connects one with
    ``POST /v1/sources`` and the provider posts to ``/v1/sources/{id}/events``."""


@hookspec
def startup(context: ProcessContext) -> Awaitable[None] | None:
    """A process that runs LinkTime is starting (an API, worker or scheduler process, or the
    embedded server that is all three): open what the plugin keeps per process, e.g. a pool.
    May be a coroutine, run on the loop async actions run on. An exception stops the start."""


@hookspec
def shutdown(context: ProcessContext) -> Awaitable[None] | None:
    """That process is stopping: close what ``startup`` opened. May be a coroutine, as
    ``startup``; an exception is logged and the other plugins still shut down."""
