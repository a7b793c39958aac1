"""The hooks a LinkTime plugin may implement.

Each hook receives a ``register`` callback; the host validates and merges what every plugin
offers, so plugins never touch the registry directly (the llm pattern).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from .actions import ActionType, Template, TriggerType

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
