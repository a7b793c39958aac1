"""The HTTP API over PostgreSQL: authentication, validation, idempotency, isolation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from linktime.api import create_app
from linktime.models import sample_event
from linktime.storage import Event, Run
from litestar.testing import TestClient
from sqlalchemy import func, select

from .conftest import System

WEBHOOK = {"action": "webhook.call", "settings": {"url": "https://example.com/hook"}}


@pytest.fixture
def api(make_system: Callable[..., System]) -> Iterator[tuple[System, TestClient[Any]]]:
    system = make_system()
    with TestClient(create_app(system.hub)) as client:
        yield system, client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def event_body(**overrides: Any) -> dict[str, Any]:
    return sample_event(**overrides).model_dump(mode="json")


def count(system: System, model: Any) -> int:
    with system.hub.db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def test_missing_or_wrong_key_is_401(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    assert client.post("/v1/events", json=event_body()).status_code == 401
    r = client.post("/v1/events", json=event_body(), headers=auth("lt_wrong"))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert client.get("/v1/workflows", headers={"Authorization": "Basic x"}).status_code == 401
    assert count(system, Event) == 0


def test_malformed_event_names_the_field_and_stores_nothing(
    api: tuple[System, TestClient[Any]],
) -> None:
    system, client = api
    key = system.account().api_key
    body = event_body()
    body["booking"]["start"] = "2026-12-01T15:00:00"  # no timezone
    r = client.post("/v1/events", json=body, headers=auth(key))
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["fields"]] == ["booking.start"]

    del body["booking"]["uid"]
    body["booking"]["start"] = "2026-12-01T15:00:00Z"
    r = client.post("/v1/events", json=body, headers=auth(key))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "booking.uid"

    r = client.post(
        "/v1/events", json={**event_body(), "type": "booking.exploded"}, headers=auth(key)
    )
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "type"

    r = client.post(
        "/v1/events",
        content=b"{not json",
        headers={**auth(key), "content-type": "application/json"},
    )
    assert 400 <= r.status_code < 500
    assert count(system, Event) == 0


def test_body_over_256_kib_is_413(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    key = system.account().api_key
    body = event_body()
    body["booking"]["padding"] = "x" * (256 * 1024)
    r = client.post("/v1/events", content=json.dumps(body), headers=auth(key))
    assert r.status_code == 413
    assert count(system, Event) == 0


def test_replayed_event_answers_like_the_first_time(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    acc = system.account()
    created = client.post(
        "/v1/workflows",
        json={"name": "w", "trigger": "booking.created", "enabled": True, "steps": [WEBHOOK]},
        headers=auth(acc.api_key),
    )
    assert created.status_code == 201, created.text

    first = client.post("/v1/events", json=event_body(id="evt_1"), headers=auth(acc.api_key))
    second = client.post("/v1/events", json=event_body(id="evt_1"), headers=auth(acc.api_key))

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert len(first.json()["runs"]) == 1
    assert second.headers["idempotent-replayed"] == "true"
    assert count(system, Run) == 1

    changed = {**event_body(id="evt_1"), "type": "booking.cancelled"}
    r = client.post("/v1/events", json=changed, headers=auth(acc.api_key))
    assert r.status_code == 409 and r.json()["error"] == "event_id_reused"


def test_the_same_event_id_is_separate_per_account(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    for acc in (system.account(), system.account()):
        r = client.post("/v1/events", json=event_body(id="evt_same"), headers=auth(acc.api_key))
        assert r.status_code == 202
        assert "idempotent-replayed" not in r.headers
    assert count(system, Event) == 2


def test_workflow_with_an_uninstalled_action_lists_the_installed(
    api: tuple[System, TestClient[Any]],
) -> None:
    system, client = api
    key = system.account().api_key
    body = {"name": "w", "trigger": "booking.created", "steps": [{"action": "fax.send"}]}
    r = client.post("/v1/workflows", json=body, headers=auth(key))
    assert r.status_code == 422
    field = r.json()["fields"][0]
    assert field["field"] == "steps.0.action"
    installed = ", ".join(sorted(system.hub.registry.actions))
    assert "webhook.call" in installed
    assert field["message"] == f"action 'fax.send' is not installed; installed actions: {installed}"
    assert client.get("/v1/workflows", headers=auth(key)).json() == []


def test_workflow_validation_names_each_problem(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    key = system.account().api_key
    six = {"name": "w", "trigger": "booking.created", "steps": [WEBHOOK] * 6}
    r = client.post("/v1/workflows", json=six, headers=auth(key))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "steps"

    bad = {
        "name": "w",
        "trigger": "booking.exploded",
        "steps": [{"action": "webhook.call", "settings": {"url": "ftp://x"}}],
    }
    fields = {
        f["field"]
        for f in client.post("/v1/workflows", json=bad, headers=auth(key)).json()["fields"]
    }
    assert fields == {"trigger", "steps.0.settings.url"}


def test_workflow_lifecycle_and_secrets(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    key = system.account().api_key
    r = client.post(
        "/v1/workflows",
        json={"name": "CRM sync", "trigger": "booking.created", "steps": [WEBHOOK]},
        headers=auth(key),
    )
    assert r.status_code == 201
    created = r.json()
    secret = created["generated_secrets"][0]
    assert secret["step"] == 0 and secret["field"] == "secret"
    assert secret["value"].startswith("whsec_")
    assert created["enabled"] is False
    assert created["steps"][0]["settings"]["secret"] == "********"

    wf_id = created["id"]
    listed = client.get("/v1/workflows", headers=auth(key)).json()
    assert [w["id"] for w in listed] == [wf_id]
    assert secret["value"] not in json.dumps(listed)
    enabled = client.post(f"/v1/workflows/{wf_id}/enable", headers=auth(key)).json()
    assert enabled["enabled"] is True
    got = client.get(f"/v1/workflows/{wf_id}", headers=auth(key)).json()
    assert (
        got["enabled"] is True and got["steps"][0]["settings"]["url"] == "https://example.com/hook"
    )
    with system.hub.db.connect() as conn:
        stored = conn.exec_driver_sql("SELECT settings::text FROM workflow_steps").scalar_one()
    assert secret["value"] not in stored  # encrypted at rest


def test_another_accounts_objects_answer_404(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    a, b = system.account(), system.account()
    wf = client.post(
        "/v1/workflows",
        json={"name": "w", "trigger": "booking.created", "enabled": True, "steps": [WEBHOOK]},
        headers=auth(a.api_key),
    ).json()
    run_id = client.post("/v1/events", json=event_body(), headers=auth(a.api_key)).json()["runs"][
        0
    ]["id"]

    assert client.get(f"/v1/runs/{run_id}", headers=auth(a.api_key)).status_code == 200
    assert client.get(f"/v1/runs/{run_id}", headers=auth(b.api_key)).status_code == 404
    assert client.get(f"/v1/workflows/{wf['id']}", headers=auth(b.api_key)).status_code == 404
    assert (
        client.post(f"/v1/workflows/{wf['id']}/disable", headers=auth(b.api_key)).status_code == 404
    )
    assert client.get("/v1/workflows", headers=auth(b.api_key)).json() == []


def test_health_and_openapi(api: tuple[System, TestClient[Any]]) -> None:
    _, client = api
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/schema/openapi.json").json()
    assert {"/v1/events", "/v1/workflows", "/v1/runs/{run_id}"} <= set(schema["paths"])


def test_api_keys_are_shown_once_stored_hashed_and_revocable(
    api: tuple[System, TestClient[Any]],
) -> None:
    system, client = api
    first = system.account().api_key
    created = client.post("/v1/api-keys", headers=auth(first))
    assert created.status_code == 201
    second = created.json()["key"]
    listed = client.get("/v1/api-keys", headers=auth(second)).json()
    assert len(listed) == 2 and all("key" not in k for k in listed)
    with system.hub.db.connect() as conn:
        hashes = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalars().all()
    assert first not in hashes and second not in hashes

    first_id = next(k["id"] for k in listed if second[:10] != k["prefix"])
    assert client.post(f"/v1/api-keys/{first_id}/revoke", headers=auth(second)).status_code == 200
    assert client.get("/v1/workflows", headers=auth(first)).status_code == 401
    last = client.post(f"/v1/api-keys/{created.json()['id']}/revoke", headers=auth(second))
    assert last.status_code == 409 and last.json()["error"] == "last_key"


def test_nul_characters_are_refused_not_crashed_on(api: tuple[System, TestClient[Any]]) -> None:
    system, client = api
    key = system.account().api_key
    r = client.get("/v1/runs?workflow_id=a%00b", headers=auth(key))
    assert r.status_code == 400 and r.json()["fields"] == [
        {"field": "query", "message": "contains a NUL character"}
    ]
    body = event_body()
    body["booking"]["notes"] = "bad\u0000byte"
    r = client.post("/v1/events", json=body, headers=auth(key))
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "body"
    assert count(system, Event) == 0
