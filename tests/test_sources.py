"""Booking sources, core side, with a source defined here (a provider that signs
``t=<unix time>,v1=<HMAC-SHA256 of "{t}.{body}">``): connections, the inbound URL over HTTP,
refusals that store nothing, untranslatable payloads kept with their reason, replays."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from linktime import plugins
from linktime.models import BookingEvent
from linktime.settings import Settings
from linktime.sources import Inbound, Lookup, SourceRefused, SourceType, Translated, Untranslatable
from linktime.testing_hub import LinktimeHub, LinktimeServer, serve
from pydantic import BaseModel, SecretStr

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


def booking(uid: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "start": "2026-12-10T15:00:00Z",
        "end": "2026-12-10T15:30:00Z",
        "invitee": {"name": "Grace", "email": "grace@example.com"},
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LinktimeServer]:
    registry = plugins.load("")
    registry.sources["toy"] = TOY
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
