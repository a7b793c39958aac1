"""LinkTime booking source ``calendly``: Calendly's webhooks (API v2) as booking events.

``invitee.created`` becomes ``booking.created`` (and ``payment.received`` when the invitee paid
while booking, named ``payment:{external_id}`` by the processor's id of the payment, as every
source names it, so a payment Stripe reports too is one event); ``invitee.canceled`` becomes
``booking.cancelled``. A reschedule, which Calendly sends as an ``invitee.canceled`` with
``rescheduled: true`` and an ``invitee.created`` carrying ``old_invitee``, becomes one
``booking.rescheduled`` of the original booking, whichever half arrives first: the canceled
half is no event, the created half is the reschedule.

A booking's uid is the UUID of the invitee who booked it (one invitee is one booking of a
one-on-one event); the invitee that replaces it on a reschedule is remembered as naming the
same booking, so its later cancellation or reschedule is of that booking too.

Requests are verified with ``Calendly-Webhook-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"{t}.{raw body}" with the subscription's signing key>``; one older than
``linktime.sources.MAX_SIGNATURE_AGE`` is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
)
from pydantic import BaseModel, Field, SecretStr

__version__ = "0.1.0"

HEADER = "Calendly-Webhook-Signature"
CREATED = "invitee.created"
CANCELED = "invitee.canceled"

# Custom field keys the core accepts; an answer is cut to the core's limit.
_UNSAFE_KEY = re.compile(r"[^a-z0-9_.-]")
_MAX_KEY = 100
_MAX_ANSWER = 2000
# An invitee's URI: https://api.calendly.com/scheduled_events/<event>/invitees/<invitee uuid>
_INVITEE_URI = re.compile(r"/invitees/([A-Za-z0-9_-]{1,100})/?$")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
# Longer than any IANA zone name (the longest is about 30): a longer one is not a zone.
_MAX_TIMEZONE = 100
_MAX_EMAIL = 320
# A payment's event id by its processor's id, the same from every source that reports it; an
# id longer than this would not fit the core's 200 characters.
PAYMENT_ID = "payment:{}"
_MAX_PAYMENT_ID = 190
# No booking is paid a trillion in any currency: a larger amount is not one.
_MAX_AMOUNT = 10**12


class CalendlySettings(BaseModel):
    signing_key: SecretStr = Field(
        description="The webhook subscription's signing key: the one you pass as signing_key "
        "when creating the subscription, or your OAuth app's webhook signing key"
    )


# --- signatures -------------------------------------------------------------------------------


def _mac(key: str, t: str, body: bytes) -> str:
    return hmac.new(key.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes, settings: CalendlySettings, now: datetime) -> dict[str, str]:
    """The header Calendly sends with ``body`` at ``now``."""
    t = str(int(now.timestamp()))
    return {HEADER: f"t={t},v1={_mac(settings.signing_key.get_secret_value(), t, body)}"}


def _header(request: Inbound) -> str:
    wanted = HEADER.lower()
    return next((v for k, v in request.headers.items() if k.lower() == wanted), "")


def verify(request: Inbound, settings: CalendlySettings) -> None:
    parts = dict(p.strip().split("=", 1) for p in _header(request).split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not (t and v1):
        raise SourceRefused(f"no {HEADER} header with t= and v1=")
    if not (t.isascii() and t.isdigit()):
        raise SourceRefused(f"the {HEADER} timestamp is not a Unix time")
    expected = _mac(settings.signing_key.get_secret_value(), t, request.body)
    if not hmac.compare_digest(expected.encode(), v1.encode()):
        raise SourceRefused("the signature does not match")
    # A retry Calendly makes later is signed anew; an old signature is a replayed request.
    try:
        signed_at = datetime.fromtimestamp(int(t), UTC)
    except (OverflowError, OSError, ValueError):
        raise SourceRefused(f"the {HEADER} timestamp is not a time") from None
    if abs(request.now - signed_at) > MAX_SIGNATURE_AGE:
        minutes = int(MAX_SIGNATURE_AGE.total_seconds() // 60)
        raise SourceRefused(f"the signature's timestamp is more than {minutes} minutes off")


# --- reading the payload ----------------------------------------------------------------------


def _at(path: str, key: str) -> str:
    """The dotted path of ``key`` in the object at ``path`` ("" the payload's top)."""
    return f"{path}.{key}" if path else key


def _object(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise Untranslatable(_at(path, key), "expected an object")
    return value


def _text(data: dict[str, Any], key: str, path: str, limit: int | None = None) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Untranslatable(_at(path, key), "expected a string")
    if limit is not None and len(value) > limit:
        raise Untranslatable(_at(path, key), f"longer than {limit} characters")
    return value


def _optional_object(data: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise Untranslatable(_at(path, key), "expected an object")
    return value


def _list(data: dict[str, Any], key: str, path: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Untranslatable(_at(path, key), "expected a list")
    return value


def _required(data: dict[str, Any], key: str, path: str) -> str:
    value = _text(data, key, path)
    if value is None:
        raise Untranslatable(_at(path, key), "missing")
    return value


def _moment(data: dict[str, Any], key: str, path: str) -> datetime:
    value = _required(data, key, path)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Untranslatable(_at(path, key), "expected an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise Untranslatable(_at(path, key), "expected a timestamp with a timezone")
    return moment


def _uuid(uri: str, path: str) -> str:
    """The invitee UUID at the end of a Calendly invitee URI."""
    found = _INVITEE_URI.search(uri)
    if found is None:
        raise Untranslatable(path, "expected a Calendly invitee URI (…/invitees/<uuid>)")
    return found.group(1)


def _last_segment(uri: str | None) -> str | None:
    return uri.rstrip("/").rsplit("/", 1)[-1] if uri else None


def _timezone(invitee: dict[str, Any]) -> str:
    name = _text(invitee, "timezone", "payload", _MAX_TIMEZONE) or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Untranslatable("payload.timezone", f"unknown IANA timezone {name!r}") from None
    return name


def custom_key(question: str) -> str:
    """A question as a custom field key: lower-case, each character the core does not allow
    in a key made "_", no "_", "." or "-" at either end, at most 100 characters."""
    return _UNSAFE_KEY.sub("_", question.lower()).strip("_.-")[:_MAX_KEY]


def _answers(invitee: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The booking form's answers as custom fields, and each question with its key and its
    original text (``booking.questions``), in the form's order."""
    given = _list(invitee, "questions_and_answers", "payload")
    fields: dict[str, Any] = {}
    questions: list[dict[str, Any]] = []
    for n, item in enumerate(given):
        path = f"payload.questions_and_answers.{n}"
        if not isinstance(item, dict):
            raise Untranslatable(path, "expected an object")
        question = _required(item, "question", path)
        answer = _text(item, "answer", path)
        base = custom_key(question) or f"question_{n + 1}"
        key, again = base, 2
        while key in fields:  # two questions that read alike keep both answers
            suffix = f"_{again}"
            key, again = base[: _MAX_KEY - len(suffix)] + suffix, again + 1
        fields[key] = answer[:_MAX_ANSWER] if answer is not None else None
        questions.append({"key": key, "question": question, "answer": answer})
    return fields, questions


def _location(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """Where the meeting is (an address, a phone number, or the conferencing kind) and its
    join URL when it is online."""
    where = _optional_object(event, "location", "payload.scheduled_event")
    if where is None:
        return None, None
    join = _text(where, "join_url", "payload.scheduled_event.location")
    place = _text(where, "location", "payload.scheduled_event.location")
    return place or join or _text(where, "type", "payload.scheduled_event.location"), join


def _hosts(event: dict[str, Any]) -> list[dict[str, Any]]:
    members = _list(event, "event_memberships", "payload.scheduled_event")
    hosts = []
    for n, member in enumerate(members):
        path = f"payload.scheduled_event.event_memberships.{n}"
        if not isinstance(member, dict):
            raise Untranslatable(path, "expected an object")
        email = _text(member, "user_email", path, _MAX_EMAIL)
        name = _text(member, "user_name", path) or email
        if name:
            hosts.append({"name": name, "email": email})
    return hosts


def _guests(event: dict[str, Any]) -> list[dict[str, Any]]:
    guests = []
    for n, guest in enumerate(_list(event, "event_guests", "payload.scheduled_event")):
        path = f"payload.scheduled_event.event_guests.{n}"
        if not isinstance(guest, dict):
            raise Untranslatable(path, "expected an object")
        email = _text(guest, "email", path, _MAX_EMAIL)
        if email:
            guests.append({"email": email})
    return guests


def _tracking(invitee: dict[str, Any]) -> dict[str, str]:
    """The UTM parameters (and Salesforce id) that are set."""
    tracking = _optional_object(invitee, "tracking", "payload") or {}
    return {k: v for k in tracking if (v := _text(tracking, k, "payload.tracking", _MAX_ANSWER))}


def _amount(paid: dict[str, Any]) -> Decimal:
    amount = paid.get("amount")
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not (math.isfinite(amount) and 0 <= amount < _MAX_AMOUNT)
    ):
        raise Untranslatable("payload.payment.amount", "expected the amount paid (a number)")
    return Decimal(str(amount))


def _payment(invitee: dict[str, Any]) -> dict[str, Any] | None:
    paid = _optional_object(invitee, "payment", "payload")
    if paid is None:
        return None
    currency = _required(paid, "currency", "payload.payment")
    if not _CURRENCY.fullmatch(currency):
        raise Untranslatable("payload.payment.currency", "expected a three-letter currency code")
    return {
        "amount": _amount(paid),
        "currency": currency.upper(),
        "reference": _text(paid, "external_id", "payload.payment", _MAX_PAYMENT_ID),
        "provider": _text(paid, "provider", "payload.payment", 200),
        "successful": paid.get("successful") is True,
    }


def _booking(invitee: dict[str, Any], uid: str) -> dict[str, Any]:
    """The booking as the invitee payload describes it (its scheduled event inline)."""
    event = _object(invitee, "scheduled_event", "payload")
    where, join = _location(event)
    hosts = _hosts(event)
    fields, questions = _answers(invitee)
    name = _text(invitee, "name", "payload") or " ".join(
        n
        for n in (_text(invitee, "first_name", "payload"), _text(invitee, "last_name", "payload"))
        if n
    )
    person = {
        "name": name or _required(invitee, "email", "payload"),
        "email": _text(invitee, "email", "payload", _MAX_EMAIL),
        "phone": _text(invitee, "text_reminder_number", "payload"),
        "timezone": _timezone(invitee),
    }
    title = _text(event, "name", "payload.scheduled_event")
    type_uri = _text(event, "event_type", "payload.scheduled_event")
    return {
        "uid": uid,
        "title": title,
        "event_type": {"id": _last_segment(type_uri), "title": title},
        "start": _moment(event, "start_time", "payload.scheduled_event"),
        "end": _moment(event, "end_time", "payload.scheduled_event"),
        "location": where,
        "meeting_url": join,
        "host": hosts[0] if hosts else None,
        "hosts": hosts,
        "invitee": person,
        "invitees": [person],
        "guests": _guests(event),
        "cancel_url": _text(invitee, "cancel_url", "payload"),
        "reschedule_url": _text(invitee, "reschedule_url", "payload"),
        "payment": _payment(invitee),
        "custom_fields": fields,
        # Kept beside the core's fields: the questions as asked, the UTM parameters, and the
        # Calendly resources the booking came from.
        "questions": questions,
        "tracking": _tracking(invitee),
        "calendly": {
            "invitee": invitee.get("uri"),
            "scheduled_event": _text(event, "uri", "payload.scheduled_event", 2000),
            "event_type": type_uri,
        },
    }


# --- translation ------------------------------------------------------------------------------


def _event(kind: str, event_id: str, at: datetime, booking: dict[str, Any]) -> BookingEvent:
    return BookingEvent.model_validate(
        {"id": event_id, "type": kind, "occurred_at": at, "booking": booking}
    )


def _created(invitee: dict[str, Any], me: str, at: datetime, lookup: Lookup) -> Translated:
    event_id = f"calendly:{CREATED}:{me}"
    old_uri = _text(invitee, "old_invitee", "payload")
    if old_uri is None:
        booking = _booking(invitee, me)
        events = [_event("booking.created", event_id, at, booking)]
        payment = booking["payment"]
        if payment is not None and payment["successful"]:
            reference = payment["reference"]
            paid_id = PAYMENT_ID.format(reference) if reference else f"calendly:payment:{me}"
            events.append(_event("payment.received", paid_id, at, booking))
        return Translated(events)
    # The new half of a reschedule: the original booking, moved.
    old = _uuid(old_uri, "payload.old_invitee")
    uid = lookup.alias(old) or old
    lookup.remember(me, uid)
    booking = _booking(invitee, uid)
    before = lookup.booking(uid)
    booking["previous_start"] = before.start if before is not None else None
    # Paid once, when first booked: a reschedule carries that payment, not a new one.
    return Translated([_event("booking.rescheduled", event_id, at, booking)])


def _canceled(invitee: dict[str, Any], me: str, at: datetime, lookup: Lookup) -> Translated:
    uid = lookup.alias(me) or me
    if invitee.get("rescheduled") is True:
        new_uri = _text(invitee, "new_invitee", "payload")
        if new_uri is not None:
            lookup.remember(_uuid(new_uri, "payload.new_invitee"), uid)
        return Translated(
            note=f"booking {uid} was rescheduled: its invitee.created (old_invitee) is the "
            "booking.rescheduled; this half cancels nothing"
        )
    booking = _booking(invitee, uid)
    cancellation = _optional_object(invitee, "cancellation", "payload")
    if cancellation is not None:
        booking["cancellation_reason"] = _text(cancellation, "reason", "payload.cancellation")
        booking["cancelled_by"] = _text(cancellation, "canceled_by", "payload.cancellation")
        booking["canceler_type"] = _text(cancellation, "canceler_type", "payload.cancellation")
    booking["status"] = "cancelled"
    return Translated([_event("booking.cancelled", f"calendly:{CANCELED}:{me}", at, booking)])


def translate(payload: dict[str, Any], lookup: Lookup) -> Translated:
    kind = payload.get("event")
    if kind not in (CREATED, CANCELED):
        shown = repr(kind)[:100]
        return Translated(note=f"Calendly event {shown} is not mapped to a booking event")
    at = _moment(payload, "created_at", "")
    invitee = _object(payload, "payload", "")
    me = _uuid(_required(invitee, "uri", "payload"), "payload.uri")
    return (_created if kind == CREATED else _canceled)(invitee, me, at, lookup)


def sample(now: datetime) -> dict[str, Any]:
    """An ``invitee.created`` as Calendly sends it, for a meeting tomorrow."""
    start = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    event_uri = "https://api.calendly.com/scheduled_events/SAMPLEEVENT00001"
    invitee_uri = f"{event_uri}/invitees/SAMPLE-{int(now.timestamp())}"
    stamp = now.isoformat().replace("+00:00", "Z")
    return {
        "created_at": stamp,
        "created_by": "https://api.calendly.com/users/SAMPLEUSER000001",
        "event": CREATED,
        "payload": {
            "cancel_url": "https://calendly.com/cancellations/SAMPLE",
            "created_at": stamp,
            "email": "grace@example.com",
            "event": event_uri,
            "first_name": None,
            "last_name": None,
            "name": "Grace Hopper",
            "new_invitee": None,
            "old_invitee": None,
            "payment": None,
            "questions_and_answers": [{"question": "Company", "answer": "Acme", "position": 0}],
            "reschedule_url": "https://calendly.com/reschedulings/SAMPLE",
            "rescheduled": False,
            "scheduled_event": {
                "uri": event_uri,
                "name": "Intro call",
                "status": "active",
                "start_time": start.isoformat().replace("+00:00", "Z"),
                "end_time": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
                "event_type": "https://api.calendly.com/event_types/SAMPLETYPE000001",
                "location": {"type": "zoom", "join_url": "https://zoom.us/j/1000000001"},
                "event_memberships": [
                    {
                        "user": "https://api.calendly.com/users/SAMPLEUSER000001",
                        "user_email": "ada@example.com",
                        "user_name": "Ada Lovelace",
                    }
                ],
                "event_guests": [],
            },
            "status": "active",
            "text_reminder_number": None,
            "timezone": "America/New_York",
            "tracking": {"utm_source": None},
            "uri": invitee_uri,
        },
    }


CALENDLY = SourceType(
    name="calendly",
    title="Calendly",
    settings=CalendlySettings,
    verify=verify,
    translate=translate,
    sign=sign,
    sample=sample,
    secret_field="signing_key",
    description="Calendly bookings: invitee.created and invitee.canceled (reschedules as one "
    "booking.rescheduled), the booking form's answers as custom fields",
    setup_url="https://calendly.com/integrations/api_webhooks",
)


@hookimpl
def register_sources(register: Callable[[SourceType], None]) -> None:
    register(CALENDLY)
