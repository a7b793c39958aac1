"""Input a reviewer found still answered 500 (API and dashboard), on PostgreSQL: JSON nested past
the decoder's own limit, timestamps at the ends of the calendar, form numbers that only look like
digits. Each is a 4xx naming the field, with nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from linktime.models import sample_event
from linktime.storage import Event, Run, Workflow
from litestar.testing import TestClient
from sqlalchemy import select

from .conftest import System
from .test_api_input import STEP, api, assert_error_shape, count, headers  # noqa: F401
from .test_dashboard import Dash, editor_form, field_error, open_dash, webhook_step  # noqa: F401

Api = tuple[System, TestClient[Any], str]


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_json_nested_past_the_decoders_own_limit_is_a_422_naming_body(
    api: Api,  # noqa: F811
    depth: int,
) -> None:
    system, client, key = api
    wf = client.post(
        "/v1/workflows",
        json={"name": "w", "trigger": "booking.created", "steps": [STEP]},
        headers=headers(key),
    ).json()["id"]
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
        response = dash.post(f"/workflows/{workflow_id}", form)
        assert response.status_code == 422, response.text[-500:]
        assert "there is no step" in response.text
    assert stored(system) == before


@pytest.mark.parametrize("offset", LOOKALIKES)
def test_an_offset_that_only_looks_like_a_number_is_a_form_error(
    editor: tuple[System, Dash, str], offset: str
) -> None:
    system, dash, workflow_id = editor
    form = editor_form("W", "meeting.after", [webhook_step()], offset_minutes=offset)
    response = dash.post(f"/workflows/{workflow_id}", form)
    assert response.status_code == 422, response.text[-500:]
    assert "whole number" in field_error(response.text, "offset_minutes")
    assert stored(system) == [("W", "booking.created", 0)]
