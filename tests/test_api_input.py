"""Hostile and sloppy input over the API, on PostgreSQL: nesting too deep, JSON that is not JSON,
values that only look right (a string for a boolean, a number for a timestamp), and a server
failure, each answered in the one error shape with nothing stored."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

import pytest
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.inputs import MAX_JSON_DEPTH
from linktime.models import sample_event
from linktime.storage import Event, Workflow
from litestar.exceptions import LitestarDeprecationWarning
from litestar.testing import TestClient
from pydantic import BaseModel
from sqlalchemy import func, select, text

from .conftest import NoSettings, System, registry_with

STEP = {"action": "test.ok", "settings": {}}


def succeed(_: ActionContext) -> Result:
    return Result.ok()


class Quality(StrEnum):
    FINE = "fine"
    STANDARD = "standard"


class Options(BaseModel):
    """A third party's settings (and credentials) of the types JSON carries loosely."""

    urgent: bool = False
    copies: int = 1
    quality: Quality = Quality.STANDARD


@pytest.fixture
def api(make_system: Callable[..., System]) -> Iterator[tuple[System, TestClient[Any], str]]:
    options = ActionType(
        "test.options", "Options", Options, succeed, credentials=Options, integration="opts"
    )
    system = make_system(
        registry=registry_with(ActionType("test.ok", "OK", NoSettings, succeed), options)
    )
    with TestClient(create_app(system.hub)) as client:
        yield system, client, system.account().api_key


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "content-type": "application/json"}


def count(system: System, model: Any) -> int:
    with system.hub.db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def event_with_extra(depth: int) -> dict[str, Any]:
    body = sample_event().model_dump(mode="json")
    body["booking"]["custom"] = nested(depth)
    return body


def assert_error_shape(body: Any) -> None:
    assert set(body) == {"error", "message", "fields"}
    assert all(set(f) == {"field", "message"} for f in body["fields"])


def test_json_nested_256_levels_is_a_422_naming_the_field(
    api: tuple[System, TestClient[Any], str],
) -> None:
    system, client, key = api
    r = client.post("/v1/events", json=event_with_extra(256), headers=headers(key))
    assert r.status_code == 422
    assert_error_shape(r.json())
    assert r.json()["fields"][0]["field"] == "booking.custom.0"

    # the same through a workflow's test run
    wf = client.post(
        "/v1/workflows",
        json={"name": "w", "trigger": "booking.created", "steps": [STEP]},
        headers=headers(key),
    ).json()
    r = client.post(
        f"/v1/workflows/{wf['id']}/test",
        json={"mode": "dry_run", "event": event_with_extra(300)},
        headers=headers(key),
    )
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "event.booking.custom"
    assert count(system, Event) == 0

    # as deep as allowed is taken, and kept as sent
    allowed = event_with_extra(MAX_JSON_DEPTH - 3)  # the event and the booking are two levels
    r = client.post("/v1/events", json=allowed, headers=headers(key))
    assert r.status_code == 202
    with system.hub.db.connect() as conn:
        payload = conn.scalar(select(Event.payload))
    assert payload is not None and payload["booking"]["custom"] == allowed["booking"]["custom"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"id": "evt_1", "type": "booking.created", "n": ' + b"9" * 5000 + b"}",
        b'{"id": "evt_1"',
    ],
    ids=["malformed", "5000-digit integer", "truncated"],
)
def test_a_body_that_is_not_json_is_a_422_naming_body(
    api: tuple[System, TestClient[Any], str], raw: bytes
) -> None:
    system, client, key = api
    for route in ("/v1/events", "/v1/workflows"):
        r = client.post(route, content=raw, headers=headers(key))
        assert r.status_code == 422, r.text
        assert_error_shape(r.json())
        assert r.json()["error"] == "invalid_input"
        assert [f["field"] for f in r.json()["fields"]] == ["body"]
    assert count(system, Event) == 0 and count(system, Workflow) == 0


@pytest.mark.parametrize("start", [17, 1764601200, "1764601200", 1.5e9, True])
def test_a_number_is_not_a_timestamp(api: tuple[System, TestClient[Any], str], start: Any) -> None:
    system, client, key = api
    body = sample_event().model_dump(mode="json")
    body["booking"]["start"] = start
    r = client.post("/v1/events", json=body, headers=headers(key))
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["fields"]] == ["booking.start"]
    assert count(system, Event) == 0


@pytest.mark.parametrize("zone", ["Europe/Nowhere", "A" * 5000, "../../etc/passwd", "a/" * 40])
def test_a_timezone_that_is_not_one_is_a_422(
    api: tuple[System, TestClient[Any], str], zone: str
) -> None:
    """Even a name the operating system refuses to look up (too long: an OSError, once a 500)."""
    system, client, key = api
    body = sample_event().model_dump(mode="json")
    body["booking"]["invitee"]["timezone"] = zone
    r = client.post("/v1/events", json=body, headers=headers(key))
    assert r.status_code == 422, r.text
    assert [f["field"] for f in r.json()["fields"]] == ["booking.invitee.timezone"]
    assert count(system, Event) == 0


def test_an_iso_timestamp_is_still_taken_and_extra_fields_kept(
    api: tuple[System, TestClient[Any], str],
) -> None:
    system, client, key = api
    body = sample_event().model_dump(mode="json")
    body["booking"]["start"] = "2026-12-01T16:00:00+01:00"
    body["booking"]["crm_id"] = 42
    assert client.post("/v1/events", json=body, headers=headers(key)).status_code == 202
    with system.hub.db.connect() as conn:
        payload = conn.scalar(select(Event.payload))
    assert payload is not None and payload["booking"]["crm_id"] == 42


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enabled", "yes"),
        ("enabled", 1),
        ("continue_when_blocked", "true"),
        ("offset_minutes", "30"),
    ],
)
def test_a_workflow_field_of_the_wrong_type_is_named_not_coerced(
    api: tuple[System, TestClient[Any], str], field: str, value: Any
) -> None:
    system, client, key = api
    body = {"name": "w", "trigger": "meeting.before", "steps": [STEP], field: value}
    r = client.post("/v1/workflows", json=body, headers=headers(key))
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["fields"]] == [field]
    assert count(system, Workflow) == 0

    created = client.post(
        "/v1/workflows",
        json={**body, field: False if field != "offset_minutes" else 30},
        headers=headers(key),
    )
    assert created.status_code == 201
    r = client.put(f"/v1/workflows/{created.json()['id']}", json=body, headers=headers(key))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == field


@pytest.mark.parametrize(
    ("field", "value"), [("urgent", "yes"), ("urgent", 1), ("copies", "3"), ("quality", "FINE")]
)
def test_step_settings_and_integrations_are_validated_strictly_too(
    api: tuple[System, TestClient[Any], str], field: str, value: Any
) -> None:
    system, client, key = api
    step = {"action": "test.options", "settings": {field: value}}
    body = {"name": "w", "trigger": "booking.created", "steps": [step]}
    r = client.post("/v1/workflows", json=body, headers=headers(key))
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["fields"]] == [f"steps.0.settings.{field}"]
    r = client.put("/v1/integrations/opts", json={field: value}, headers=headers(key))
    assert r.status_code == 422 and [f["field"] for f in r.json()["fields"]] == [field]
    assert count(system, Workflow) == 0

    # what JSON means is taken: a boolean, a number, an enum's value
    good = {"urgent": True, "copies": 3, "quality": "fine"}
    step["settings"] = good
    assert client.post("/v1/workflows", json=body, headers=headers(key)).status_code == 201
    assert client.put("/v1/integrations/opts", json=good, headers=headers(key)).status_code == 200


def test_a_server_failure_is_a_500_in_the_error_shape_that_tells_nothing(
    api: tuple[System, TestClient[Any], str], caplog: pytest.LogCaptureFixture
) -> None:
    system, client, key = api
    with system.hub.db.begin() as conn:  # the database loses a table under the running server
        conn.execute(text("DROP TABLE workflows CASCADE"))
    # The app's start replaced the root logger's handlers (caplog's too): listen where it logs.
    logger = logging.getLogger("linktime.api")
    logger.addHandler(caplog.handler)
    try:
        r = client.get("/v1/workflows", headers=headers(key))
    finally:
        logger.removeHandler(caplog.handler)
    assert r.status_code == 500
    assert r.json() == {
        "error": "internal_error",
        "message": "something went wrong on our side; it has been logged",
        "fields": [],
    }
    assert "workflows" not in r.text and "relation" not in r.text
    logged = [r.exc_info[1] for r in caplog.records if r.name == "linktime.api" and r.exc_info]
    assert logged and "workflows" in str(logged[0])


def test_the_openapi_schema_documents_the_500(api: tuple[System, TestClient[Any], str]) -> None:
    _, client, _ = api
    schema = client.get("/schema/openapi.json").json()
    assert "500" in schema["paths"]["/v1/events"]["post"]["responses"]


def test_the_app_declares_its_parameters_as_litestar_wants(
    api: tuple[System, TestClient[Any], str],
) -> None:
    system, _, _ = api
    with warnings.catch_warnings():
        warnings.simplefilter("error", LitestarDeprecationWarning)
        create_app(system.hub)  # inferred query parameters warned here, once per handler
