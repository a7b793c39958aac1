"""Cal.com as a LinkTime booking source (``calcom``): Cal.com's booking webhooks, verified by
their ``X-Cal-Signature-256`` (HMAC-SHA256 of the raw body with the webhook's secret, hex) and
translated into booking events.

Cal.com gives a rescheduled booking a new uid and names the old one (``rescheduleUid``);
LinkTime keeps one booking, under the first uid: the new uid is remembered as an alias, so
later events about it (a cancellation, a payment) land on the same booking and its reminders.

Cal.com's signature carries no time, so a replayed delivery would verify for ever. The signed
body carries one, ``createdAt`` (set when Cal.com sends it): a booking trigger whose
``createdAt`` is more than five minutes from the hub's clock, either way, is refused, and
within those minutes the same delivery is the same event id, an idempotent replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
MAX_CUSTOM_FIELDS = 50
MAX_TEXT = 2000


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
    """Refuse a booking delivery whose signed ``createdAt`` is not within MAX_SIGNATURE_AGE of
    now. Other triggers are only acknowledged, and some (MEETING_STARTED) put the booking's own
    creation time there, so they are not judged by it."""
    try:
        payload = json.loads(request.body)
    except ValueError:
        return  # not JSON: the core answers 422 for the body
    if not isinstance(payload, dict) or payload.get("triggerEvent") not in _TRIGGERS:
        return
    created = _moment(payload.get("createdAt"))
    if created is None:
        raise SourceRefused("no createdAt to tell how old the delivery is")
    if abs(request.now - created) > MAX_SIGNATURE_AGE:
        minutes = int(MAX_SIGNATURE_AGE.total_seconds() // 60)
        raise SourceRefused(f"createdAt is more than {minutes} minutes from now: a replay")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _person(data: Any, phone: Any = None) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    person = {
        "name": _text(data.get("name"), 200) or _text(data.get("email"), 200) or "",
        "email": _text(data.get("email"), 320),
        "phone": _text(data.get("phoneNumber") or phone, 40),
    }
    if isinstance(data.get("timeZone"), str):
        person["timezone"] = data["timeZone"]
    return person


def _answer(response: Any) -> Any:
    """A booking form answer as Cal.com sends it (``{"label", "value"}``) as one custom value:
    lists joined, a location's option (an address, a phone number) or else its kind."""
    value = response.get("value") if isinstance(response, dict) else None
    if isinstance(value, dict):
        value = value.get("optionValue") or value.get("value")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    if isinstance(value, str):
        return value[:MAX_TEXT] if value else None
    return value if isinstance(value, bool | int | float) else None


def _custom_fields(responses: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, response in _dict(responses).items():
        safe = _UNSAFE.sub("_", str(key)).strip("_")[:100]
        value = _answer(response)
        if safe and value is not None and len(fields) < MAX_CUSTOM_FIELDS:
            fields[safe] = value
    return fields


def _meeting_url(body: dict[str, Any]) -> str | None:
    """The link Cal.com gives the attendee: ``metadata.videoCallUrl`` (Cal.com's own choice,
    e.g. its /video page for Cal Video), else the video app's ``videoCallData.url``, else a
    location that is a link."""
    metadata = _dict(body.get("metadata"))
    call = _dict(body.get("videoCallData"))
    location = _text(body.get("location"))
    link = location if location and location.startswith(("https://", "http://")) else None
    return _text(metadata.get("videoCallUrl")) or _text(call.get("url")) or link


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if _moment(value) is None:
        raise Untranslatable(f"payload.{key}", "expected an ISO 8601 time with a timezone")
    assert isinstance(value, str)
    return value


def _cal_uid(body: dict[str, Any], key: str = "uid") -> str:
    uid = body.get(key)
    if not isinstance(uid, str) or not uid:
        raise Untranslatable(f"payload.{key}", "missing: Cal.com names every booking by uid")
    return uid


def _uid(lookup: Lookup, cal_uid: str) -> str:
    """The LinkTime booking a Cal.com uid is: its first uid if it came from a reschedule."""
    return lookup.alias(cal_uid) or cal_uid


def _booking(body: dict[str, Any], uid: str, status: str) -> dict[str, Any]:
    """The LinkTime booking a Cal.com booking payload describes."""
    responses = _dict(body.get("responses"))
    attendees = _list(body.get("attendees"))
    people = [
        _person(a, _answer(responses.get("attendeePhoneNumber")) if i == 0 else None)
        for i, a in enumerate(attendees)
    ]
    invitees = [p for p in people if p is not None]
    meeting_url = _meeting_url(body)
    location = _text(body.get("location"))
    if location and location.startswith("integrations:") and meeting_url:
        location = meeting_url  # "integrations:daily" says nothing to a person
    return {
        "uid": uid,
        "title": _text(body.get("title"), 500),
        "status": status,
        "event_type": {
            "id": body.get("eventTypeId"),
            "slug": _text(body.get("type"), 200),
            "title": _text(body.get("eventTitle"), 500),
        },
        "start": _required(body, "startTime"),
        "end": _required(body, "endTime"),
        "location": location,
        "meeting_url": meeting_url,
        "host": _person(body.get("organizer")),
        "invitee": invitees[0] if invitees else None,
        "invitees": invitees,
        "guests": invitees[1:],
        # Cal.com fills description with the booker's notes when it has none of its own.
        "notes": _text(body.get("additionalNotes"), 10_000)
        or _text(body.get("description"), 10_000),
        "reschedule_reason": _answer(responses.get("rescheduleReason")),
        "custom_fields": _custom_fields(responses),
        "calcom": {"uid": body.get("uid"), "booking_id": body.get("bookingId")},
    }


def _amount(price: Any, currency: str) -> Decimal:
    if isinstance(price, bool) or not isinstance(price, int):
        raise Untranslatable("payload.price", "expected the amount in minor units (an integer)")
    return major_units(price, currency)


def _event(
    kind: str, trigger: str, cal_uid: str, created: str, booking: dict[str, Any]
) -> BookingEvent:
    return BookingEvent.model_validate(
        {
            # Stable per Cal.com delivery: a retry of it is a replay.
            "id": f"calcom:{trigger}:{cal_uid}:{created}",
            "type": kind,
            "occurred_at": created,
            "booking": booking,
        }
    )


Mapper = Callable[[str, str, dict[str, Any], Lookup], Translated]


def _simple(kind: str, status: str, reason: str = "cancellationReason") -> Mapper:
    """A trigger that is one booking event of the booking it names; ``reason`` names the
    payload's field that says why it was called off."""

    def mapped(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
        cal_uid = _cal_uid(body)
        booking = _booking(body, _uid(lookup, cal_uid), status)
        booking["cancellation_reason"] = _text(body.get(reason))
        return Translated([_event(kind, trigger, cal_uid, created, booking)])

    return mapped


def _rescheduled(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    cal_uid = _cal_uid(body)
    original = _uid(lookup, _cal_uid(body, "rescheduleUid"))
    lookup.remember(cal_uid, original)
    booking = _booking(body, original, "accepted")
    before = _moment(body.get("rescheduleStartTime"))
    if before is None:
        known = lookup.booking(original)
        before = known.start if known is not None else None
    booking["previous_start"] = before
    return Translated([_event("booking.rescheduled", trigger, cal_uid, created, booking)])


def _paid(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    cal_uid = _cal_uid(body)
    booking = _booking(body, _uid(lookup, cal_uid), "accepted")
    currency = body.get("currency")
    if not isinstance(currency, str) or len(currency) != 3:
        raise Untranslatable("payload.currency", "expected a three-letter currency code")
    currency = currency.upper()
    metadata = _dict(body.get("metadata"))
    reference = metadata.get("externalId") or body.get("paymentId")
    booking["payment"] = {
        "amount": _amount(body.get("price"), currency),
        "currency": currency,
        "reference": None if reference is None else str(reference)[:500],
    }
    return Translated([_event("payment.received", trigger, cal_uid, created, booking)])


def _no_show(trigger: str, created: str, body: dict[str, Any], lookup: Lookup) -> Translated:
    """Cal.com names only the booking and who was marked: the rest is the booking as LinkTime
    last heard of it."""
    cal_uid = _cal_uid(body, "bookingUid")
    attendees = _list(body.get("attendees"))
    marked = [a["email"] for a in attendees if isinstance(a, dict) and a.get("noShow") is True]
    if not marked:
        return Translated(note="Cal.com took a no-show mark back; LinkTime keeps no-shows marked")
    known = lookup.booking(_uid(lookup, cal_uid))
    if known is None:
        return Translated(note=f"no booking {cal_uid!r} reached LinkTime: nothing to mark")
    booking = known.model_dump(mode="json")
    booking["no_show"] = True
    booking["no_show_attendees"] = marked
    return Translated([_event("booking.no_show", trigger, cal_uid, created, booking)])


_TRIGGERS: dict[str, Mapper] = {
    "BOOKING_CREATED": _simple("booking.created", "accepted"),
    "BOOKING_REQUESTED": _simple("booking.created", "pending"),
    "BOOKING_RESCHEDULED": _rescheduled,
    "BOOKING_CANCELLED": _simple("booking.cancelled", "cancelled"),
    "BOOKING_REJECTED": _simple("booking.cancelled", "rejected", "rejectionReason"),
    "BOOKING_PAID": _paid,
    "BOOKING_NO_SHOW_UPDATED": _no_show,
}


def translate(payload: dict[str, Any], lookup: Lookup) -> Translated:
    trigger = payload.get("triggerEvent")
    if not isinstance(trigger, str) or not trigger:
        raise Untranslatable("triggerEvent", "missing: is a payload template set in Cal.com?")
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
    description="Cal.com booking webhooks: created, requested, rescheduled, cancelled, "
    "rejected, paid and no-show",
    setup_url="https://app.cal.com/settings/developer/webhooks",
)


@hookimpl
def register_sources(register: Callable[[SourceType], None]) -> None:
    register(CALCOM)
