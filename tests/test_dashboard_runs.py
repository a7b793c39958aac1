"""The dashboard's run log, run and replay pages over PostgreSQL, runs driven by hand (no
worker): the status filter knows every status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from linktime.actions import ActionType
from linktime.models import sample_event
from linktime.statuses import RunStatus

from .conftest import Clock, NoSettings, System, registry_with
from .test_dashboard import Form, open_dash  # noqa: F401  (a fixture, used by name)
from .test_runs_api import refuse, succeed


def make(make_system: Callable[..., System]) -> tuple[System, Clock]:
    clock = Clock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    registry = registry_with(
        ActionType("test.ok", "OK", NoSettings, succeed),
        ActionType("test.fail", "Fail", NoSettings, refuse),
    )
    return make_system(registry=registry, clock=clock), clock


def test_the_run_log_filters_by_every_status_skipped_too(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
) -> None:
    system, clock = make(make_system)
    account = system.account()
    system.workflow(account, [{"action": "test.ok"}], name="now")
    system.workflow(
        account, [{"action": "test.ok"}], name="late", trigger="meeting.before", offset_minutes=60
    )
    clock.advance(days=30)  # the meeting is over: its reminder is skipped, the other run queued
    ran = system.hub.emit(sample_event(), account_id=account.id).answer["runs"]
    status_of = {r["status"]: r["id"] for r in ran}
    assert status_of.keys() == {"queued", "skipped"}
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    page = dash.get("/runs").text
    select = page.split('name="status"')[1].split("</select>")[0]
    assert [o.split('"')[0] for o in select.split('value="')[1:]] == ["", *RunStatus]
    page = dash.get("/runs?status=skipped").text
    assert status_of["skipped"] in page and status_of["queued"] not in page
    assert Form(page).controls["status"]["value"] == "skipped"
