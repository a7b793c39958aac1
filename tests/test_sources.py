"""Booking sources, core side, with a source defined here (a provider that signs
``t=<unix time>,v1=<HMAC-SHA256 of "{t}.{body}">``): connections, the inbound URL over HTTP,
refusals that store nothing, untranslatable payloads kept with their reason, replays."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from linktime import plugins
from linktime.accounts import create_account
from linktime.models import BookingEvent
from linktime.settings import Settings
from linktime.sources import Inbound, Lookup, SourceRefused, SourceType, Translated, Untranslatable
from linktime.storage import SourceDelivery
from linktime.testing_hub import LinktimeHub, LinktimeServer, serve
from pydantic import BaseModel, SecretStr
from sqlalchemy import func, select

HEADER = "X-Toy-Signature"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class ToySettings(BaseModel):
    signing_secret: SecretStr


def _mac(secret: str, t: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, settings: ToySettings, now: datetime) -> dict[str, str]:
    t = str(int(now.timestamp()))
    return {HEADER: f"t={t},v1={_mac(settings.signing_secret.get_secret_value(), t, body)}"}


def verify(request: Inbound, settings: ToySettings) -> None:
    parts = dict(p.split("=", 1) for p in request.headers.get(HEADER, "").split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        raise SourceRefused(f"no {HEADER} header")
    expected = _mac(settings.signing_secret.get_secret_value(), parts["t"], request.body)
    if not hmac.compare_digest(expected.encode(), parts["v1"].encode()):
        raise SourceRefused("the signature does not match")
    if request.now - datetime.fromtimestamp(int(parts["t"]), UTC) > timedelta(minutes=5):
        raise SourceRefused("the signature is older than 5 minutes")


def translate(payload: dict[str, Any], lookup: Lookup) -> Translated:
    kind = payload.get("kind")
    if kind == "ping":
        return Translated(note="a ping: nothing to ingest")
    if kind == "renamed":  # the provider's new uid of a booking it moved
        lookup.remember(str(payload["new_uid"]), str(payload["uid"]))
        return Translated(note="renamed")
    if kind == "paid":  # a payment naming a booking by any uid it is known under
        known = lookup.booking(str(payload["uid"]))
        if known is None:
            return Translated(note="no such booking")
        paid = {**known.model_dump(mode="json"), "payment": {"amount": "5", "currency": "EUR"}}
        event = {"id": f"toy:{payload['id']}", "type": "payment.received", "occurred_at": NOW}
        return Translated([BookingEvent.model_validate({**event, "booking": paid})])
    if kind != "booked":
        raise Untranslatable("kind", f"unknown kind {kind!r}")
    booking = payload.get("booking")
    if not isinstance(booking, dict):
        raise Untranslatable("booking", "missing")
    event = {
        "id": f"toy:{payload.get('id')}",
        "type": "booking.created",
        "occurred_at": NOW,
        "booking": booking,
    }
    return Translated([BookingEvent.model_validate(event)])


def sample(now: datetime) -> dict[str, Any]:
    return {"id": "sample-1", "kind": "booked", "booking": booking("bk_sample")}


TOY = SourceType("toy", "Toy", ToySettings, verify, translate, sign, sample)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def booking(uid: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "start": "2026-12-10T15:00:00Z",
        "end": "2026-12-10T15:30:00Z",
        "invitee": {"name": "Grace", "email": "grace@example.com"},
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LinktimeServer]:
    registry = plugins.load("webhook")  # a channel, for a reminder workflow to plan
    registry.sources["toy"] = TOY
    registry.sources["toy2"] = replace(TOY, name="toy2", title="Toy 2")
    hub = LinktimeHub(Settings(data_dir=tmp_path, secret_key="test-secret"))
    hub.registry = registry
    hub.clock = lambda: NOW
    hub.migrate()
    try:
        with serve(hub) as served:
            yield served
    finally:
        hub.close()


def test_a_connection_takes_signed_bookings_and_refuses_the_rest(server: LinktimeServer) -> None:
    conn = server.connect("toy")
    secret = conn["settings"]["signing_secret"]
    assert len(secret) >= 32
    assert conn["url"] == f"{server.url}/v1/sources/{conn['id']}/events"
    assert server.get(f"/v1/sources/{conn['id']}")["settings"]["signing_secret"] == "********"

    payload = {"id": "1", "kind": "booked", "booking": booking("bk_1")}
    answer = server.post_signed(conn, payload)
    assert answer.status_code == 200, answer.text
    event = server.get("/v1/events/toy:1")
    assert (event["source"], event["booking"]["uid"]) == ("toy", "bk_1")

    again = server.post_signed(conn, payload)
    assert again.status_code == 200
    [delivery, first] = server.get(f"/v1/sources/{conn['id']}/deliveries")
    assert first["events"][0]["replayed"] is False and delivery["events"][0]["replayed"] is True

    other = {"id": "2", "kind": "booked", "booking": booking("bk_2")}
    for refused in (
        server.post_signed(conn, other, secret="not-the-secret-at-all"),
        server.post_signed(conn, other, now=NOW - timedelta(minutes=6)),
        server.post_signed(conn, other, headers={HEADER: ""}),
    ):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "bad_signature"
    assert server.http.get("/v1/events/toy:2").status_code == 404
    assert len(server.get(f"/v1/sources/{conn['id']}/deliveries")) == 2

    bad = server.post_signed(conn, {"id": "3", "kind": "weird"})
    assert bad.status_code == 422
    assert bad.json()["fields"] == [{"field": "kind", "message": "unknown kind 'weird'"}]
    latest = server.get(f"/v1/sources/{conn['id']}/deliveries")[0]
    assert (latest["status"], latest["reason"]) == ("untranslatable", "kind: unknown kind 'weird'")

    ping = server.post_signed(conn, {"id": "4", "kind": "ping"})
    assert ping.status_code == 202 and ping.json()["note"] == "a ping: nothing to ingest"


def test_another_connections_secret_is_refused(server: LinktimeServer) -> None:
    mine, theirs = server.connect("toy"), server.connect("toy")
    payload = {"id": "9", "kind": "booked", "booking": booking("bk_9")}
    forged = server.post_signed(mine, payload, secret=theirs["settings"]["signing_secret"])
    assert forged.status_code == 401
    assert server.http.get("/v1/events/toy:9").status_code == 404


def deliveries(server: LinktimeServer, conn: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.get(f"/v1/sources/{conn['id']}/deliveries")
    return found


def test_rotating_the_secret_refuses_the_old_one_at_once(server: LinktimeServer) -> None:
    conn = server.connect("toy")
    old = conn["settings"]["signing_secret"]
    base = f"/v1/sources/{conn['id']}/rotate-secret"
    # Every JSON body of the API is an object: an empty one is refused, naming it.
    empty = server.http.post(base)
    assert (empty.status_code, empty.json()["fields"][0]["field"]) == (422, "body")
    rotated = server.http.post(base, json={})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["settings"]["signing_secret"]
    assert len(new) >= 32 and new != old
    payload = {"id": "r1", "kind": "booked", "booking": booking("bk_r1")}
    assert server.post_signed(conn, payload, secret=old).status_code == 401
    assert server.post_signed(conn, payload, secret=new).status_code == 200

    # A secret of the user's own (as a provider makes it) is taken and not echoed.
    own = server.http.post(
        f"/v1/sources/{conn['id']}/rotate-secret", json={"secret": "whsec_my-own-secret"}
    )
    assert own.status_code == 200, own.text
    assert own.json()["settings"]["signing_secret"] == "********"
    again = {"id": "r2", "kind": "booked", "booking": booking("bk_r2")}
    assert server.post_signed(conn, again, secret=new).status_code == 401
    assert server.post_signed(conn, again, secret="whsec_my-own-secret").status_code == 200


def test_connections_are_listed_masked_and_deleted_with_their_deliveries(
    server: LinktimeServer,
) -> None:
    own = server.connect("toy", signing_secret="my-own-secret-1")
    assert own["settings"]["signing_secret"] == "********"  # given, so never shown back
    made = server.connect("toy")
    listed = server.get("/v1/sources")
    assert [c["id"] for c in listed] == sorted([own["id"], made["id"]])
    assert all(c["settings"] == {"signing_secret": "********"} for c in listed)
    assert server.get(f"/v1/sources/{made['id']}")["title"] == "Toy"

    payload = {"id": "d1", "kind": "booked", "booking": booking("bk_d1")}
    assert server.post_signed(made, payload).status_code == 200
    assert server.http.delete(f"/v1/sources/{made['id']}").status_code == 204
    assert server.post_signed(made, payload).status_code == 404
    assert server.http.get(f"/v1/sources/{made['id']}").status_code == 404
    assert server.http.get(f"/v1/sources/{made['id']}/deliveries").status_code == 404
    with server.hub.db.connect() as db:
        kept = select(func.count()).where(SourceDelivery.connection_id == made["id"])
        assert db.scalar(kept) == 0
    assert [c["id"] for c in server.get("/v1/sources")] == [own["id"]]


def test_another_accounts_connection_is_not_found_on_every_route(server: LinktimeServer) -> None:
    conn = server.connect("toy")
    key = create_account(server.hub, "Other", "business").api_key
    base = f"/v1/sources/{conn['id']}"
    with httpx.Client(
        base_url=server.url, trust_env=False, headers={"Authorization": f"Bearer {key}"}
    ) as other:
        for method, path, *body in [
            ("GET", base),
            ("DELETE", base),
            ("POST", f"{base}/rotate-secret", {}),
            ("GET", f"{base}/deliveries"),
            ("POST", f"{base}/sample"),
        ]:
            answer = other.request(method, path, json=body[0] if body else None)
            assert answer.status_code == 404, (method, path, answer.text)
        assert other.get("/v1/sources").json() == []
    # Untouched: still there, its secret unchanged, nothing sampled.
    payload = {"id": "o1", "kind": "booked", "booking": booking("bk_o1")}
    assert server.post_signed(conn, payload).status_code == 200
    assert len(deliveries(server, conn)) == 1


def test_a_bad_connection_request_names_the_field(server: LinktimeServer) -> None:
    unknown = server.http.post("/v1/sources", json={"type": "nope"})
    assert unknown.status_code == 422
    [problem] = unknown.json()["fields"]
    assert problem["field"] == "type" and "toy" in problem["message"]
    invalid = server.http.post(
        "/v1/sources", json={"type": "toy", "settings": {"signing_secret": 12345}}
    )
    assert invalid.status_code == 422
    assert [f["field"] for f in invalid.json()["fields"]] == ["settings.signing_secret"]
    assert server.get("/v1/sources") == []


def test_a_sample_goes_through_the_inbound_path(server: LinktimeServer) -> None:
    conn = server.connect("toy")
    sent = server.http.post(f"/v1/sources/{conn['id']}/sample")
    assert sent.status_code == 200, sent.text
    assert [e["id"] for e in sent.json()["events"]] == ["toy:sample-1"]
    event = server.get("/v1/events/toy:sample-1")
    assert (event["source"], event["booking"]["uid"]) == ("toy", "bk_sample")
    [delivery] = deliveries(server, conn)
    assert delivery["status"] == "translated"
    assert delivery["events"][0]["booking_uid"] == "bk_sample"


def test_oversized_and_non_json_bodies(server: LinktimeServer) -> None:
    conn = server.connect("toy")
    big = b"{" + b" " * server.hub.settings.max_event_bytes + b"}"
    assert server.post_signed(conn, big).status_code == 413
    assert deliveries(server, conn) == []

    garbled = server.post_signed(conn, b"this is not JSON")
    assert garbled.status_code == 422
    assert [f["field"] for f in garbled.json()["fields"]] == ["body"]
    [kept] = deliveries(server, conn)
    assert kept["status"] == "untranslatable" and kept["reason"].startswith("body: not JSON")


def test_only_the_last_50_deliveries_are_kept_newest_first(
    server: LinktimeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = server.connect("toy")
    # Every id made in one millisecond: the list still keeps the order they arrived in.
    monkeypatch.setattr("linktime.storage.time.time", lambda: 1_790_000_000.0)
    for n in range(55):
        answer = server.post_signed(conn, {"id": f"p{n}", "kind": "ping", "event": f"ping-{n}"})
        assert answer.status_code == 202
    kinds = [d["kind"] for d in deliveries(server, conn)]
    assert kinds == [f"ping-{n}" for n in range(54, 4, -1)]
    with server.hub.db.connect() as db:
        kept = select(func.count()).where(SourceDelivery.connection_id == conn["id"])
        assert db.scalar(kept) == 50  # dropped, not only hidden


def test_a_source_and_the_api_fold_into_one_booking(server: LinktimeServer) -> None:
    reminder = {
        "name": "1 hour before",
        "trigger": "meeting.before",
        "offset_minutes": 60,
        "enabled": True,
        "steps": [{"action": "webhook.call", "settings": {"url": "https://example.com/remind"}}],
    }
    saved = server.http.post("/v1/workflows", json=reminder)
    assert saved.status_code == 201, saved.text
    conn = server.connect("toy")
    made = server.post_signed(conn, {"id": "f1", "kind": "booked", "booking": booking("bk_f")})
    assert made.status_code == 200, made.text

    moved = {
        **booking("bk_f"),
        "start": "2026-12-10T17:00:00Z",
        "end": "2026-12-10T17:30:00Z",
    }
    event = {"id": "api_f2", "type": "booking.rescheduled", "occurred_at": NOW.isoformat()}
    answer = server.http.post("/v1/events", json={**event, "booking": moved})
    assert answer.status_code == 202, answer.text

    timeline = server.get("/v1/bookings/bk_f/timeline")
    assert timeline["booking"]["start"] == "2026-12-10T17:00:00Z"
    events = [(e["event"]["id"], e["event"]["source"]) for e in timeline["entries"] if e["event"]]
    assert events == [("toy:f1", "toy"), ("api_f2", None)]
    reminders = [e for e in timeline["entries"] if e["kind"] == "reminder"]
    assert [(r["at"], r["run"]["planned_by"]) for r in reminders] == [
        ("2026-12-10T16:00:00Z", "api_f2")
    ]


def test_without_a_public_url_the_inbound_url_is_the_address_the_api_was_reached_at(
    server: LinktimeServer,
) -> None:
    server.hub.settings.public_url = None
    conn = server.connect("toy")
    url = f"{server.url}/v1/sources/{conn['id']}/events"
    assert conn["url"] == url
    assert server.get(f"/v1/sources/{conn['id']}")["url"] == url
    assert [c["url"] for c in server.get("/v1/sources")] == [url]


def test_a_source_finds_a_booking_by_the_uid_another_source_renamed_it_to(
    server: LinktimeServer,
) -> None:
    toy, toy2 = server.connect("toy"), server.connect("toy2")
    made = server.post_signed(toy, {"id": "1", "kind": "booked", "booking": booking("bk_a")})
    renamed = {"id": "2", "kind": "renamed", "uid": "bk_a", "new_uid": "bk_b"}
    assert (made.status_code, server.post_signed(toy, renamed).status_code) == (200, 202)
    paid = server.post_signed(toy2, {"id": "3", "kind": "paid", "uid": "bk_b"})
    assert paid.status_code == 200, paid.text
    assert server.get("/v1/events/toy:3")["booking_uid"] == "bk_a"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[" * 100_000, "body"),  # deeper than the JSON parser goes
        (b'{"n": ' + b"9" * 5000 + b"}", "body"),  # more digits than Python reads
        (json.dumps({"id": "x", "kind": "booked", "deep": _nested(80)}).encode(), "deep.a.a"),
    ],
    ids=["recursion", "huge-number", "too-deep"],
)
def test_a_signed_body_python_cannot_read_whole_is_a_422_kept(
    server: LinktimeServer, body: bytes, field: str
) -> None:
    conn = server.connect("toy")
    answer = server.post_signed(conn, body)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["fields"]] == [field]
    [kept] = deliveries(server, conn)
    assert kept["status"] == "untranslatable"
