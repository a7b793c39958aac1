"""Input a reviewer found still answered 500 (API and dashboard), on PostgreSQL: JSON nested past
the decoder's own limit, timestamps at the ends of the calendar, form numbers that only look like
digits. Each is a 4xx naming the field, with nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from linktime import plugins
from linktime.actions import ActionType, Result
from linktime.bookings import decide
from linktime.models import sample_event
from linktime.storage import BookingState, Event, Run, Workflow
from litestar.testing import TestClient
from pydantic import BaseModel
from sqlalchemy import select, update

from .conftest import System, registry_with
from .test_api_input import STEP, api, assert_error_shape, count, headers  # noqa: F401
from .test_dashboard import Dash, editor_form, field_error, open_dash, webhook_step  # noqa: F401

Api = tuple[System, TestClient[Any], str]


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def a_workflow(client: Any, key: str) -> str:
    """A workflow of one step, to aim the bodies at."""
    created = client.post(
        "/v1/workflows",
        json={"name": "w", "trigger": "booking.created", "steps": [STEP]},
        headers=headers(key),
    )
    return str(created.json()["id"])


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_json_nested_past_the_decoders_own_limit_is_a_422_naming_body(
    api: Api,  # noqa: F811
    depth: int,
) -> None:
    system, client, key = api
    wf = a_workflow(client, key)
    event = sample_event().model_dump_json().encode()
    in_event = event[:-1] + b', "custom": ' + deep(depth) + b"}"
    for method, route, body in [
        ("POST", "/v1/events", in_event),
        ("POST", "/v1/events", deep(depth)),
        ("POST", "/v1/workflows", deep(depth)),
        ("PUT", f"/v1/workflows/{wf}", deep(depth)),
        ("POST", f"/v1/workflows/{wf}/test", b'{"event": ' + in_event + b"}"),
        ("PUT", "/v1/integrations/opts", b'{"copies": ' + deep(depth) + b"}"),
    ]:
        r = client.request(method, route, content=body, headers=headers(key))
        assert r.status_code == 422, (route, r.text[:300])
        assert_error_shape(r.json())
        assert [f["field"] for f in r.json()["fields"]] == ["body"], route
    assert count(system, Event) == 0 and count(system, Run) == 0


def test_a_body_that_is_empty_or_not_an_object_is_a_422_naming_body(api: Api) -> None:  # noqa: F811
    system, client, key = api
    wf = a_workflow(client, key)
    routes = [
        ("POST", "/v1/events"),
        ("POST", "/v1/workflows"),
        ("PUT", f"/v1/workflows/{wf}"),
        ("POST", f"/v1/workflows/{wf}/test"),
        ("PUT", "/v1/integrations/opts"),
    ]
    for body, message in [
        (b"", "the body is empty"),
        (b"  ", "the body is empty"),
        (b'"xoxb-token"', "must be a JSON object"),
        (b"[1]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ]:
        for method, route in routes:
            r = client.request(method, route, content=body, headers=headers(key))
            assert r.status_code == 422, (route, body, r.text[:300])
            assert_error_shape(r.json())
            assert r.json()["fields"] == [{"field": "body", "message": message}], (route, body)
    assert count(system, Event) == 0 and count(system, Run) == 0
    assert client.get("/v1/integrations/opts", headers=headers(key)).json()["connected"] is False


# -- timestamps the planner cannot compute with ---------------------------------------------------


def with_value(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    *parents, last = field.split(".")
    target = body
    for name in parents:
        target = target[name]
    target[last] = value
    return body


def time_workflow(client: TestClient[Any], key: str) -> Any:
    body = {"name": "after", "trigger": "meeting.after", "offset_minutes": 60, "enabled": True}
    return client.post("/v1/workflows", json={**body, "steps": [STEP]}, headers=headers(key))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("booking.start", "0001-01-01T00:00:00+14:00"),  # before year 1 in UTC
        ("occurred_at", "9999-12-31T23:59:59-14:00"),  # after year 9999 in UTC
        ("booking.end", "9999-12-31T23:30:00Z"),  # its reminder an hour after: year 10000
        ("booking.previous_start", "1969-12-31T23:59:59Z"),
        ("booking.end", "9000-01-01T00:00:00Z"),
    ],
)
def test_a_timestamp_beyond_the_planners_years_is_a_422_naming_it(
    api: Api,  # noqa: F811
    field: str,
    value: str,
) -> None:
    system, client, key = api
    assert time_workflow(client, key).status_code == 201
    event = with_value(sample_event().model_dump(mode="json"), field, value)
    for _ in range(2):  # every post, not only the first
        r = client.post("/v1/events", json=event, headers=headers(key))
        assert r.status_code == 422, r.text
        assert_error_shape(r.json())
        assert [f["field"] for f in r.json()["fields"]] == [field]
        assert "1970 to 8999" in r.json()["fields"][0]["message"]
    assert count(system, Event) == 0 and count(system, Run) == 0

    # The years' ends are taken, and planned.
    for i, edge in enumerate(["1970-01-01T00:00:00Z", "8999-12-31T23:59:59+00:00"]):
        event = sample_event(id=f"evt_edge_{i}").model_dump(mode="json")
        event["booking"]["uid"] = f"bk_edge_{i}"
        event["booking"]["end"] = edge
        if i == 0:
            event["booking"]["start"] = edge
        r = client.post("/v1/events", json=event, headers=headers(key))
        assert r.status_code == 202, r.text


def test_a_booking_stored_beyond_the_planners_years_blocks_no_planning(
    api: Api,  # noqa: F811
) -> None:
    """A booking stored before events were checked (its end hours before the calendar's end):
    creating and enabling a meeting.after workflow plans around it, and other bookings still
    get their reminders."""
    system, client, key = api
    far = sample_event(id="evt_far").model_dump(mode="json")
    far["booking"]["uid"] = "bk_far"
    assert client.post("/v1/events", json=far, headers=headers(key)).status_code == 202
    with system.hub.db.begin() as conn:
        conn.execute(
            update(BookingState).values(
                start=datetime(9999, 12, 31, 23, 0, tzinfo=UTC),
                end=datetime(9999, 12, 31, 23, 30, tzinfo=UTC),
            )
        )
    created = time_workflow(client, key)
    assert created.status_code == 201, created.text
    wf = created.json()["id"]
    assert client.post(f"/v1/workflows/{wf}/disable", headers=headers(key)).status_code == 200
    assert client.post(f"/v1/workflows/{wf}/enable", headers=headers(key)).status_code == 200
    # A meeting still ahead whatever today's date (the sample's is fixed).
    near = sample_event().model_dump(mode="json")
    near["booking"].update(start="2099-03-01T15:00:00Z", end="2099-03-01T15:30:00Z")
    r = client.post("/v1/events", json=near, headers=headers(key))
    assert r.status_code == 202, r.text
    listed = client.get("/v1/runs", headers=headers(key)).json()
    assert [r["status"] for r in listed if r["booking_uid"] == "bk_sample"] == ["scheduled"]
    far = [r for r in listed if r["booking_uid"] == "bk_far"]
    assert far and all(r["status"] == "skipped" and "never sent" in r["note"] for r in far)


def test_the_planner_never_overflows() -> None:
    after = plugins.load("").triggers["meeting.after"]
    before = plugins.load("").triggers["meeting.before"]
    now = datetime(2026, 11, 24, tzinfo=UTC)
    far_end = datetime(9999, 12, 31, 23, 30, tzinfo=UTC)
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # before year 1 in UTC
    for trigger, start, end in [(after, now, far_end), (before, early, now), (after, early, early)]:
        due, reason = decide(trigger, 60 * 24 * 90, start, end, now)
        assert due is None and reason is not None and "never sent" in reason


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("until", "2026-01-01T00:00:00"),  # no timezone
        ("since", "0001-01-01T00:00:00+14:00"),
        ("since", "9999-12-31T23:59:59-14:00"),
        ("since", "17"),
        ("until", "1764601200"),
        ("since", "yesterday"),
    ],
)
def test_a_runs_filter_that_is_not_a_moment_is_a_422_naming_it(
    api: Api,  # noqa: F811
    param: str,
    value: str,
) -> None:
    _, client, key = api
    r = client.get("/v1/runs", params={param: value}, headers=headers(key))
    assert r.status_code == 422, r.text
    assert_error_shape(r.json())
    assert [f["field"] for f in r.json()["fields"]] == [param]


def test_the_runs_filter_takes_moments_with_a_timezone(api: Api) -> None:  # noqa: F811
    _, client, key = api
    client.post(
        "/v1/workflows",
        json={"name": "w", "trigger": "booking.created", "enabled": True, "steps": [STEP]},
        headers=headers(key),
    )
    client.post("/v1/events", json=sample_event().model_dump(mode="json"), headers=headers(key))
    [run] = client.get("/v1/runs", headers=headers(key)).json()
    created = datetime.fromisoformat(run["created_at"])
    kiribati = timezone(timedelta(hours=14))
    for params, listed in [
        ({"since": (created - timedelta(hours=1)).isoformat()}, [run["id"]]),
        (
            {"since": (created + timedelta(seconds=1)).astimezone(kiribati).isoformat()},
            [],
        ),
        ({"until": "2026-01-01T00:00:00-05:00"}, []),
        ({"until": "8999-12-31T00:00:00Z"}, [run["id"]]),
    ]:
        r = client.get("/v1/runs", params=params, headers=headers(key))
        assert r.status_code == 200, r.text
        assert [x["id"] for x in r.json()] == listed, params
    schema = client.get("/schema/openapi.json").json()
    [since] = [p for p in schema["paths"]["/v1/runs"]["get"]["parameters"] if p["name"] == "since"]
    assert "date-time" in str(since["schema"])


# -- the dashboard's forms ------------------------------------------------------------------------


LOOKALIKES = ["²", "٣", "9" * 5000, "-1", "1e3"]  # a superscript, an Arabic-Indic digit...


def stored(system: System) -> list[tuple[str, str, int]]:
    with system.hub.db.connect() as conn:
        rows = conn.execute(select(Workflow.name, Workflow.trigger, Workflow.offset_minutes))
        return [tuple(r) for r in rows]


@pytest.fixture
def editor(make_system: Callable[..., System], open_dash: Any) -> tuple[System, Dash, str]:  # noqa: F811
    """A signed-in dashboard on an existing one-step workflow."""
    system = make_system()
    account = system.account()
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    workflow_id = system.workflow(account, [webhook_step()], name="W", enabled=False)
    dash.get(f"/workflows/{workflow_id}")
    return system, dash, workflow_id


@pytest.mark.parametrize("number", [*LOOKALIKES, "1"])
def test_a_step_to_move_or_remove_that_is_not_one_is_a_form_error(
    editor: tuple[System, Dash, str], number: str
) -> None:
    system, dash, workflow_id = editor
    before = stored(system)
    for kind in ("up", "down", "remove"):
        form = editor_form("Renamed", "booking.created", [webhook_step()], op=f"{kind}:{number}")
        response = dash.edit(f"/workflows/{workflow_id}", form)
        assert response.status_code == 200, response.text[-500:]
        assert "That step is no longer in the workflow" in response.text
    assert stored(system) == before


@pytest.mark.parametrize("offset", LOOKALIKES)
def test_an_offset_that_only_looks_like_a_number_is_a_form_error(
    editor: tuple[System, Dash, str], offset: str
) -> None:
    system, dash, workflow_id = editor
    form = editor_form("W", "meeting.after", [webhook_step()], offset=offset)
    response = dash.edit(f"/workflows/{workflow_id}", form)
    assert response.status_code == 200, response.text[-500:]
    assert field_error(response.text, "offset") == "Enter a whole number"
    assert stored(system) == [("W", "booking.created", 0)]


class Level(BaseModel):
    """A third party's step settings with a fractional number."""

    level: float = 0.5


@pytest.mark.parametrize("value", ["inf", "-Infinity", "nan", "1e400"])
def test_a_number_field_that_is_not_a_finite_number_is_a_form_error(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
    value: str,
) -> None:
    action = ActionType("test.level", "Level", Level, lambda _: Result.ok())
    system = make_system(registry=registry_with(action))
    dash = open_dash(system)
    dash.sign_in(system.account().api_key)
    dash.get("/workflows/new")
    step = {"action": "test.level", "settings": {"level": value}}
    response = dash.edit("/workflows/new", editor_form("W", "booking.created", [step]))
    assert response.status_code == 200, response.text[-500:]
    assert field_error(response.text, "steps-0-settings-level") == "Enter a number"
    assert stored(system) == []
    step["settings"]["level"] = "0.25"
    response = dash.post("/workflows/new", editor_form("W", "booking.created", [step]))
    assert response.status_code == 303
