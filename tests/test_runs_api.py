"""The run log over the API and the dashboard, on PostgreSQL, with runs driven by hand (no
worker) so every state is observed on purpose: the event inspector shows runs as they are now,
replays are idempotent, and the run-status filter knows every status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from linktime import runs
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.errors import InputError
from linktime.models import sample_event
from linktime.statuses import RunStatus
from linktime.storage import Run
from litestar.testing import TestClient
from sqlalchemy import select

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


def make_workflows(client: TestClient[Any], h: dict[str, str]) -> None:
    """A workflow run at booking (test.ok) and a reminder an hour before the meeting."""
    for body in (
        {"name": "Thank you", "trigger": "booking.created", "enabled": True, "steps": [OK]},
        {
            "name": "Reminder",
            "trigger": "meeting.before",
            "offset_minutes": 60,
            "enabled": True,
            "steps": [OK],
        },
    ):
        assert client.post("/v1/workflows", json=body, headers=h).status_code == 201


def test_the_event_inspector_shows_each_run_as_it_is_now(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, _ = api
    h = auth(system)
    make_workflows(client, h)
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


def test_the_run_log_pages_from_the_last_run_of_a_page(
    api: tuple[System, TestClient[Any], Clock],
) -> None:
    system, client, _ = api
    h = auth(system)
    body = {"name": "w", "trigger": "booking.created", "enabled": True, "steps": [OK]}
    assert client.post("/v1/workflows", json=body, headers=h).status_code == 201
    for n in range(3):
        booking = sample_event().booking.model_dump(mode="json") | {"uid": f"bk_{n}"}
        event = sample_event(id=f"evt_{n}", booking=booking).model_dump(mode="json")
        assert client.post("/v1/events", json=event, headers=h).status_code == 202
    every = runs_of(client, h)

    def page(**params: Any) -> list[str]:
        answer = client.get("/v1/runs", params={"limit": 2, **params}, headers=h)
        assert answer.status_code == 200, answer.text
        return [r["id"] for r in answer.json()]

    first = page()
    assert first == every[:2]
    assert page(cursor=first[-1]) == every[2:]
    assert page(cursor=every[-1]) == []
    bad = client.get("/v1/runs", params={"cursor": "yesterday"}, headers=h)
    assert bad.status_code == 422 and [f["field"] for f in bad.json()["fields"]] == ["cursor"]


def runs_of(client: TestClient[Any], h: dict[str, str], status: str | None = None) -> list[str]:
    params = {"status": status} if status else {}
    return [r["id"] for r in client.get("/v1/runs", params=params, headers=h).json()]


@dataclass
class Failed:
    system: System
    client: TestClient[Any]
    h: dict[str, str]  # the account's API key header
    run_id: str


@pytest.fixture
def failed(api: tuple[System, TestClient[Any], Clock]) -> Failed:
    """A run whose first step succeeded and second failed, driven by hand."""
    system, client, _ = api
    h = auth(system)
    body = {"name": "w", "trigger": "booking.created", "enabled": True, "steps": [OK, FAIL]}
    assert client.post("/v1/workflows", json=body, headers=h).status_code == 201
    event = sample_event(id="evt_fails").model_dump(mode="json")
    assert client.post("/v1/events", json=event, headers=h).status_code == 202
    [run_id] = runs_of(client, h, "queued")
    system.hub.process_run(run_id)
    assert runs_of(client, h, "failed") == [run_id]
    return Failed(system, client, h, run_id)


def test_a_replay_repeated_with_its_idempotency_key_makes_nothing_new(
    failed: Failed,
) -> None:
    client, h, failed_id = failed.client, failed.h, failed.run_id
    key = {**h, "Idempotency-Key": "click-1"}

    first = client.post(f"/v1/runs/{failed_id}/replay", headers=key)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = client.post(f"/v1/runs/{failed_id}/replay", headers=key)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sorted(runs_of(client, h)) == sorted([failed_id, first.json()["id"]])

    # the replay went from the failed step: one step, the one that failed
    replayed = client.get(f"/v1/runs/{first.json()['id']}", headers=h).json()
    assert [s["action"] for s in replayed["steps"]] == ["test.fail"]
    assert replayed["replay_of"] == failed_id

    # the same key for another run is a mistake, named
    other = client.post(f"/v1/runs/{first.json()['id']}/replay", headers=key)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    assert [f["field"] for f in other.json()["fields"]] == ["Idempotency-Key"]


def test_a_second_replay_while_the_first_is_pending_is_a_409_naming_it(
    failed: Failed,
) -> None:
    system, client, h, failed_id = failed.system, failed.client, failed.h, failed.run_id
    pending = client.post(f"/v1/runs/{failed_id}/replay", headers=h).json()["id"]

    for headers in (h, {**h, "Idempotency-Key": "another-click"}):
        r = client.post(f"/v1/runs/{failed_id}/replay", headers=headers)
        assert r.status_code == 409 and r.json()["error"] == "replay_pending"
        assert pending in r.json()["message"]
    assert len(runs_of(client, h)) == 2

    system.hub.process_run(pending)  # the replay fails too, and is over
    assert pending in runs_of(client, h, "failed")
    r = client.post(f"/v1/runs/{failed_id}/replay", headers=h)
    assert r.status_code == 201 and r.json()["id"] not in (failed_id, pending)


def test_a_run_of_a_deleted_workflow_is_not_replayed_and_of_a_disabled_one_is(
    failed: Failed,
) -> None:
    client, h, failed_id = failed.client, failed.h, failed.run_id
    [workflow] = client.get("/v1/workflows", headers=h).json()
    assert client.post(f"/v1/workflows/{workflow['id']}/disable", headers=h).status_code == 200
    replay = client.post(f"/v1/runs/{failed_id}/replay", headers=h)
    assert replay.status_code == 201
    failed.system.hub.process_run(replay.json()["id"])  # fails again, and is over
    before = runs_of(client, h)

    assert client.delete(f"/v1/workflows/{workflow['id']}", headers=h).status_code == 204
    for run_id in (failed_id, replay.json()["id"]):
        r = client.post(f"/v1/runs/{run_id}/replay", headers=h)
        assert r.status_code == 409 and r.json()["error"] == "workflow_deleted"
        assert workflow["id"] in r.json()["message"] and "'w'" in r.json()["message"]
    assert runs_of(client, h) == before


def test_concurrent_replays_of_one_run_make_one(
    failed: Failed,
) -> None:
    system, client, h, failed_id = failed.system, failed.client, failed.h, failed.run_id
    with system.hub.db.connect() as conn:
        owner = conn.scalar(select(Run.account_id).where(Run.id == failed_id))
    barrier = threading.Barrier(8)

    def click(i: int) -> str:
        barrier.wait()
        try:
            return runs.replay(system.hub, str(owner), failed_id, f"key-{i}").run_id
        except InputError as exc:
            assert exc.status == 409 and exc.code == "replay_pending", exc
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(click, range(8)))
    made = [o for o in outcomes if o != "refused"]
    assert len(made) == 1
    assert sorted(runs_of(client, h)) == sorted([failed_id, made[0]])


def test_an_idempotency_key_too_long_is_a_422_naming_it(
    failed: Failed,
) -> None:
    client, h, failed_id = failed.client, failed.h, failed.run_id
    r = client.post(f"/v1/runs/{failed_id}/replay", headers={**h, "Idempotency-Key": "k" * 201})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["fields"]] == ["Idempotency-Key"]
    assert runs_of(client, h) == [failed_id]


def test_a_replay_is_handed_to_the_broker_once_not_again_by_the_sweeper(
    api: tuple[System, TestClient[Any], Clock], failed: Failed, caplog: pytest.LogCaptureFixture
) -> None:
    system, client, clock = api
    h = failed.h
    caplog.set_level(logging.INFO, logger="linktime.engine")
    replay_id = client.post(f"/v1/runs/{failed.run_id}/replay", headers=h).json()["id"]
    # Its message went to the broker after commit: the sweeper leaves it to the worker...
    assert system.hub.due_runs() == []
    clock.advance(seconds=1)
    assert system.hub.due_runs() == []
    system.hub.process_run(replay_id)  # ...which picks it up (it fails again: test.fail)
    clock.advance(minutes=5)
    assert system.hub.due_runs() == []
    assert "re-enqueued" not in caplog.text

    # A replay whose message is lost is still sent again, once, when the sweeper's turn comes.
    lost_id = client.post(f"/v1/runs/{replay_id}/replay", headers=h).json()["id"]
    assert system.hub.due_runs() == []
    clock.advance(seconds=system.hub.settings.requeue_after_seconds)
    assert system.hub.due_runs() == [lost_id]
    assert f"run {lost_id} " in caplog.text and "its message was not picked up" in caplog.text
