"""Workflow logic over the HTTP API on PostgreSQL: a save with conditions, `when`, fallbacks
and logic steps is refused with the field named (and nothing stored), or read back as saved;
then a run driven by hand on an injected clock down each path (skipped, stopped, waiting,
fallback), read through `GET /v1/runs/{id}` field by field and on the dashboard in words."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.crypto import MASK, revealed
from linktime.storage import Workflow, WorkflowStep
from litestar.testing import TestClient
from sqlalchemy import select

from .conftest import Clock, NoSettings, System, registry_with
from .test_api import auth, count
from .test_dashboard import Dash, open_dash  # noqa: F401  (a fixture, used by name)
from .test_engine_paths import Script, scripted
from .test_logic_engine import booking, drive

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OK = {"action": "test.scripted", "settings": {"outcomes": ["ok"]}}
DELAY = {"action": "logic.delay", "settings": {"amount": 1, "unit": "hours"}}
HOOK = {"action": "webhook.call", "settings": {"url": "https://example.com/hook"}}
UNPAID = [{"field": "booking.paid", "op": "eq", "value": False}]


def unreachable(_: ActionContext) -> Result:
    """An SMS to a number the provider says is not valid: failed for good."""
    return Result.fail(
        "The 'To' number +15005550001 is not a valid phone number.", error_code="twilio_21211"
    )


Api = tuple[System, TestClient[Any], Clock]


@pytest.fixture
def api(make_system: Callable[..., System]) -> Iterator[Api]:
    clock = Clock(NOW)
    registry = registry_with(
        ActionType("test.scripted", "Scripted", Script, scripted),
        ActionType("test.sms", "Send test SMS", NoSettings, unreachable, capability="sms"),
        load="webhook",
    )
    system = make_system(registry=registry, clock=clock)
    with TestClient(create_app(system.hub)) as client:
        yield system, client, clock


def workflow(*steps: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "name": "Unpaid booking reminder",
        "trigger": "booking.created",
        "enabled": True,
        "steps": list(steps),
        **changes,
    }


def filter_on(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"action": "logic.filter", "settings": {"conditions": list(nodes)}}


def with_(step: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**step, **extra}


INVALID: list[Any] = [
    (
        workflow(OK, conditions=[{"field": "booking.paid", "op": "gt", "value": 1}]),
        "conditions.0.op",
    ),
    (
        workflow(
            OK,
            conditions=[
                *UNPAID,
                {"any": [{"field": "guests.count", "op": "gt", "value": "many"}]},
            ],
        ),
        "conditions.1.any.0.value",
    ),
    (
        workflow(OK, with_(OK, when=[{"field": "booking.colour", "op": "eq", "value": "red"}])),
        "steps.1.when.0.field",
    ),
    (
        workflow(OK, DELAY, filter_on({"field": "booking.paid", "op": "contains", "value": "x"})),
        "steps.2.settings.conditions.0.op",
    ),
    (workflow(with_(OK, fallback={"action": "fax.send"})), "steps.0.fallback.action"),
    (workflow(with_(OK, fallback=DELAY)), "steps.0.fallback.action"),
    (workflow({"action": "logic.delay", "settings": {}}, OK), "steps.0.settings.amount"),
    (
        workflow({"action": "logic.delay", "settings": {"amount": 91, "unit": "days"}}, OK),
        "steps.0.settings.amount",
    ),
    (workflow(*[OK] * 6), "steps"),
    (workflow(*[OK] * 5, *[DELAY] * 6), "steps"),
    # A number no condition compares with (a 500 once: math.isfinite overflowed).
    (
        workflow(OK, conditions=[{"field": "guests.count", "op": "gt", "value": 10**400}]),
        "conditions.0.value",
    ),
    (workflow(with_(DELAY, when=UNPAID), OK), "steps.0.when"),
    (workflow(with_(filter_on(*UNPAID), when=UNPAID), OK), "steps.0.when"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_a_save_that_is_not_valid_names_the_field_and_stores_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    system, client, _ = api
    h = auth(system.account().api_key)
    r = client.post("/v1/workflows", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]], r.json()
    assert count(system, Workflow) == 0

    saved = client.post("/v1/workflows", json=workflow(OK), headers=h).json()
    r = client.put(f"/v1/workflows/{saved['id']}", json=body, headers=h)
    assert r.status_code == 422 and field in [f["field"] for f in r.json()["fields"]]
    assert _same_workflow(client.get(f"/v1/workflows/{saved['id']}", headers=h).json(), saved)


def _same_workflow(now: dict[str, Any], saved: dict[str, Any]) -> bool:
    """The workflow as GET shows it is the one saved (the save's answer adds its secrets)."""
    return now == {k: v for k, v in saved.items() if k != "generated_secrets"}


def test_a_tree_of_conditions_too_big_is_refused_before_it_is_built(api: Api) -> None:
    system, client, _ = api
    leaf = {"field": "booking.paid", "op": "eq", "value": False}
    bushy: Any = leaf
    for _ in range(4):  # 20 children a level: 168,420 conditions, a few MB of JSON
        bushy = {"any": [bushy] * 20}
    body = workflow(OK, conditions=[bushy])
    r = client.post("/v1/workflows", json=body, headers=auth(system.account().api_key))
    assert r.status_code == 422
    assert r.json()["fields"] == [
        {"field": "conditions", "message": "at most 50 conditions and groups in all"}
    ]


def test_a_filters_conditions_read_back_as_saved(api: Api) -> None:
    system, client, _ = api
    h = auth(system.account().api_key)
    body = workflow(filter_on(*UNPAID, {"any": UNPAID}), OK)
    saved = client.post("/v1/workflows", json=body, headers=h).json()
    got = client.get(f"/v1/workflows/{saved['id']}", headers=h).json()
    assert got["steps"][0]["settings"]["conditions"] == [*UNPAID, {"any": UNPAID}]


def test_five_actions_and_three_logic_steps_are_accepted(api: Api) -> None:
    system, client, _ = api
    body = workflow(DELAY, *[OK] * 2, filter_on(*UNPAID), *[OK] * 3, DELAY)
    r = client.post("/v1/workflows", json=body, headers=auth(system.account().api_key))
    assert r.status_code == 201, r.text
    assert [s["action"] for s in r.json()["steps"]].count("test.scripted") == 5


def test_conditions_when_and_fallback_read_back_as_saved_secrets_masked_and_kept(
    api: Api,
) -> None:
    system, client, _ = api
    h = auth(system.account().api_key)
    when = [{"any": [{"field": "invitee.phone", "op": "exists", "value": True}, *UNPAID]}]
    body = workflow(
        with_(OK, when=when, fallback=HOOK),
        conditions=[{"field": "event_type.slug", "op": "in", "value": ["intro", "demo"]}],
    )
    created = client.post("/v1/workflows", json=body, headers=h)
    assert created.status_code == 201, created.text
    saved = created.json()
    [secret] = saved["generated_secrets"]
    assert secret["step"] == 0 and secret["field"] == "fallback.secret"

    got = client.get(f"/v1/workflows/{saved['id']}", headers=h).json()
    assert got["conditions"] == body["conditions"]
    [step] = got["steps"]
    assert step["when"] == when
    assert step["fallback"]["action"] == "webhook.call"
    assert step["fallback"]["settings"]["url"] == "https://example.com/hook"
    assert step["fallback"]["settings"]["secret"] == MASK

    # Sent back as read (the mask in place of the secret), the fallback keeps its secret.
    again = {k: got[k] for k in ("name", "trigger", "enabled", "conditions")}
    again["steps"] = [{k: step[k] for k in ("id", "action", "settings", "when", "fallback")}]
    r = client.put(f"/v1/workflows/{saved['id']}", json=again, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["generated_secrets"] == []
    with system.hub.db.connect() as conn:
        stored = conn.scalar(select(WorkflowStep.fallback))
    assert stored is not None
    opened = system.hub.sealer.open(
        system.hub.registry.actions["webhook.call"].settings, stored["settings"]
    )
    assert revealed(opened)["secret"] == secret["value"]


def test_a_fallback_the_plan_lacks_is_refused_by_name(api: Api) -> None:
    system, client, _ = api
    h = auth(system.account("free").api_key)
    body = workflow(with_(HOOK, fallback={"action": "test.sms"}))
    r = client.post("/v1/workflows", json=body, headers=h)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "plan_limit"
    assert [f["field"] for f in r.json()["fields"]] == ["steps.0.fallback.action"]
    assert count(system, Workflow) == 0


# -- runs down each path, through GET /v1/runs/{id} ---------------------------------------------


def started(api: Api, body: dict[str, Any]) -> tuple[dict[str, str], str]:
    """The workflow saved, a booking made for it, and its run's first pass done by hand."""
    system, client, clock = api
    h = auth(system.account().api_key)
    assert client.post("/v1/workflows", json=body, headers=h).status_code == 201
    r = client.post(
        "/v1/events", json=booking("booking.created", 0).model_dump(mode="json"), headers=h
    )
    assert r.status_code == 202, r.text
    [run] = r.json()["runs"]
    drive(system.hub, clock, run["id"])
    return h, run["id"]


def run_of(client: TestClient[Any], h: dict[str, str], run_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/runs/{run_id}", headers=h)
    assert r.status_code == 200, r.text
    return dict(r.json())


def page_text(dash: Dash, path: str) -> str:
    r = dash.get(path)
    assert r.status_code == 200, r.text
    return " ".join(unescape(re.sub(r"<[^>]+>", "", r.text)).split())


def signed_in(api: Api, open_dash: Any, h: dict[str, str]) -> Dash:  # noqa: F811
    dash: Dash = open_dash(api[0])
    dash.sign_in(h["Authorization"].removeprefix("Bearer "))
    return dash


def test_a_step_whose_when_did_not_hold_is_skipped_with_the_reason(
    api: Api,
    open_dash: Any,  # noqa: F811
) -> None:
    _, client, _ = api
    never = [{"field": "invitee.email", "op": "eq", "value": "nobody@example.com"}]
    h, run_id = started(api, workflow(with_(OK, when=never), OK))
    run = run_of(client, h, run_id)
    assert run["status"] == "succeeded" and run["note"] is None and run["at_step"] is None
    skipped, sent = run["steps"]
    reason = (
        'its conditions did not hold: invitee.email eq "nobody@example.com" did not hold: '
        'it was "grace@example.com"'
    )
    assert skipped["status"] == "skipped"
    assert skipped["error_code"] == "condition_not_met"
    assert skipped["error"] == reason
    assert skipped["when"] == never
    assert skipped["fallback"] is None and skipped["wait_until"] is None
    assert [(a["number"], a["status"], a["action"]) for a in skipped["attempt_log"]] == [
        (1, "skipped", None)
    ]
    assert sent["status"] == "succeeded" and sent["when"] is None

    text = page_text(signed_in(api, open_dash, h), f"/runs/{run_id}")
    assert f"Skipped: {reason}" in text


def test_a_filter_after_a_delay_stops_the_run_once_the_booking_is_paid(
    api: Api,
    open_dash: Any,  # noqa: F811
) -> None:
    system, client, clock = api
    body = workflow(
        {"action": "logic.delay", "settings": {"amount": 24, "unit": "hours"}},
        filter_on(*UNPAID),
        OK,
    )
    h, run_id = started(api, body)
    paid = booking("payment.received", 5).model_dump(mode="json")
    assert client.post("/v1/events", json=paid, headers=h).status_code == 202
    drive(system.hub, clock, hours=24)

    run = run_of(client, h, run_id)
    said = "booking.paid eq false did not hold: it was true"
    assert run["status"] == "succeeded"
    assert run["note"] == f"stopped at step 2: {said}"
    assert run["at_step"] == 1
    delay, stop, rest = run["steps"]
    assert delay["status"] == "succeeded"
    assert [a["status"] for a in delay["attempt_log"]] == ["waiting", "succeeded"]
    assert (stop["status"], stop["error_code"], stop["error"]) == ("stopped", "filtered", said)
    assert [a["status"] for a in stop["attempt_log"]] == ["stopped"]
    assert (rest["status"], rest["error"], rest["attempt_log"]) == ("skipped", None, [])

    dash = signed_in(api, open_dash, h)
    assert f"Stopped: {said}" in page_text(dash, f"/runs/{run_id}")
    timeline = page_text(dash, "/bookings/bk_1")
    assert f"Stopped at step 2: {said}" in timeline


def test_a_delayed_run_says_when_it_resumes(
    api: Api,
    open_dash: Any,  # noqa: F811
) -> None:
    system, client, clock = api
    body = workflow({"action": "logic.delay", "settings": {"amount": 3, "unit": "days"}}, OK)
    h, run_id = started(api, body)
    resumes = NOW + timedelta(days=3)

    run = run_of(client, h, run_id)
    assert run["status"] == "waiting" and run["at_step"] == 0 and run["note"] is None
    delay, after = run["steps"]
    assert delay["status"] == "waiting"
    assert delay["wait_until"] == "2026-12-04T09:00:00Z"
    assert delay["error"] == "waiting until 2026-12-04T09:00:00Z (3 days)"
    assert delay["error_code"] is None
    assert [(a["number"], a["status"]) for a in delay["attempt_log"]] == [(1, "waiting")]
    assert after["status"] == "pending" and after["attempt_log"] == []
    [listed] = client.get("/v1/runs", headers=h).json()
    assert listed["due_at"] == "2026-12-04T09:00:00Z" and listed["setback"] is None

    dash = signed_in(api, open_dash, h)
    assert "Waiting until 4 Dec 2026, 09:00 UTC (in 3 days)" in page_text(dash, f"/runs/{run_id}")
    timeline = page_text(dash, "/bookings/bk_1")
    assert "At step 1, Delay" in timeline
    assert "Step 1, Delay, ends its wait 4 Dec 2026, 09:00 UTC: the run resumes then" in timeline
    [inspected] = client.get("/v1/events/ev_0", headers=h).json()["runs"]
    assert inspected["delayed"] is True and inspected["due_at"] == "2026-12-04T09:00:00Z"
    assert "Waiting until 4 Dec 2026, 09:00" in page_text(dash, "/events/ev_0")

    clock.now = resumes
    drive(system.hub, clock)
    run = run_of(client, h, run_id)
    assert run["status"] == "succeeded" and run["at_step"] is None
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]


def test_a_fallback_is_sent_when_the_step_fails_for_good(
    api: Api,
    open_dash: Any,  # noqa: F811
) -> None:
    system, client, clock = api
    h, run_id = started(api, workflow(with_({"action": "test.sms"}, fallback=OK)))
    drive(system.hub, clock, seconds=1)

    run = run_of(client, h, run_id)
    assert run["status"] == "succeeded" and run["at_step"] is None
    [step] = run["steps"]
    assert step["action"] == "test.sms" and step["status"] == "succeeded"
    assert step["fallback"] == {"action": "test.scripted", "taken_after": 1}
    assert [
        (a["number"], a["status"], a["error_code"], a["action"]) for a in step["attempt_log"]
    ] == [(1, "failed", "twilio_21211", None), (2, "succeeded", None, "test.scripted")]

    text = page_text(signed_in(api, open_dash, h), f"/runs/{run_id}")
    assert "Fallback Scripted sent after Send test SMS failed (21211)" in text
