"""LinkTime booking source ``stripe``: a Stripe payment for a booking becomes ``payment.received``.

Stripe knows nothing of bookings, so the payment names one in its metadata: ``booking_uid`` on
the Checkout Session (``checkout.session.completed``, and ``checkout.session.async_payment_
succeeded`` for payment methods that settle later) or on the PaymentIntent
(``payment_intent.succeeded``). The booking event is that booking as the account's latest event
describes it (from any source: Cal.com, Calendly, ``POST /v1/events``) with the payment added.

Both events of one payment carry the same PaymentIntent, which is the event id
(``payment:pi_…``, the id every source gives the payment it names: Cal.com's BOOKING_PAID of it
too): Stripe's retries, the second of the pair and another source's report of the same payment
are replays, so "Payment Received" fires once. A Checkout Session without a PaymentIntent (no
payment was taken through one) is named by its own id (``stripe:cs_…``).

Requests are verified with the official ``stripe`` library (``Stripe-Signature``:
``t=…,v1=<HMAC-SHA256 of "{t}.{body}">`` with the endpoint's ``whsec_…`` secret).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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

HEADER = "Stripe-Signature"

# Stripe's ids are far shorter: at most this, the event id (payment:{id}) fits the core's 200.
MAX_ID = 190
MAX_UID = 200  # the core's limit on a booking's uid
# A payment's event id by its PaymentIntent, the same from every source that reports it.
PAYMENT_ID = "payment:{}"

CHECKOUT_PAID = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
INTENT_PAID = "payment_intent.succeeded"


class StripeSettings(BaseModel):
    signing_secret: SecretStr = Field(
        description="The endpoint's signing secret, whsec_…, from Stripe's Dashboard "
        "(Developers → Webhooks → your endpoint → Signing secret)",
        min_length=1,
        max_length=500,
    )


def _signature_header(request: Inbound) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == HEADER.lower()), None)


def verify(request: Inbound, settings: StripeSettings) -> None:
    """Stripe's own check of the signature; its age is judged by the hub's clock, as the
    library's ``construct_event(tolerance=300)`` judges it by the process clock."""
    header = _signature_header(request)
    if not header:
        raise SourceRefused(f"no {HEADER} header")
    # Imported on first use, so a server that takes no Stripe event does not load Stripe's SDK.
    import stripe

    try:
        stripe.WebhookSignature.verify_header(
            request.body, header, settings.signing_secret.get_secret_value()
        )
    except stripe.SignatureVerificationError as exc:
        raise SourceRefused(str(exc)) from None
    except UnicodeDecodeError:
        raise SourceRefused("the body is not UTF-8, so not signed by Stripe") from None
    # The timestamp verify_header signed: its first t, read as it reads it.
    signed = next(int(p.split("=", 2)[1]) for p in header.split(",") if p.split("=")[0] == "t")
    at = _moment(signed)
    if at is None:
        raise SourceRefused(f"the {HEADER} timestamp is not a time")
    if request.now - at > MAX_SIGNATURE_AGE:
        minutes = int(MAX_SIGNATURE_AGE.total_seconds() // 60)
        raise SourceRefused(f"the {HEADER} timestamp is older than {minutes} minutes")


def _moment(unix: int) -> datetime | None:
    """A Unix time as a moment; None beyond what a datetime holds."""
    try:
        return datetime.fromtimestamp(unix, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def sign(body: bytes, settings: StripeSettings, now: datetime) -> dict[str, str]:
    import stripe

    header: str = stripe.WebhookSignature.generate_signature_header(
        body.decode(), settings.signing_secret.get_secret_value(), timestamp=int(now.timestamp())
    )
    return {HEADER: header}


def _string(
    obj: dict[str, Any], key: str, path: str = "data.object", limit: int = MAX_ID
) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Untranslatable(f"{path}.{key}", "expected a string")
    if len(value) > limit:
        raise Untranslatable(f"{path}.{key}", f"longer than {limit} characters")
    return value


def _amount(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Untranslatable(f"data.object.{key}", "expected the amount in minor units")
    return value


def _currency(obj: dict[str, Any]) -> str:
    value = obj.get("currency")
    if not isinstance(value, str) or len(value) != 3 or not (value.isascii() and value.isalpha()):
        raise Untranslatable("data.object.currency", "expected a three-letter currency code")
    return value.upper()


def translate(payload: dict[str, Any], lookup: Lookup) -> Translated:
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise Untranslatable("type", "expected the Stripe event's type")
    if kind not in (*CHECKOUT_PAID, INTENT_PAID):
        mapped = ", ".join((*CHECKOUT_PAID, INTENT_PAID))
        return Translated(
            note=f"{kind[:100]} is not mapped; these become payment.received: {mapped}"
        )
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise Untranslatable("data.object", "expected the event's object")
    created = payload.get("created")
    at = None if isinstance(created, bool) or not isinstance(created, int) else _moment(created)
    if at is None:
        raise Untranslatable("created", "expected a Unix time")
    if kind == INTENT_PAID:
        amount, reference = _amount(obj, "amount_received"), _string(obj, "id")
    else:
        status = _string(obj, "payment_status")
        if status != "paid":
            return Translated(note=f"kept: the session's payment_status is {status}, not paid")
        amount = _amount(obj, "amount_total")
        reference = _string(obj, "payment_intent") or _string(obj, "id")
    if reference is None:
        raise Untranslatable("data.object.id", "expected the object's id")
    currency = _currency(obj)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise Untranslatable("data.object.metadata", "expected an object")
    uid = _string(metadata, "booking_uid", "data.object.metadata", MAX_UID) if metadata else None
    if uid is None:
        return Translated(
            note="kept: no booking named: set metadata.booking_uid on the Checkout Session or "
            "PaymentIntent (see the stripe plugin's README)"
        )
    booking = lookup.booking(uid)
    if booking is None:
        return Translated(note=f"kept: no booking {uid!r} has reached this account yet")
    payment = {"amount": major_units(amount, currency), "currency": currency}
    # One payment, whoever reports it (Stripe, Cal.com, Calendly), is one event.
    intent = reference.startswith("pi_")
    event = {
        "id": PAYMENT_ID.format(reference) if intent else f"stripe:{reference}",
        "type": "payment.received",
        "occurred_at": at,
        "booking": {**booking.model_dump(), "payment": {**payment, "reference": reference}},
    }
    return Translated([BookingEvent.model_validate(event)])


def sample(now: datetime) -> dict[str, Any]:
    """A ``payment_intent.succeeded`` for booking ``bk_sample``: kept with a note unless the
    account has that booking."""
    created = int(now.timestamp())
    return {
        "id": "evt_3SampleLinkTime0000000001",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": created,
        "data": {
            "object": {
                "id": "pi_3SampleLinkTime0000000001",
                "object": "payment_intent",
                "amount": 5000,
                "amount_received": 5000,
                "created": created,
                "currency": "usd",
                "livemode": False,
                "metadata": {"booking_uid": "bk_sample"},
                "status": "succeeded",
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": INTENT_PAID,
    }


STRIPE = SourceType(
    name="stripe",
    title="Stripe",
    settings=StripeSettings,
    verify=verify,
    translate=translate,
    sign=sign,
    sample=sample,
    secret_from_provider=True,
    description="A paid Checkout Session or PaymentIntent whose metadata names a booking "
    "(booking_uid) becomes payment.received for that booking.",
    setup_url="https://dashboard.stripe.com/webhooks",
)


@hookimpl
def register_sources(register: Callable[[SourceType], None]) -> None:
    register(STRIPE)
