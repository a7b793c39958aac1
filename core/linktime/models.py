"""The booking event as it arrives (``POST /v1/events`` or ``Hub.emit``).

Fields beyond these are allowed and kept: they travel on to webhooks untouched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

EVENT_TYPES = (
    "booking.created",
    "booking.cancelled",
    "booking.rescheduled",
    "payment.received",
    "booking.no_show",
)


def _not_a_number(value: Any) -> Any:
    # pydantic reads numbers (and strings of digits) as Unix times: a booking at 17 would be in
    # 1970. Only an ISO 8601 timestamp (or a datetime, from Python) is a moment here.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
    elif not isinstance(value, int | float):
        return value
    raise ValueError("expected an ISO 8601 timestamp with a timezone, not a number")


# The moments an event may name: wide enough for any booking, narrow enough that the planner's
# arithmetic (an offset of up to 90 days, the conversion to UTC) stays within datetime's years
# 1 to 9999, where "0001-01-01T00:00:00+14:00" or "9999-12-31T23:30:00Z" would overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"expected a moment in the years {EARLIEST.year} to {LATEST.year - 1}")
    return value


# Per field rather than strict mode: the engine validates stored events from Python objects,
# where strict mode would refuse the ISO strings they hold.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_in_range)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Person(_Open):
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    timezone: str = Field(default="UTC", max_length=100)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the OS refuses
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value


class EventTypeRef(_Open):
    id: str | int | None = None
    slug: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=500)


class Payment(_Open):
    amount: Decimal
    currency: str = Field(min_length=3, max_length=3)
    reference: str | None = Field(default=None, max_length=500)


CustomKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
CustomValue = Annotated[str, Field(max_length=2000)] | int | float | bool | None


class Booking(_Open):
    uid: str = Field(min_length=1, max_length=200)
    title: str | None = Field(default=None, max_length=500)
    status: str = "accepted"
    event_type: EventTypeRef | None = None
    start: Timestamp
    end: Timestamp
    location: str | None = Field(default=None, max_length=2000)
    meeting_url: str | None = Field(default=None, max_length=2000)
    host: Person | None = None
    hosts: list[Person] = Field(default_factory=list, max_length=50)
    invitee: Person | None = None
    invitees: list[Person] = Field(default_factory=list, max_length=200)
    guests: list[Any] = Field(default_factory=list, max_length=200)
    notes: str | None = Field(default=None, max_length=10_000)
    cancel_url: str | None = Field(default=None, max_length=2000)
    reschedule_url: str | None = Field(default=None, max_length=2000)
    cancellation_reason: str | None = Field(default=None, max_length=2000)
    reschedule_reason: str | None = Field(default=None, max_length=2000)
    previous_start: Timestamp | None = None
    payment: Payment | None = None
    # The invitee did not attend (a booking.no_show event says so; Cal.com's noShow).
    no_show: bool = False
    # Answers to the booking form's questions, usable in templates and conditions (custom.<key>).
    custom_fields: dict[CustomKey, CustomValue] = Field(default_factory=dict, max_length=50)

    @model_validator(mode="after")
    def _end_after_start(self) -> Booking:
        if self.end < self.start:
            raise ValueError("booking.end must not be before booking.start")
        return self


class BookingEvent(_Open):
    id: str = Field(min_length=1, max_length=200, description="Idempotency key, unique per account")
    type: str = Field(description="One of the event triggers, e.g. booking.created")
    occurred_at: Timestamp
    booking: Booking

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise ValueError(
                f"unknown event type {value!r}; expected one of {', '.join(EVENT_TYPES)}"
            )
        return value

    @model_validator(mode="after")
    def _payment_carries_payment(self) -> BookingEvent:
        if self.type == "payment.received" and self.booking.payment is None:
            raise ValueError("a payment.received event needs booking.payment")
        return self


def sample_event(event_type: str = "booking.created", **overrides: Any) -> BookingEvent:
    """A realistic booking event, for test runs and for plugin authors' tests."""
    start = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    data: dict[str, Any] = {
        "id": "evt_sample",
        "type": event_type,
        "occurred_at": datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        "booking": {
            "uid": "bk_sample",
            "title": "Intro call between Ada Lovelace and Grace Hopper",
            "status": "accepted",
            "event_type": {"id": "et_1", "slug": "intro-call", "title": "Intro call"},
            "start": start,
            "end": start.replace(minute=30),
            "location": "Online",
            "meeting_url": "https://meet.example.com/abc",
            "host": {
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+14155550100",
                "timezone": "Europe/Berlin",
            },
            "invitee": {
                "name": "Grace Hopper",
                "email": "grace@example.com",
                "phone": "+14155550101",
                "timezone": "America/New_York",
            },
            "notes": "Looking forward to it",
            "cancellation_reason": "Something came up",
            "reschedule_reason": "Travel",
            "previous_start": start.replace(day=2),
            "cancel_url": "https://linktime.example.com/cancel/bk_sample",
            "reschedule_url": "https://linktime.example.com/reschedule/bk_sample",
            "payment": {"amount": "50.00", "currency": "USD", "reference": "pi_sample"},
        },
    }
    if event_type == "booking.no_show":
        data["booking"]["no_show"] = True
    data.update(overrides)
    return BookingEvent.model_validate(data)
