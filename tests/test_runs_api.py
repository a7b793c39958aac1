"""The run log over the API and the dashboard, on PostgreSQL, with runs driven by hand (no
worker) so every state is observed on purpose: the event inspector shows runs as they are now,
replays are idempotent, and the run-status filter knows every status."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.models import sample_event
from linktime.statuses import RunStatus
from litestar.testing import TestClient

from .conftest import Clock, NoSettings, System, registry_with


def succeed(_: ActionContext) -> Result:
    return Result.ok()


def refuse(_: ActionContext) -> Result:
    return Result.fail("the receiver said no", error_code="http_404", http_status=404)


OK = {"action": "test.ok", "settings": {}}
FAIL = {"action": "test.fail", "settings": {}}


@pytest.fixture
def api(make_system: Callable[..., System]) -> Iterator[tuple[System, TestClient[Any], Clock]]:
    clock = Clock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    registry = registry_with(
        ActionType("test.ok", "OK", NoSettings, succeed),
        ActionType("test.fail", "Fail", NoSettings, refuse),
    )
    system = make_system(registry=registry, clock=clock)
    with TestClient(create_app(system.hub)) as client:
        yield system, client, clock


def auth(system: System) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.account().api_key}"}


def test_the_event_inspector_shows_each_run_as_it_is_now(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, _ = api
    h = auth(system)
    for body in (
        {"name": "now", "trigger": "booking.created", "enabled": True, "steps": [OK]},
        {
            "name": "reminder",
            "trigger": "meeting.before",
            "offset_minutes": 60,
            "enabled": True,
            "steps": [OK],
        },
    ):
        assert client.post("/v1/workflows", json=body, headers=h).status_code == 201
    event = sample_event(id="evt_inspect").model_dump(mode="json")
    assert client.post("/v1/events", json=event, headers=h).status_code == 202
    received = client.get("/v1/events/evt_inspect", headers=h).json()
    by_status = {r["status"]: r["id"] for r in received["runs"]}
    assert by_status.keys() == {"queued", "scheduled"}

    system.hub.process_run(by_status["queued"])  # the worker's part, done by hand

    seen = client.get("/v1/events/evt_inspect", headers=h).json()
    runs = {r["id"]: r for r in seen["runs"]}
    ran = runs[by_status["queued"]]
    assert ran["status"] == "succeeded" and ran["finished_at"] is not None
    assert ran["due_at"] is None
    planned = runs[by_status["scheduled"]]
    assert planned["status"] == "scheduled" and planned["finished_at"] is None
    assert planned["due_at"] == "2026-12-01T14:00:00Z"  # an hour before the 15:00 start


def test_the_run_log_filters_by_every_status(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, clock = api
    h = auth(system)
    body = {"name": "r", "trigger": "meeting.before", "offset_minutes": 60, "enabled": True}
    client.post("/v1/workflows", json={**body, "steps": [OK]}, headers=h)
    clock.advance(days=30)  # the meeting is over by then: its reminder is skipped
    event = sample_event(id="evt_late").model_dump(mode="json")
    assert client.post("/v1/events", json=event, headers=h).status_code == 202
    [skipped] = client.get("/v1/events/evt_late", headers=h).json()["runs"]
    assert skipped["status"] == "skipped"

    listed = client.get("/v1/runs", params={"status": "skipped"}, headers=h).json()
    assert [r["id"] for r in listed] == [skipped["id"]]
    assert client.get("/v1/runs", params={"status": "failed"}, headers=h).json() == []
    r = client.get("/v1/runs", params={"status": "exploded"}, headers=h)
    assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == ["status"]

    schema = client.get("/schema/openapi.json").json()
    assert set(schema["components"]["schemas"]["RunStatus"]["enum"]) == set(RunStatus)
