"""LinkTime Workflows: booking-triggered automation with pluggable channels."""

from .actions import (
    ActionContext,
    ActionType,
    Outcome,
    Problem,
    Result,
    Template,
    TemplateStep,
    TriggerType,
)
from .hookspecs import hookimpl
from .lifecycle import ProcessContext
from .models import BookingEvent
from .operator_settings import OperatorSettingError, plugin_settings
from .templating import TemplateError, TemplateStr

__all__ = [
    "ActionContext",
    "ActionType",
    "BookingEvent",
    "OperatorSettingError",
    "Outcome",
    "Problem",
    "ProcessContext",
    "Result",
    "Template",
    "TemplateError",
    "TemplateStep",
    "TemplateStr",
    "TriggerType",
    "hookimpl",
    "plugin_settings",
]
