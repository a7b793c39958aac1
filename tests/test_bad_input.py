"""Input a reviewer found still answered 500 (API and dashboard), on PostgreSQL: JSON nested past
the decoder's own limit, timestamps at the ends of the calendar, form numbers that only look like
digits. Each is a 4xx naming the field, with nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from linktime.models import sample_event
from linktime.storage import Event, Run
from litestar.testing import TestClient

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
