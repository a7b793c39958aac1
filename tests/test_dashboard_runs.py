"""The dashboard's run log, run and replay pages over PostgreSQL, runs driven by hand (no
worker): the status filter knows every status, the replay button replays once, and a failure on
the server's side is an error page that gives nothing away."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from linktime import workflows
from linktime.actions import ActionType
from linktime.models import sample_event
from linktime.statuses import RunStatus
from linktime.storage import Run
from sqlalchemy import func, select, text

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


def test_the_replay_button_replays_once_however_often_it_is_pressed(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
) -> None:
    system, _ = make(make_system)
    account = system.account()
    system.workflow(account, [{"action": "test.ok"}, {"action": "test.fail"}])
    [failed] = system.hub.emit(sample_event(), account_id=account.id).run_ids
    system.hub.process_run(failed)
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    page = dash.get(f"/runs/{failed}").text
    form = Form(page.split(f'action="/runs/{failed}/replay"')[1].split("</form>")[0])
    key = form.controls["idempotency_key"]
    assert key["type"] == "hidden" and key["value"]
    pressed = {"idempotency_key": key["value"]}
    first, second = (dash.post(f"/runs/{failed}/replay", pressed) for _ in "12")
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"] != f"/runs/{failed}"
    replay_page = dash.get(second.headers["location"]).text
    assert "Already replayed" in replay_page
    assert f'Replay of</dt><dd><a href="/runs/{failed}">' in replay_page
    with system.hub.db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Run)) == 2

    # the page rendered again has a new key; the replay is still pending, so it is refused
    again = Form(dash.get(f"/runs/{failed}").text).controls["idempotency_key"]["value"]
    assert again != key["value"]
    refused = dash.post(f"/runs/{failed}/replay", {"idempotency_key": again})
    assert refused.headers["location"] == f"/runs/{failed}"
    assert "is being replayed already" in dash.get(f"/runs/{failed}").text


def test_the_replay_button_of_a_deleted_workflow_s_run_says_why_it_replays_nothing(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
) -> None:
    system, _ = make(make_system)
    account = system.account()
    wf_id = system.workflow(account, [{"action": "test.fail"}], name="gone")
    [failed] = system.hub.emit(sample_event(), account_id=account.id).run_ids
    system.hub.process_run(failed)
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    key = Form(dash.get(f"/runs/{failed}").text).controls["idempotency_key"]["value"]

    workflows.delete(system.hub, account.id, wf_id)
    pressed = dash.post(f"/runs/{failed}/replay", {"idempotency_key": key})
    assert pressed.headers["location"] == f"/runs/{failed}"
    assert (
        f"Not replayed: workflow {wf_id} (&#39;gone&#39;) was deleted"
        in dash.get(f"/runs/{failed}").text
    )
    with system.hub.db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Run)) == 1


def test_a_server_failure_is_an_error_page_that_tells_nothing(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    system, _ = make(make_system)
    account = system.account()
    system.workflow(account, [{"action": "test.ok"}])
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    with system.hub.db.begin() as conn:  # the database loses a table under the running server
        conn.execute(text("DROP TABLE workflow_steps CASCADE"))
    # The app's start replaced the root logger's handlers (caplog's too): listen where it logs.
    logger = logging.getLogger("linktime.dashboard")
    logger.addHandler(caplog.handler)
    try:
        r = dash.get("/workflows")
    finally:
        logger.removeHandler(caplog.handler)
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in r.text and "workflow_steps" not in r.text
    logged = [
        r.exc_info[1] for r in caplog.records if r.name == "linktime.dashboard" and r.exc_info
    ]
    assert logged and "workflow_steps" in str(logged[0])
