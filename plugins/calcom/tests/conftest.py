"""A LinkTime server with a clock the tests set, a Cal.com connection on it, and the payloads
Cal.com documents (fixtures/*.json), posted as Cal.com posts them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from linktime.testing_hub import LinktimeServer

FIXTURES = Path(__file__).parent / "fixtures"


class Calcom:
    """One account's Cal.com connection on a served hub whose clock stands still where a test
    puts it."""

    def __init__(self, server: LinktimeServer) -> None:
        self.server = server
        self.now = datetime.fromisoformat("2024-01-01T00:00:00Z")
        server.hub.clock = lambda: self.now
        self.connection = server.connect("calcom")

    @staticmethod
    def payload(name: str) -> dict[str, Any]:
        """A documented payload, e.g. ``payload("BOOKING_CREATED")``, to change."""
        loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
        return loaded

    def send(
        self, body: dict[str, Any] | bytes, *, late: timedelta = timedelta(seconds=2), **kw: Any
    ) -> httpx.Response:
        """Post ``body`` signed as Cal.com signs it, ``late`` after its ``createdAt`` (the
        moment Cal.com sent it)."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.now = datetime.fromisoformat(json.loads(raw)["createdAt"]) + late
        return self.server.post_signed(self.connection, raw, **kw)

    def send_fixture(self, name: str) -> httpx.Response:
        """The fixture's exact bytes."""
        return self.send((FIXTURES / f"{name}.json").read_bytes())

    def event(self, event_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.server.get(f"/v1/events/{event_id}")
        return found

    def deliveries(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.server.get(
            f"/v1/sources/{self.connection['id']}/deliveries"
        )
        return listed

    def event_ids(self) -> list[str]:
        return [e["id"] for e in self.server.get("/v1/events")["items"]]


@pytest.fixture
def calcom(linktime_server: LinktimeServer) -> Calcom:
    return Calcom(linktime_server)
