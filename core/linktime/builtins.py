"""The core's own contributions, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Callable

from . import http, logic
from .actions import ActionType, TriggerType
from .hookspecs import hookimpl
from .lifecycle import ProcessContext

TRIGGERS = (
    TriggerType("booking.created", "Booking Created", "Fires when someone books a meeting"),
    TriggerType("booking.cancelled", "Booking Cancelled", "Fires when a booking is cancelled"),
    TriggerType(
        "booking.rescheduled", "Booking Rescheduled", "Fires when a meeting is rescheduled"
    ),
    TriggerType(
        "payment.received", "Payment Received", "Fires when a paid booking payment completes"
    ),
    TriggerType(
        "booking.no_show",
        "Invitee No-Show",
        "Fires when the booking is marked as a no-show (the invitee did not attend)",
    ),
    TriggerType(
        "meeting.before",
        "Before Meeting",
        "Fires a configurable time before the meeting starts (e.g. 15 min, 1 hour)",
        kind="time",
        anchor="start",
        direction=-1,
    ),
    TriggerType(
        "meeting.after",
        "After Meeting",
        "Fires a configurable time after the meeting ends",
        kind="time",
        anchor="end",
        direction=1,
    ),
)


@hookimpl
def register_triggers(register: Callable[[TriggerType], None]) -> None:
    for trigger in TRIGGERS:
        register(trigger)


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    for action in logic.ACTIONS:
        register(action)


@hookimpl
def shutdown(context: ProcessContext) -> None:
    """Close the pooled connections of ``linktime.http``."""
    http.close()
