"""LinkTime Workflows: booking-triggered automation with pluggable channels."""

from .actions import ActionContext, ActionType, Result, Template, TemplateStep, TriggerType
from .hookspecs import hookimpl
from .models import BookingEvent

__all__ = [
    "ActionContext",
    "ActionType",
    "BookingEvent",
    "Result",
    "Template",
    "TemplateStep",
    "TriggerType",
    "hookimpl",
]
