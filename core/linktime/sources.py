"""What a plugin registers to take bookings in from another system: a ``SourceType``.

A source verifies a provider's signed webhook (Cal.com, Calendly, Stripe) and translates its
payload into booking events, which then go where ``POST /v1/events`` sends them. Each account
connects a source (``POST /v1/sources``) and gets an inbound URL, ``/v1/sources/{id}/events``,
that takes no API key: the provider's signature with the connection's secret is the
authentication.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from .models import Booking, BookingEvent

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

# Amounts providers send in the currency's minor unit: the currencies whose minor unit is not a
# hundredth, as Stripe counts them (https://docs.stripe.com/currencies#zero-decimal and
# #three-decimal; ISK, HUF and TWD's "special cases" there are about what may be charged: the
# API keeps them two-decimal). Cal.com's payments go through Stripe and count the same way.
ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def major_units(minor: int, currency: str) -> Decimal:
    """An amount in minor units in the currency's major unit: 2198 USD → 21.98, 5000 JPY →
    5000, 12340 KWD → 12.340."""
    code = currency.upper()
    places = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    return Decimal(minor).scaleb(-places)


# How old a timestamped signature may be (replay protection): a provider's signature older than
# this is refused, as Stripe's and Calendly's own libraries refuse it by default.
MAX_SIGNATURE_AGE = timedelta(minutes=5)


class SourceRefused(Exception):
    """Not the provider's request: no signature, a wrong one, a stale timestamp. Answered 401,
    nothing stored. The message says which, never the secret."""


class Untranslatable(Exception):
    """A verified payload the source cannot turn into booking events: answered 422 naming
    ``field`` (a dotted path in the provider's payload) and kept in the connection's recent
    deliveries with the reason."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Inbound:
    """One request a provider made to a connection's inbound URL."""

    headers: Mapping[str, str]  # as sent; look names up case-insensitively (Litestar's are)
    body: bytes  # the raw body, as signed
    now: datetime  # the hub's clock: what a signature's timestamp is judged against


@dataclass(frozen=True)
class Translated:
    """What a payload comes to: the booking events to ingest (none: the payload is kept and
    answered 202 with ``note``, e.g. an event type the source does not map, or one half of a
    pair that becomes one event when the other arrives)."""

    events: list[BookingEvent] = field(default_factory=list)
    note: str | None = None


class Lookup:
    """What a source may ask of the account it translates for. This base knows nothing (a
    translation tested without a hub)."""

    def booking(self, uid: str) -> Booking | None:
        """The booking ``uid`` as the account's latest event about it describes it, from any
        source, its ``uid`` the one LinkTime knows it under (``uid`` may be another source's
        alias of it, e.g. Cal.com's new uid of a rescheduled booking); None when none is."""
        return None

    def alias(self, key: str) -> str | None:
        """The booking uid ``remember`` recorded for ``key`` (this source's own id of a
        booking, e.g. a Calendly invitee that replaced another on a reschedule)."""
        return None

    def remember(self, key: str, uid: str) -> None:
        """Record that this source's ``key`` names booking ``uid`` from now on."""


@dataclass(frozen=True)
class SourceType:
    """An inbound plugin, e.g. ``calcom``.

    ``settings`` is the pydantic model of a connection's settings; its ``SecretStr`` fields are
    sealed at rest and never shown again. ``secret_field`` names the signing secret: generated
    when a connection is made without one, replaced by "rotate". ``verify`` raises
    ``SourceRefused`` unless the request carries the provider's valid signature (a timestamped
    one no older than ``MAX_SIGNATURE_AGE``); ``translate`` turns the verified JSON payload into
    events (raising ``Untranslatable``), keeping the provider's own delivery or event id in
    each event's ``id`` so a provider's retry is an idempotent replay. ``sign`` signs a body as
    the provider does (the headers to send), for ``linktime.testing`` and the dashboard's "send
    a sample", which posts ``sample(now)``."""

    name: str
    title: str
    settings: type[BaseModel]
    verify: Callable[[Inbound, Any], None]
    translate: Callable[[dict[str, Any], Lookup], Translated]
    sign: Callable[[bytes, Any, datetime], dict[str, str]]
    sample: Callable[[datetime], dict[str, Any]]
    secret_field: str = "signing_secret"
    # The provider makes the secret (Stripe's whsec_…): the account must give it, none is
    # generated.
    secret_from_provider: bool = False
    description: str = ""
    # Where the provider's webhook settings are (shown beside the inbound URL).
    setup_url: str | None = None

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"source name {self.name!r} must be a lower-case slug")
        if not (isinstance(self.settings, type) and issubclass(self.settings, BaseModel)):
            raise ValueError(f"source {self.name}: settings must be a pydantic model class")
        if self.secret_field not in self.settings.model_fields:
            raise ValueError(
                f"source {self.name}: settings have no field {self.secret_field!r} (secret_field)"
            )
        for name in ("verify", "translate", "sign", "sample"):
            if not callable(getattr(self, name)):
                raise ValueError(f"source {self.name}: {name} must be callable")
