"""Cal.com as a LinkTime booking source (``calcom``): Cal.com's booking webhooks, verified by
their ``X-Cal-Signature-256`` (HMAC-SHA256 of the raw body with the webhook's secret, hex) and
translated into booking events.

Cal.com gives a rescheduled booking a new uid and names the old one (``rescheduleUid``);
LinkTime keeps one booking, under the first uid: the new uid is remembered as an alias, so
later events about it (a cancellation, a payment) land on the same booking and its reminders.

Cal.com's signature carries no time, so a replayed delivery would verify for ever. The signed
body carries one, ``createdAt`` (set when Cal.com sends it): a delivery whose ``createdAt`` is
more than five minutes from the hub's clock, either way, is refused, whatever its trigger, and
within those minutes the same delivery is the same event id, an idempotent replay.

A payment names the payment processor's id (Stripe's PaymentIntent, ``pi_…``) when Cal.com
gives it: its event id is then ``payment:{pi_…}``, the one the ``stripe`` source gives the same
payment, so "Payment Received" fires once whichever reports it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from linktime.hookspecs import hookimpl
from linktime.models import BookingEvent
from linktime.sources import (
    MAX_SIGNATURE_AGE,
    Inbound,
    Lookup,
    SourceRefused,
    SourceType,
    Translated,
    Untranslatable,
    major_units,
)
from pydantic import BaseModel, Field, SecretStr

__version__ = "0.1.0"

HEADER = "X-Cal-Signature-256"
# What Cal.com sends in the header when its webhook has no secret.
UNSIGNED = "no-secret-provided"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
MAX_CUSTOM_FIELDS = 50
MAX_TEXT = 2000
# The core's limits on a booking's uid and an event's id.
MAX_UID = 200
MAX_EVENT_ID = 200
# Longer than any IANA zone name (the longest is about 30): a longer one is not a zone.
MAX_TIMEZONE = 100
# A payment's event id by its processor's id, the same from every source that reports it.
PAYMENT_ID = "payment:{}"
# The trigger Cal.com's "Ping test" sends, the one delivery that may come without createdAt.
PING = "PING"


class CalcomSettings(BaseModel):
    signing_secret: SecretStr = Field(
        description="The webhook's Secret in Cal.com (Settings → Developer → Webhooks): paste "
        "the one LinkTime generated there, or give LinkTime the one you set"
    )


def _mac(settings: CalcomSettings, body: bytes) -> str:
    secret = settings.signing_secret.get_secret_value().encode()
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def sign(body: bytes, settings: CalcomSettings, now: datetime) -> dict[str, str]:
    """The header Cal.com sends (its signature has no time: ``now`` is not signed)."""
    return {HEADER: _mac(settings, body)}


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def verify(request: Inbound, settings: CalcomSettings) -> None:
    given = next((v for k, v in request.headers.items() if k.lower() == HEADER.lower()), "")
    if not given or given == UNSIGNED:
        raise SourceRefused(f"no {HEADER} signature: give the Cal.com webhook a secret")
    if not hmac.compare_digest(_mac(settings, request.body).encode(), given.strip().encode()):
        raise SourceRefused(f"the {HEADER} signature does not match")
    _fresh(request)


def _fresh(request: Inbound) -> None:
    """Refuse a delivery whose signed ``createdAt`` is not within MAX_SIGNATURE_AGE of now,
    whatever its trigger: one LinkTime only acknowledges would otherwise be kept again at each
    replay, for ever. Only Cal.com's ping test may come without it."""
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):
        return  # not JSON the core can read: it answers 422 for the body
    if not isinstance(payload, dict):
        return
    if "createdAt" not in payload and payload.get("triggerEvent") == PING:
        return
    created = _moment(payload.get("createdAt"))
    if created is None:
        raise SourceRefused("no createdAt to tell how old the delivery is")
    minutes = int(MAX_SIGNATURE_AGE.total_seconds() // 60)
    try:
        stale = abs(request.now - created) > MAX_SIGNATURE_AGE
    except OverflowError:  # at the edge of datetime's years: no time Cal.com sends
        stale = True
    if stale:
        raise SourceRefused(f"createdAt is more than {minutes} minutes from now: a replay")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _object(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """``data[key]``, an object; absent or null is an empty one."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Untranslatable(f"{path}.{key}", "expected an object")
    return value


def _array(data: dict[str, Any], key: str, path: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Untranslatable(f"{path}.{key}", "expected a list")
    return value


def _text(
    data: dict[str, Any], key: str, path: str, limit: int = MAX_TEXT, cut: bool = True
) -> str | None:
    """``data[key]``, a string or nothing: prose is cut to ``limit``; what a cut would make
    wrong (an address, a link, a name of a thing) is refused beyond it (``cut=False``)."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Untranslatable(f"{path}.{key}", "expected a string")
    if len(value) > limit and not cut:
        raise Untranslatable(f"{path}.{key}", f"longer than {limit} characters")
    return value[:limit]


def _integer(data: dict[str, Any], key: str, path: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise Untranslatable(f"{path}.{key}", "expected an integer")
    return value


def _person(data: Any, path: str, phone: str | None = None) -> dict[str, Any] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise Untranslatable(path, "expected a person (an object)")
    email = _text(data, "email", path, 320, cut=False)
    person = {
        "name": _text(data, "name", path, 200) or (email or "")[:200],
        "email": email,
        "phone": _text(data, "phoneNumber", path, 40, cut=False) or phone,
    }
    timezone = _text(data, "timeZone", path, MAX_TIMEZONE, cut=False)
    if timezone is not None:
        person["timezone"] = timezone
    return person


def _answer(response: Any) -> Any:
    """A booking form answer as Cal.com sends it (``{"label", "value"}``) as one custom value:
    lists joined, a location's option (an address, a phone number) or else its kind. Answers
    of no shape a custom value takes are left out."""
    value = response.get("value") if isinstance(response, dict) else None
    if isinstance(value, dict):
        value = value.get("optionValue") or value.get("value")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    if isinstance(value, str):
        return value[:MAX_TEXT] if value else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, bool | int | float) else None


def _phone_answer(responses: dict[str, Any]) -> str | None:
    """The attendee's phone from the ``attendeePhoneNumber`` answer."""
    phone = _answer(responses.get("attendeePhoneNumber"))
    if not isinstance(phone, str):
        return None
    if len(phone) > 40:
        raise Untranslatable("payload.responses.attendeePhoneNumber", "longer than 40 characters")
    return phone


def _custom_fields(responses: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, response in responses.items():
        safe = _UNSAFE.sub("_", key).strip("_")[:100]
        value = _answer(response)
        if safe and value is not None and len(fields) < MAX_CUSTOM_FIELDS:
            fields[safe] = value
    return fields


def _meeting_url(body: dict[str, Any], location: str | None) -> str | None:
    """The link Cal.com gives the attendee: ``metadata.videoCallUrl`` (Cal.com's own choice,
    e.g. its /video page for Cal Video), else the video app's ``videoCallData.url``, else a
    location that is a link."""
    metadata = _object(body, "metadata", "payload")
    call = _object(body, "videoCallData", "payload")
    link = location if location and location.startswith(("https://", "http://")) else None
    return (
        _text(metadata, "videoCallUrl", "payload.metadata", cut=False)
        or _text(call, "url", "payload.videoCallData", cut=False)
        or link
    )


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if _moment(value) is None:
        raise Untranslatable(f"payload.{key}", "expected an ISO 8601 time with a timezone")
    assert isinstance(value, str)
    return value


def _cal_uid(body: dict[str, Any], key: str = "uid") -> str:
    uid = _text(body, key, "payload", MAX_UID, cut=False)
    if uid is None:
        raise Untranslatable(f"payload.{key}", "missing: Cal.com names every booking by uid")
    return uid


def _uid(lookup: Lookup, cal_uid: str) -> str:
    """The LinkTime booking a Cal.com uid is: its first uid if it came from a reschedule."""
    return lookup.alias(cal_uid) or cal_uid


def _booking(body: dict[str, Any], uid: str, status: str) -> dict[str, Any]:
    """The LinkTime booking a Cal.com booking payload describes."""
    responses = _object(body, "responses", "payload")
    attendees = _array(body, "attendees", "payload")
    phone = _phone_answer(responses)
    people = [
        _person(a, f"payload.attendees.{i}", phone if i == 0 else None)
        for i, a in enumerate(attendees)
    ]
    invitees = [p for p in people if p is not None]
    location = _text(body, "location", "payload", cut=False)
    meeting_url = _meeting_url(body, location)
    if location and location.startswith("integrations:") and meeting_url:
        location = meeting_url  # "integrations:daily" says nothing to a person
    return {
        "uid": uid,
        "title": _text(body, "title", "payload", 500),
        "status": status,
        "event_type": {
            "id": _integer(body, "eventTypeId", "payload"),
            "slug": _text(body, "type", "payload", 200),
            "title": _text(body, "eventTitle", "payload", 500),
        },
        "start": _required(body, "startTime"),
        "end": _required(body, "endTime"),
        "location": location,
        "meeting_url": meeting_url,
        "host": _person(body.get("organizer"), "payload.organizer"),
        "invitee": invitees[0] if invitees else None,
        "invitees": invitees,
        "guests": invitees[1:],
        # Cal.com fills description with the booker's notes when it has none of its own.
        "notes": _text(body, "additionalNotes", "payload", 10_000)
        or _text(body, "description", "payload", 10_000),
        "reschedule_reason": _answer(responses.get("rescheduleReason")),
        "custom_fields": _custom_fields(responses),
        "calcom": {"uid": body["uid"], "booking_id": _integer(body, "bookingId", "payload")},
    }


def _amount(price: Any, currency: str) -> Decimal:
    if isinstance(price, bool) or not isinstance(price, int) or price < 0:
        raise Untranslatable("payload.price", "expected the amount in minor units (an integer)")
    return major_units(price, currency)


def _event_id(*parts: str) -> str:
    """An event id of ``parts``, the same for the same delivery; one longer than the core
    takes (a long uid) is named by its digest instead."""
    readable = ":".join(parts)
    if len(readable) <= MAX_EVENT_ID:
        return readable
    return f"{parts[0]}:{hashlib.sha256(readable.encode()).hexdigest()}"


def _event(kind: str, event_id: str, created: str, booking: dict[str, Any]) -> BookingEvent:
    return BookingEvent.model_validate(
        {"id": event_id, "type": kind, "occurred_at": created, "booking": booking}
    )


def _delivery(trigger: str, cal_uid: str, created: str) -> str:
    """Stable per Cal.com delivery: a retry of it is a replay."""
    return _event_id("calcom", trigger, cal_uid, created)


Mapper = Callable[[str, str, dict[str, Any], Lookup], Translated]


def _simple(kind: str, status: str, reason: str = "cancellationReason") -> Mapper:
    """A trigger that is one booking event of the booking it names; ``reason`` names the
    payload's field that says why it was called off."""

    def mapped(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
        cal_uid = _cal_uid(body)
        booking = _booking(body, _uid(lookup, cal_uid), status)
        booking["cancellation_reason"] = _text(body, reason, "payload")
        return Translated([_event(kind, _delivery(trigger, cal_uid, created), created, booking)])

    return mapped


def _requested(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    # Cal.com sends BOOKING_CREATED, same uid, once the host confirms: that is the booking.
    return Translated(
        note="a booking request awaiting the host's confirmation: booking.created follows "
        "when it is confirmed"
    )


def _rescheduled(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    cal_uid = _cal_uid(body)
    original = _uid(lookup, _cal_uid(body, "rescheduleUid"))
    booking = _booking(body, original, "accepted")
    before = _moment(body.get("rescheduleStartTime"))
    if before is None and body.get("rescheduleStartTime") is not None:
        raise Untranslatable(
            "payload.rescheduleStartTime", "expected an ISO 8601 time with a timezone"
        )
    if before is None:
        known = lookup.booking(original)
        before = known.start if known is not None else None
    booking["previous_start"] = before
    kind, event_id = "booking.rescheduled", _delivery(trigger, cal_uid, created)
    event = _event(kind, event_id, created, booking)
    # Only once the event is valid: a refused payload leaves no alias behind.
    lookup.remember(cal_uid, original)
    return Translated([event])


def _processor_id(body: dict[str, Any], metadata: dict[str, Any]) -> str | None:
    """The payment processor's own id of the payment, when Cal.com gives it: Stripe's
    PaymentIntent (``pi_…``), in ``metadata.externalId`` or ``paymentId``."""
    given = ("payload.metadata.externalId", metadata.get("externalId"))
    for path, value in (given, ("payload.paymentId", body.get("paymentId"))):
        if isinstance(value, str) and value.startswith("pi_"):
            if len(PAYMENT_ID.format(value)) > MAX_EVENT_ID:
                raise Untranslatable(path, "longer than a payment id can be")
            return value
    return None


def _paid(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    cal_uid = _cal_uid(body)
    booking = _booking(body, _uid(lookup, cal_uid), "accepted")
    currency = body.get("currency")
    if not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise Untranslatable("payload.currency", "expected a three-letter currency code")
    currency = currency.upper()
    metadata = _object(body, "metadata", "payload")
    external = _text(metadata, "externalId", "payload.metadata", 500, cut=False)
    payment_id = body.get("paymentId")
    if isinstance(payment_id, bool) or not isinstance(payment_id, str | int | None):
        raise Untranslatable("payload.paymentId", "expected Cal.com's payment id")
    reference = external or (None if payment_id is None else str(payment_id)[:500])
    booking["payment"] = {
        "amount": _amount(body.get("price"), currency),
        "currency": currency,
        "reference": reference,
    }
    processor = _processor_id(body, metadata)
    # One payment, whoever reports it (Cal.com, Stripe), is one event: a second is a replay.
    event_id = PAYMENT_ID.format(processor) if processor else _delivery(trigger, cal_uid, created)
    return Translated([_event("payment.received", event_id, created, booking)])


def _no_show(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    """Cal.com names only the booking and who was marked: the rest is the booking as LinkTime
    last heard of it."""
    cal_uid = _cal_uid(body, "bookingUid")
    marked = []
    for n, attendee in enumerate(_array(body, "attendees", "payload")):
        path = f"payload.attendees.{n}"
        if not isinstance(attendee, dict):
            raise Untranslatable(path, "expected an attendee (an object)")
        if attendee.get("noShow") is True:
            email = _text(attendee, "email", path, 320, cut=False)
            if email is None:
                raise Untranslatable(f"{path}.email", "missing: who was marked as a no-show")
            marked.append(email)
    if not marked:
        return Translated(note="Cal.com took a no-show mark back; LinkTime keeps no-shows marked")
    known = lookup.booking(_uid(lookup, cal_uid))
    if known is None:
        return Translated(note=f"no booking {cal_uid!r} reached LinkTime: nothing to mark")
    booking = known.model_dump(mode="json")
    booking["no_show"] = True
    booking["no_show_attendees"] = marked
    event_id = _delivery(trigger, cal_uid, created)
    return Translated([_event("booking.no_show", event_id, created, booking)])


_TRIGGERS: dict[str, Mapper] = {
    "BOOKING_CREATED": _simple("booking.created", "accepted"),
    "BOOKING_REQUESTED": _requested,
    "BOOKING_RESCHEDULED": _rescheduled,
    "BOOKING_CANCELLED": _simple("booking.cancelled", "cancelled"),
    "BOOKING_REJECTED": _simple("booking.cancelled", "rejected", "rejectionReason"),
    "BOOKING_PAID": _paid,
    "BOOKING_NO_SHOW_UPDATED": _no_show,
}


def translate(payload: dict[str, Any], lookup: Lookup) -> Translated:
    trigger = payload.get("triggerEvent")
    if trigger is None or trigger == "":
        raise Untranslatable("triggerEvent", "missing: is a payload template set in Cal.com?")
    if not isinstance(trigger, str):
        raise Untranslatable("triggerEvent", "expected the trigger's name (a string)")
    mapper = _TRIGGERS.get(trigger)
    if mapper is None:
        return Translated(note=f"Cal.com's {trigger[:100]} is not a booking change LinkTime takes")
    created = payload.get("createdAt")
    if _moment(created) is None:
        raise Untranslatable("createdAt", "expected an ISO 8601 time with a timezone")
    assert isinstance(created, str)
    body = payload.get("payload")
    if not isinstance(body, dict):
        raise Untranslatable("payload", "expected the booking object")
    return mapper(trigger, created, body, lookup)


def sample(now: datetime) -> dict[str, Any]:
    """A BOOKING_CREATED as Cal.com sends it, for a meeting tomorrow."""
    start = (now + timedelta(days=1)).astimezone(UTC).replace(microsecond=0)
    return {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": _iso(now),
        "payload": {
            "type": "intro-call",
            "title": "Intro call between Ada Lovelace and Grace Hopper",
            "description": "",
            "additionalNotes": "Looking forward to it",
            "startTime": _iso(start),
            "endTime": _iso(start + timedelta(minutes=30)),
            "organizer": {
                "id": 1,
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "username": "ada",
                "timeZone": "Europe/London",
                "language": {"locale": "en"},
            },
            "attendees": [
                {
                    "email": "grace@example.com",
                    "name": "Grace Hopper",
                    "timeZone": "America/New_York",
                    "language": {"locale": "en"},
                }
            ],
            "responses": {
                "name": {"label": "your_name", "value": "Grace Hopper"},
                "email": {"label": "email_address", "value": "grace@example.com"},
                "notes": {"label": "additional_notes", "value": "Looking forward to it"},
            },
            "location": "integrations:daily",
            "uid": "calcom-sample-booking",
            "eventTypeId": 1,
            "eventTitle": "Intro call",
            "bookingId": 1,
            "metadata": {"videoCallUrl": "https://app.cal.com/video/calcom-sample-booking"},
            "status": "ACCEPTED",
        },
    }


CALCOM = SourceType(
    name="calcom",
    title="Cal.com",
    settings=CalcomSettings,
    verify=verify,
    translate=translate,
    sign=sign,
    sample=sample,
    description="Cal.com booking webhooks: created (a request once the host confirms it), "
    "rescheduled, cancelled, rejected, paid and no-show",
    setup_url="https://app.cal.com/settings/developer/webhooks",
)


@hookimpl
def register_sources(register: Callable[[SourceType], None]) -> None:
    register(CALCOM)
