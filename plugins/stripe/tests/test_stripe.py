"""The stripe source against a running LinkTime server: Stripe's events, shaped as its API
reference shows them (fixtures/, sources in the README), posted over HTTP signed as Stripe
signs them, and what they became read back through the API as the account."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe as stripe_lib
from linktime.sources import major_units
from linktime.testing_hub import LinktimeServer
from linktime_stripe import HEADER

FIXTURES = Path(__file__).parent / "fixtures"
# An endpoint secret as Stripe's Dashboard shows it (the user pastes theirs in).
SECRET = "whsec_5f8a1c0e9b7d4e2f8a6c3b1d0e9f7a5c"
PI = "pi_3MtwBwLkdIwHu7ix28a3tqPa"  # the PaymentIntent of both fixtures: one payment
UID = "bk_intro_42"  # the booking both fixtures name in their metadata

BOOKING: dict[str, Any] = {
    "uid": UID,
    "title": "Intro call between Ada Lovelace and Grace Hopper",
    "status": "accepted",
    "event_type": {"id": 7, "slug": "intro-call", "title": "Intro call"},
    "start": "2026-12-10T15:00:00Z",
    "end": "2026-12-10T15:30:00Z",
    "location": "Online",
    "meeting_url": "https://meet.example.com/intro-42",
    "host": {"name": "Ada Lovelace", "email": "ada@example.com", "timezone": "Europe/London"},
    "invitee": {
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "timezone": "America/New_York",
    },
    "custom_fields": {"company": "Navy"},
}


def stripe_event(name: str, **changes: Any) -> dict[str, Any]:
    """The fixture ``name`` (an Event as Stripe sends it), created now, with ``changes`` made to
    its ``data.object``."""
    event: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / f"{name}.json").read_text()))
    event["created"] = int(datetime.now(UTC).timestamp())
    event["data"]["object"].update(changes)
    return event


def book(server: LinktimeServer, uid: str = UID) -> None:
    """The booking, made first through ``POST /v1/events`` with the account's API key."""
    created = {
        "id": f"evt_booked_{uid}",
        "type": "booking.created",
        "occurred_at": "2026-12-01T09:00:00Z",
        "booking": {**BOOKING, "uid": uid},
    }
    answer = server.http.post("/v1/events", json=created)
    assert answer.status_code in (201, 202), answer.text  # 202: no workflow ran


def post(
    server: LinktimeServer, connection: dict[str, Any], payload: dict[str, Any], **kw: Any
) -> httpx.Response:
    """Post as Stripe does, signed with the endpoint secret the user gave."""
    return server.post_signed(connection, payload, **{"secret": SECRET, **kw})


@pytest.fixture
def stripe(linktime_server: LinktimeServer) -> dict[str, Any]:
    """A Stripe connection with the user's own endpoint secret."""
    connection = linktime_server.connect("stripe", signing_secret=SECRET)
    assert connection["settings"]["signing_secret"] == "********"
    return connection


def signed_at(body: bytes, timestamp: int) -> str:
    """The Stripe-Signature header Stripe's library makes for ``body`` at ``timestamp``."""
    header: str = stripe_lib.WebhookSignature.generate_signature_header(
        body.decode(), SECRET, timestamp=timestamp
    )
    return header


def deliveries(server: LinktimeServer, connection: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.get(f"/v1/sources/{connection['id']}/deliveries")
    return found


def test_a_paid_checkout_session_is_a_payment_for_its_booking(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    book(linktime_server)
    paid = stripe_event("checkout.session.completed")

    answer = post(linktime_server, stripe, paid)

    assert answer.status_code == 200, answer.text
    event = linktime_server.get(f"/v1/events/payment:{PI}")
    assert (event["type"], event["source"], event["booking_uid"]) == (
        "payment.received",
        "stripe",
        UID,
    )
    assert datetime.fromisoformat(event["occurred_at"]).timestamp() == paid["created"]
    booking = event["booking"]
    assert booking["payment"] == {"amount": "21.98", "currency": "USD", "reference": PI}
    for field in ("uid", "title", "status", "event_type", "location", "meeting_url"):
        assert booking[field] == BOOKING[field], field
    assert (booking["start"], booking["end"]) == ("2026-12-10T15:00:00Z", "2026-12-10T15:30:00Z")
    assert booking["host"]["email"] == "ada@example.com"
    assert (booking["invitee"]["name"], booking["invitee"]["email"]) == (
        "Grace Hopper",
        "grace@example.com",
    )
    assert booking["invitee"]["timezone"] == "America/New_York"
    assert booking["custom_fields"] == {"company": "Navy"}


def test_stripes_retry_and_the_payment_intents_own_event_are_replays(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    """checkout.session.completed, its retry, then payment_intent.succeeded of the same
    PaymentIntent: one payment.received ("Payment Received" fires once)."""
    book(linktime_server)
    session = stripe_event("checkout.session.completed")
    for payload in (session, session, stripe_event("payment_intent.succeeded")):
        answer = post(linktime_server, stripe, payload)
        assert answer.status_code == 200, answer.text

    kept = deliveries(linktime_server, stripe)
    assert [d["kind"] for d in kept] == [
        "payment_intent.succeeded",
        "checkout.session.completed",
        "checkout.session.completed",
    ]
    assert [[(e["id"], e["replayed"]) for e in d["events"]] for d in kept] == [
        [(f"payment:{PI}", True)],
        [(f"payment:{PI}", True)],
        [(f"payment:{PI}", False)],
    ]
    listed = linktime_server.get(f"/v1/events?q={UID}")["items"]
    assert sorted(e["type"] for e in listed) == ["booking.created", "payment.received"]


def test_a_payment_in_yen_is_whole_yen(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    book(linktime_server)
    yen = stripe_event(
        "payment_intent.succeeded", id="pi_yen", currency="jpy", amount=5000, amount_received=5000
    )

    answer = post(linktime_server, stripe, yen)

    assert answer.status_code == 200, answer.text
    payment = linktime_server.get("/v1/events/payment:pi_yen")["booking"]["payment"]
    assert payment == {"amount": "5000", "currency": "JPY", "reference": "pi_yen"}


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [
        (2198, "usd", Decimal("21.98")),
        (5000, "jpy", Decimal("5000")),
        (150000, "krw", Decimal("150000")),
        (12340, "kwd", Decimal("12.340")),
        (5000, "bhd", Decimal("5.000")),
        (100, "isk", Decimal("1.00")),  # ISK stays two-decimal in Stripe's API
        (0, "eur", Decimal("0.00")),
    ],
)
def test_stripe_amounts_are_read_in_the_currencys_minor_unit(
    minor: int, currency: str, amount: Decimal
) -> None:
    converted = major_units(minor, currency)
    assert (converted, str(converted)) == (amount, str(amount))


def test_a_payment_for_no_known_booking_is_kept_with_a_note(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    """Answered 202, so Stripe does not retry it for days; listed in the deliveries."""
    cases = [
        (stripe_event("checkout.session.completed"), f"kept: no booking '{UID}'"),
        (stripe_event("payment_intent.succeeded", metadata={}), "kept: no booking named"),
        (
            stripe_event("checkout.session.completed", id="cs_unpaid", payment_status="unpaid"),
            "kept: the session's payment_status is unpaid",
        ),
        ({**stripe_event("payment_intent.succeeded"), "type": "charge.refunded"}, "not mapped"),
    ]
    for payload, note in cases:
        answer = post(linktime_server, stripe, payload)
        assert answer.status_code == 202, answer.text
        assert note in answer.json()["note"]
        assert answer.json()["events"] == []

    kept = deliveries(linktime_server, stripe)[::-1]  # oldest first, as posted
    assert [(d["status"], d["events"]) for d in kept] == [("ignored", [])] * len(cases)
    assert [note in d["reason"] for d, (_, note) in zip(kept, cases, strict=True)] == [True] * 4
    assert linktime_server.http.get(f"/v1/events/payment:{PI}").status_code == 404


def test_requests_not_signed_by_the_endpoint_are_refused_and_nothing_is_kept(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    book(linktime_server)
    theirs = linktime_server.connect("stripe", signing_secret="whsec_another_endpoint_secret")
    paid = stripe_event("checkout.session.completed")
    body = json.dumps(paid).encode()
    now = int(datetime.now(UTC).timestamp())
    refused = {
        "forged": post(linktime_server, stripe, paid, headers={HEADER: f"t={now},v1={'0' * 64}"}),
        "stale": post(linktime_server, stripe, paid, now=datetime.now(UTC) - timedelta(minutes=6)),
        "another connection's secret": post(
            linktime_server, stripe, paid, secret="whsec_another_endpoint_secret"
        ),
        "unsigned": post(linktime_server, stripe, paid, headers={HEADER: ""}),
        # Signed with the secret, at a time beyond what a datetime holds.
        "from beyond the year 9999": post(
            linktime_server, stripe, body, headers={HEADER: signed_at(body, 10**20)}
        ),
    }
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 401)
    assert {r.json()["error"] for r in refused.values()} == {"bad_signature"}
    assert "older than 5 minutes" in refused["stale"].json()["fields"][0]["message"]
    assert refused["from beyond the year 9999"].json()["fields"][0]["message"] == (
        f"the {HEADER} timestamp is not a time"
    )
    assert linktime_server.http.get(f"/v1/events/payment:{PI}").status_code == 404
    assert deliveries(linktime_server, stripe) == []
    assert deliveries(linktime_server, theirs) == []


def test_a_payment_without_its_amount_is_untranslatable_and_kept_with_the_reason(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    book(linktime_server)

    answer = post(
        linktime_server, stripe, stripe_event("checkout.session.completed", amount_total=None)
    )

    assert answer.status_code == 422, answer.text
    assert answer.json()["fields"] == [
        {"field": "data.object.amount_total", "message": "expected the amount in minor units"}
    ]
    [kept] = deliveries(linktime_server, stripe)
    assert (kept["status"], kept["kind"], kept["reason"]) == (
        "untranslatable",
        "checkout.session.completed",
        "data.object.amount_total: expected the amount in minor units",
    )
    assert linktime_server.http.get(f"/v1/events/payment:{PI}").status_code == 404


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("payment_intent.succeeded", "created", 10**20),
        ("payment_intent.succeeded", "created", "1700000000"),
        ("payment_intent.succeeded", "data.object.id", 5),
        ("payment_intent.succeeded", "data.object.id", "pi_" + "0" * 190),
        ("payment_intent.succeeded", "data.object.metadata", ["booking_uid"]),
        ("payment_intent.succeeded", "data.object.metadata.booking_uid", {"uid": UID}),
        ("payment_intent.succeeded", "data.object.currency", "ÿÿÿ"),
        ("payment_intent.succeeded", "data.object.amount_received", -1),
        ("checkout.session.completed", "data.object.payment_intent", ["pi_1"]),
        ("checkout.session.completed", "data.object.payment_status", ["paid"]),
    ],
)
def test_a_wrong_type_or_an_absurd_value_is_a_422_naming_the_field(
    linktime_server: LinktimeServer, stripe: dict[str, Any], name: str, path: str, value: Any
) -> None:
    book(linktime_server)
    payment = stripe_event(name)
    *parents, last = path.split(".")
    target = payment
    for key in parents:
        target = target[key]
    target[last] = value

    answer = post(linktime_server, stripe, payment)

    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["fields"]] == [path]
    [kept] = deliveries(linktime_server, stripe)
    assert kept["status"] == "untranslatable" and kept["reason"].startswith(f"{path}: ")
    assert linktime_server.http.get(f"/v1/events/payment:{PI}").status_code == 404


def test_a_session_without_a_payment_intent_is_named_by_its_own_id(
    linktime_server: LinktimeServer, stripe: dict[str, Any]
) -> None:
    book(linktime_server)
    paid = stripe_event("checkout.session.completed", payment_intent=None)
    assert post(linktime_server, stripe, paid).status_code == 200
    session = paid["data"]["object"]["id"]
    event = linktime_server.get(f"/v1/events/stripe:{session}")
    assert event["booking"]["payment"]["reference"] == session


def test_the_sample_is_signed_as_stripe_signs_it(linktime_server: LinktimeServer) -> None:
    """ "Send a sample": kept until the account has booking bk_sample, then a payment for it."""
    connection = linktime_server.connect("stripe", signing_secret=SECRET)
    url = f"/v1/sources/{connection['id']}/sample"

    before = linktime_server.http.post(url)
    assert before.status_code == 202, before.text
    assert before.json()["note"] == "kept: no booking 'bk_sample' has reached this account yet"

    book(linktime_server, "bk_sample")
    after = linktime_server.http.post(url)
    assert after.status_code == 200, after.text
    event = linktime_server.get("/v1/events/payment:pi_3SampleLinkTime0000000001")
    assert event["booking"]["payment"]["amount"] == "50.00"


def test_the_secret_must_be_the_one_stripe_made(linktime_server: LinktimeServer) -> None:
    """Stripe makes the endpoint's secret: none is generated, and a rotation needs the new one."""
    refused = linktime_server.http.post("/v1/sources", json={"type": "stripe", "settings": {}})
    assert refused.status_code == 422
    [problem] = refused.json()["fields"]
    assert problem["field"] == "settings.signing_secret"
    assert problem["message"].startswith("Stripe makes this secret: copy it from https://")
    connection = linktime_server.connect("stripe", signing_secret=SECRET)
    rotate = f"/v1/sources/{connection['id']}/rotate-secret"
    assert linktime_server.http.post(rotate, json={}).status_code == 422
    rotated = linktime_server.http.post(rotate, json={"secret": "whsec_rolled_by_stripe"})
    assert rotated.status_code == 200 and rotated.json()["settings"]["signing_secret"] == "********"
