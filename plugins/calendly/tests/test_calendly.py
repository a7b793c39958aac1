"""Calendly's webhooks, posted as Calendly sends and signs them (fixtures/, cited in the README)
to a running LinkTime server over HTTP, and what they became, read back through the API."""

from __future__ import annotations

import hmac
import json
from datetime import datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import httpx
import pytest
from linktime.models import BookingEvent
from linktime.templating import render
from linktime.testing_hub import LinktimeServer
from linktime_calendly import HEADER, custom_key

FIXTURES = Path(__file__).parent / "fixtures"
A = "8a2b4c6d-1e3f-4a5b-8c7d-9e0f1a2b3c4d"  # the invitee who booked
B = "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e"  # the invitee that replaced A on a reschedule
CREATED_A, CANCELED_A = f"calendly:invitee.created:{A}", f"calendly:invitee.canceled:{A}"
CREATED_B, CANCELED_B = f"calendly:invitee.created:{B}", f"calendly:invitee.canceled:{B}"
COMPANY_EXISTS = {"field": "custom.company", "op": "exists"}


def load(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return payload


def post(server: LinktimeServer, conn: dict[str, Any], name: str) -> httpx.Response:
    return server.post_signed(conn, load(name))


def deliveries(server: LinktimeServer, conn: dict[str, Any]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = server.get(f"/v1/sources/{conn['id']}/deliveries")
    return listed


def save(server: LinktimeServer, trigger: str, **more: Any) -> str:
    """An enabled workflow on ``trigger`` whose one step is the core's logic.filter."""
    step = {"action": "logic.filter", "settings": {"conditions": [COMPANY_EXISTS]}}
    workflow = {"name": trigger, "trigger": trigger, "enabled": True, "steps": [step], **more}
    answer = server.http.post("/v1/workflows", json=workflow)
    assert answer.status_code == 201, answer.text
    workflow_id: str = answer.json()["id"]
    return workflow_id


def test_invitee_created_becomes_a_booking(linktime_server: LinktimeServer) -> None:
    conn = linktime_server.connect("calendly")
    answer = post(linktime_server, conn, "invitee_created")
    assert answer.status_code == 200, answer.text

    event = linktime_server.get(f"/v1/events/{CREATED_A}")
    assert (event["type"], event["source"], event["booking_uid"]) == (
        "booking.created",
        "calendly",
        A,
    )
    assert event["occurred_at"] == "2026-12-01T11:00:00.512340Z"
    b = event["booking"]
    assert b["uid"] == A and b["status"] == "accepted"
    assert b["title"] == "Intro call"
    assert b["event_type"] == {
        "id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        "slug": None,
        "title": "Intro call",
    }
    assert (b["start"], b["end"]) == ("2026-12-10T15:00:00Z", "2026-12-10T15:30:00Z")
    zoom = "https://us05web.zoom.us/j/86011223344?pwd=REDACTED"
    assert (b["location"], b["meeting_url"]) == (zoom, zoom)
    ada = {"name": "Ada Lovelace", "email": "ada@example.com", "phone": None, "timezone": "UTC"}
    assert b["host"] == ada and b["hosts"] == [ada]
    grace = {
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "phone": "+1 404-555-1234",
        "timezone": "America/New_York",
    }
    assert b["invitee"] == grace and b["invitees"] == [grace]
    assert b["guests"] == [{"email": "lin@example.com"}]
    assert b["cancel_url"] == f"https://calendly.com/cancellations/{A}"
    assert b["reschedule_url"] == f"https://calendly.com/reschedulings/{A}"
    assert b["payment"] is None and b["previous_start"] is None
    prepare = "Please share anything that will help prepare for our meeting."
    assert b["custom_fields"] == {
        "company": "Acme",
        "please_share_anything_that_will_help_prepare_for_our_meeting": (
            "Pricing for 40 seats, and the SSO setup."
        ),
    }
    assert b["questions"] == [
        {"key": "company", "question": "Company", "answer": "Acme"},
        {
            "key": "please_share_anything_that_will_help_prepare_for_our_meeting",
            "question": prepare,
            "answer": "Pricing for 40 seats, and the SSO setup.",
        },
    ]
    assert b["tracking"] == {
        "utm_campaign": "winter-launch",
        "utm_source": "newsletter",
        "utm_medium": "email",
    }
    assert b["calendly"]["invitee"].endswith(f"/invitees/{A}")

    # The answers read as custom.<key> in a template, as a workflow's message would.
    stored = BookingEvent.model_validate(event)
    assert render("{{ custom.company }} / {{ invitee.name }}", stored) == "Acme / Grace Hopper"


def test_invitee_canceled_cancels_the_booking(linktime_server: LinktimeServer) -> None:
    conn = linktime_server.connect("calendly")
    post(linktime_server, conn, "invitee_created")
    assert post(linktime_server, conn, "invitee_canceled").status_code == 200

    event = linktime_server.get(f"/v1/events/{CANCELED_A}")
    assert (event["type"], event["booking_uid"]) == ("booking.cancelled", A)
    b = event["booking"]
    assert b["status"] == "cancelled"
    assert b["cancellation_reason"] == "We went with another vendor"
    assert (b["cancelled_by"], b["canceler_type"]) == ("Grace Hopper", "invitee")
    assert b["start"] == "2026-12-10T15:00:00Z"


def test_refused_requests_store_nothing(linktime_server: LinktimeServer, now: datetime) -> None:
    conn, other = linktime_server.connect("calendly"), linktime_server.connect("calendly")
    payload = load("invitee_created")
    body, t = json.dumps(payload).encode(), "9" * 20
    mac = hmac.new(conn["settings"]["signing_key"].encode(), f"{t}.".encode() + body, sha256)
    beyond = f"t={t},v1={mac.hexdigest()}"
    for refused in (
        linktime_server.post_signed(conn, payload, secret="not-the-signing-key-at-all"),
        linktime_server.post_signed(conn, payload, secret=other["settings"]["signing_key"]),
        linktime_server.post_signed(conn, payload, now=now - timedelta(minutes=6)),
        linktime_server.post_signed(conn, payload, headers={HEADER: ""}),
        linktime_server.post_signed(conn, payload, headers={HEADER: "t=1,v1=00"}),
        # Signed with the key, at a time beyond what a datetime holds.
        linktime_server.post_signed(conn, body, headers={HEADER: beyond}),
    ):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "bad_signature"
    assert linktime_server.http.get(f"/v1/events/{CREATED_A}").status_code == 404
    assert deliveries(linktime_server, conn) == []


def test_untranslatable_payload_names_the_field(linktime_server: LinktimeServer) -> None:
    conn = linktime_server.connect("calendly")
    payload = load("invitee_created")
    del payload["payload"]["scheduled_event"]["start_time"]
    answer = linktime_server.post_signed(conn, payload)
    assert answer.status_code == 422
    field = "payload.scheduled_event.start_time"
    assert answer.json()["fields"] == [{"field": field, "message": "missing"}]
    [kept] = deliveries(linktime_server, conn)
    assert (kept["status"], kept["kind"]) == ("untranslatable", "invitee.created")
    assert kept["reason"] == f"{field}: missing"
    assert linktime_server.http.get(f"/v1/events/{CREATED_A}").status_code == 404


def test_a_retry_is_a_replay(linktime_server: LinktimeServer) -> None:
    conn = linktime_server.connect("calendly")
    post(linktime_server, conn, "invitee_created")
    assert post(linktime_server, conn, "invitee_created").status_code == 200
    retry, first = deliveries(linktime_server, conn)
    assert first["events"] == [
        {"id": CREATED_A, "type": "booking.created", "booking_uid": A, "replayed": False}
    ]
    assert retry["events"][0]["replayed"] is True
    assert [e["id"] for e in linktime_server.get(f"/v1/events?q={A}")["items"]] == [CREATED_A]


@pytest.mark.parametrize("first", ["canceled half first", "created half first"])
def test_a_reschedule_pair_is_one_rescheduled_booking(
    linktime_server: LinktimeServer, first: str
) -> None:
    server = linktime_server
    remind = save(server, "meeting.before", offset_minutes=60)
    on_cancel = save(server, "booking.cancelled")
    conn = server.connect("calendly")
    post(server, conn, "invitee_created")
    [planned] = server.get(f"/v1/events/{CREATED_A}")["runs"]
    assert (planned["workflow_id"], planned["due_at"]) == (remind, "2026-12-10T14:00:00Z")

    halves = ["reschedule_invitee_canceled", "reschedule_invitee_created"]
    for name in halves if first.startswith("canceled") else halves[::-1]:
        answer = post(server, conn, name)
        assert answer.status_code == (202 if name.endswith("canceled") else 200), answer.text
    [ignored] = [d for d in deliveries(server, conn) if d["status"] == "ignored"]
    assert (ignored["kind"], ignored["events"]) == ("invitee.canceled", [])
    assert ignored["reason"] == (
        f"booking {A} was rescheduled: its invitee.created (old_invitee) is the "
        "booking.rescheduled; this half cancels nothing"
    )

    moved = server.get(f"/v1/events/{CREATED_B}")
    assert (moved["type"], moved["booking_uid"]) == ("booking.rescheduled", A)
    b = moved["booking"]
    assert (b["start"], b["end"]) == ("2026-12-11T17:00:00Z", "2026-12-11T17:30:00Z")
    assert b["previous_start"] == "2026-12-10T15:00:00Z"
    assert b["reschedule_url"] == f"https://calendly.com/reschedulings/{B}"
    # The pending reminder moved to an hour before the new time; nothing was cancelled.
    [reminder] = server.get(f"/v1/events/{CREATED_A}")["runs"]
    assert (reminder["id"], reminder["status"]) == (planned["id"], "scheduled")
    assert reminder["due_at"] == "2026-12-11T16:00:00Z"
    events = server.get(f"/v1/events?q={A}")["items"]
    assert sorted(e["type"] for e in events) == ["booking.created", "booking.rescheduled"]
    for event in (server.get(f"/v1/events/{e['id']}") for e in events):
        assert all(r["workflow_id"] != on_cancel for r in event["runs"])
        assert all(d["run_id"] is None for d in event["decisions"] if d["workflow_id"] == on_cancel)

    # A retry of the created half is a replay; the new invitee's cancellation cancels booking A.
    post(server, conn, "reschedule_invitee_created")
    assert deliveries(server, conn)[0]["events"][0]["replayed"] is True
    assert post(server, conn, "rescheduled_invitee_canceled_by_host").status_code == 200
    cancelled = server.get(f"/v1/events/{CANCELED_B}")
    assert (cancelled["type"], cancelled["booking_uid"]) == ("booking.cancelled", A)
    assert cancelled["booking"]["cancellation_reason"] == "Out sick"
    assert [
        d["run_id"] is not None for d in cancelled["decisions"] if d["workflow_id"] == on_cancel
    ] == [True]
    [reminder] = server.get(f"/v1/events/{CREATED_A}")["runs"]
    assert reminder["status"] == "cancelled"


def test_a_custom_field_condition_decides_the_run(linktime_server: LinktimeServer) -> None:
    acme = save(
        linktime_server,
        "booking.created",
        conditions=[{"field": "custom.company", "op": "eq", "value": "Acme"}],
    )
    conn = linktime_server.connect("calendly")
    post(linktime_server, conn, "invitee_created")
    [decision] = linktime_server.get(f"/v1/events/{CREATED_A}")["decisions"]
    assert (decision["workflow_id"], decision["run_id"] is not None) == (acme, True)

    other = load("invitee_created")
    invitee = other["payload"]
    invitee["uri"] = invitee["uri"].replace(A, B)
    invitee["questions_and_answers"][0]["answer"] = "Globex"
    linktime_server.post_signed(conn, other)
    [decision] = linktime_server.get(f"/v1/events/{CREATED_B}")["decisions"]
    assert (decision["workflow_id"], decision["run_id"]) == (acme, None)
    assert "custom.company" in decision["reason"]


def test_a_paid_booking_also_reports_the_payment(linktime_server: LinktimeServer) -> None:
    conn = linktime_server.connect("calendly")
    payload = load("invitee_created")
    payload["payload"]["payment"] = {  # as Calendly documents the invitee's payment
        "external_id": "ch_3PqRsT2eZvKYlo2C0abcdefg",
        "provider": "stripe",
        "amount": 49.5,
        "currency": "USD",
        "terms": "Paid when booking; refunds up to 24 hours before.",
        "successful": True,
    }
    assert linktime_server.post_signed(conn, payload).status_code == 200
    # Named by the processor's id, as every source names the payment it reports.
    paid = linktime_server.get("/v1/events/payment:ch_3PqRsT2eZvKYlo2C0abcdefg")
    assert (paid["type"], paid["booking_uid"]) == ("payment.received", A)
    assert paid["booking"]["payment"] == {
        "amount": "49.5",
        "currency": "USD",
        "reference": "ch_3PqRsT2eZvKYlo2C0abcdefg",
        "provider": "stripe",
        "successful": True,
    }


def test_a_payment_without_the_processors_id_is_named_by_the_invitee(
    linktime_server: LinktimeServer,
) -> None:
    conn = linktime_server.connect("calendly")
    payload = load("invitee_created")
    payload["payload"]["payment"] = {"amount": 20, "currency": "eur", "successful": True}
    assert linktime_server.post_signed(conn, payload).status_code == 200
    paid = linktime_server.get(f"/v1/events/calendly:payment:{A}")
    assert paid["booking"]["payment"]["currency"] == "EUR"
    assert paid["booking"]["payment"]["reference"] is None


PAID = {"external_id": "ch_1", "provider": "stripe", "amount": 10, "currency": "USD"}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("payload.timezone", "A" * 5000),
        ("payload.timezone", 5),
        ("payload.email", ["grace@example.com"]),
        ("payload.tracking", ["utm_source"]),
        ("payload.tracking.utm_source", {"name": "newsletter"}),
        ("payload.scheduled_event.location", "zoom"),
        ("payload.scheduled_event.uri", 5),
        ("payload.scheduled_event.event_guests", 5),
        ("payload.scheduled_event.event_guests.0", "guest@example.com"),
        ("payload.scheduled_event.event_guests.0.email", 5),
        ("payload.payment", ["paid"]),
        ("payload.payment.amount", "NaN"),
        ("payload.payment.amount", float("inf")),
        ("payload.payment.amount", 10**30),
        ("payload.payment.amount", -10),
        ("payload.payment.currency", "ÿÿÿ"),
        ("payload.payment.external_id", "ch_" + "1" * 200),
    ],
)
def test_a_wrong_type_or_an_absurd_value_is_a_422_naming_the_field(
    linktime_server: LinktimeServer, path: str, value: Any
) -> None:
    conn = linktime_server.connect("calendly")
    payload = load("invitee_created")
    payload["payload"]["payment"] = dict(PAID, successful=True)
    payload["payload"]["scheduled_event"]["event_guests"] = [{"email": "guest@example.com"}]
    *parents, last = path.split(".")
    target: Any = payload
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value

    answer = linktime_server.post_signed(conn, payload)

    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["fields"]] == [path]
    [kept] = deliveries(linktime_server, conn)
    assert kept["status"] == "untranslatable" and kept["reason"].startswith(f"{path}: ")
    assert linktime_server.http.get(f"/v1/events/{CREATED_A}").status_code == 404


def test_unmapped_events_and_the_sample(linktime_server: LinktimeServer) -> None:
    conn = linktime_server.connect("calendly")
    no_show = load("invitee_created")
    no_show["event"] = "invitee_no_show.created"
    answer = linktime_server.post_signed(conn, no_show)
    assert answer.status_code == 202
    assert answer.json()["note"] == (
        "Calendly event 'invitee_no_show.created' is not mapped to a booking event"
    )

    sample = linktime_server.http.post(f"/v1/sources/{conn['id']}/sample")
    assert sample.status_code == 200, sample.text
    [event] = sample.json()["events"]
    made = linktime_server.get(f"/v1/events/{event['id']}")
    assert (made["type"], made["source"]) == ("booking.created", "calendly")
    assert made["booking"]["custom_fields"] == {"company": "Acme"}


@pytest.mark.parametrize(
    ("question", "key"),
    [
        ("Company", "company"),
        ("What's your phone #?", "what_s_your_phone"),
        ("Team size (1-500)", "team_size__1-500"),
        ("x" * 150, "x" * 100),
    ],
)
def test_custom_keys(question: str, key: str) -> None:
    assert custom_key(question) == key
