"""The dashboard's run log, run and replay pages over PostgreSQL, runs driven by hand (no
worker): the status filter knows every status, the replay button replays once, and a failure on
the server's side is an error page that gives nothing away; runs and their errors read in words
(an operator's setting is named in the log and the API, never on the page); the Account page."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from linktime import accounts, workflows
from linktime.actions import ActionContext, ActionType, Result
from linktime.dashboard import runs as dashboard_runs
from linktime.models import sample_event
from linktime.statuses import RunStatus
from linktime.storage import Account, Run
from sqlalchemy import func, select, text, update

from .conftest import Clock, NoSettings, System, registry_with
from .test_dashboard import Form, field_error, open_dash  # noqa: F401  (a fixture, used by name)
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
    assert (
        "No runs with the status “Waiting (to retry, or after a delay)”."
        in dash.get("/runs?status=waiting").text
    )


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


def no_sender(_: ActionContext) -> Result:
    # what linktime_email answers when the operator has not set a sender
    return Result.fail(
        "no sender address: the operator must set LINKTIME_EMAIL_FROM_ADDRESS",
        error_code="no_from_address",
    )


def busy(_: ActionContext) -> Result:
    return Result.retry(
        "receiver answered 503 Service Unavailable", http_status=503, error_code="http_503"
    )


def shown(html: str) -> str:
    """The page's text as a person reads it (no markup, no style sheet)."""
    return unescape(re.sub(r"<[^>]+>", " ", html.split("<main")[1]))


def time_shown(html: str, moment: datetime, zone: str) -> str:
    """The ``dt`` element showing ``moment`` (to the minute) in ``zone``: its text."""
    utc = moment.astimezone(UTC)
    found = re.search(
        rf'<time datetime="{utc:%Y-%m-%dT%H:%M}:\d\dZ" title="{utc:%Y-%m-%d %H:%M}:\d\d UTC">'
        r"([^<]*)</time>",
        html,
    )
    assert found, f"{moment} is not shown"
    local = moment.astimezone(ZoneInfo(zone))
    assert found.group(1).endswith(f"{local:%H:%M} {local.tzname()}"), found.group(1)
    return found.group(1)


def test_runs_read_in_words_and_an_operator_error_names_no_setting(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    registry = registry_with(
        ActionType("test.mail", "Mail", NoSettings, no_sender, capability="email"),
        ActionType("test.busy", "Busy", NoSettings, busy),
    )
    system = make_system(registry=registry, clock=clock, retry_schedule=[3600.0])
    account = system.account()
    accounts.set_preferences(system.hub, account.id, timezone="Asia/Tokyo")
    made = {
        "Confirm by email": system.workflow(
            account, [{"action": "test.mail"}], name="Confirm by email"
        ),
        "Tell the CRM": system.workflow(account, [{"action": "test.busy"}], name="Tell the CRM"),
        "Remind": system.workflow(
            account,
            [{"action": "test.busy"}],
            name="Remind",
            trigger="meeting.before",
            offset_minutes=60,
        ),
    }
    ran = system.hub.emit(sample_event(id="evt_words"), account_id=account.id).answer["runs"]
    by_name = {n: next(r["id"] for r in ran if r["workflow_id"] == w) for n, w in made.items()}
    logger = logging.getLogger("linktime.engine")
    logger.addHandler(caplog.handler)  # the app's start replaces the root logger's handlers
    try:
        for name in ("Confirm by email", "Tell the CRM"):
            system.hub.process_run(by_name[name])
    finally:
        logger.removeHandler(caplog.handler)
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    log = dash.get("/runs").text
    rows = {
        name: log.split(f'id="run-{run_id}"')[1].split('<li class="card run"')[0]
        for name, run_id in by_name.items()
    }
    for name, row in rows.items():
        assert f">{name}</a></h2>" in row
        assert "Grace Hopper" in row and "grace@example.com" in row
        assert "Intro call between Ada Lovelace and Grace Hopper" in row
        assert 'href="/bookings/bk_sample"' in row
    assert "<li>Booking created</li>" in rows["Tell the CRM"]
    assert "<li>1 hour before the meeting</li>" in rows["Remind"]
    retry_at = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert "Retrying at <time" in rows["Tell the CRM"]
    time_shown(rows["Tell the CRM"], retry_at, "Asia/Tokyo")
    fires = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    assert "Scheduled for <time" in rows["Remind"]
    assert time_shown(rows["Remind"], fires, "Asia/Tokyo") == "Tue 1 Dec, 23:00 JST"
    assert "Failed" in rows["Confirm by email"] and "pending" not in shown(log)

    page = dash.get(f"/runs/{by_name['Confirm by email']}").text
    assert "Email sending is not set up on this server — contact your administrator." in page
    assert "LINKTIME_" not in page and "no_from_address" not in page
    assert 'href="/events/evt_words"' in page and 'href="/bookings/bk_sample"' in page
    page = dash.get(f"/runs/{by_name['Tell the CRM']}").text
    assert "The receiver had a problem of its own (HTTP 503 Service Unavailable)." in page
    assert "<pre>receiver answered 503 Service Unavailable</pre>" in page  # folded detail
    step_status = page.split('step-status">')[1]
    assert step_status.startswith("Retrying at <time")
    time_shown(step_status, retry_at, "Asia/Tokyo")

    # The operator reads the setting's name in the server's log; the API keeps the stored text.
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("LINKTIME_EMAIL_FROM_ADDRESS" in w for w in warned), warned
    api = dash.client.get(
        f"/v1/runs/{by_name['Confirm by email']}",
        headers={"Authorization": f"Bearer {account.api_key}"},
    ).json()
    assert api["steps"][0]["error_code"] == "no_from_address"
    assert "LINKTIME_EMAIL_FROM_ADDRESS" in api["steps"][0]["error"]


def test_the_account_page_saves_preferences_and_refuses_bad_ones_naming_them(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
) -> None:
    system, _ = make(make_system)
    account = system.account("pro")
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    page = dash.get("/account").text
    assert "Your plan: Pro" in page and "0 of 10" in page
    form = Form(page).controls
    assert form["timezone"]["tag"] == "select"

    good = {
        "timezone": "America/New_York",
        "test_email": " me@example.com ",
        "test_phone": "+1 (415) 555-0100",
    }
    saved = dash.post("/account", good)
    assert saved.status_code == 303 and saved.headers["location"] == "/account"
    stored = accounts.get_preferences(system.hub, account.id)
    assert (stored.timezone, stored.test_email, stored.test_phone) == (
        "America/New_York",
        "me@example.com",
        "+14155550100",
    )
    page = dash.get("/account").text
    assert "Saved your account preferences." in page
    assert '<option value="America/New_York" selected>' in page

    for changes, field, said in (
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "“Mars/Olympus_Mons” is not a timezone"),
        ({"test_email": "me at example"}, "test-email", "Enter an email address"),
        ({"test_phone": "555-0100"}, "test-phone", "in international format"),
        # Files of the zone database that are no zone to choose.
        ({"timezone": "localtime"}, "timezone", "“localtime” is not a timezone"),
        ({"timezone": "posixrules"}, "timezone", "“posixrules” is not a timezone"),
        (
            {"test_email": "a" * 320 + "@example.com"},
            "test-email",
            "An email address has at most 320 characters.",
        ),
    ):
        refused = dash.post("/account", {**good, "timezone": "Europe/Paris", **changes})
        assert refused.status_code == 422, changes
        assert said in field_error(refused.text, field)
        assert f'href="#{field}"' in refused.text  # the summary links the field
        assert accounts.get_preferences(system.hub, account.id) == stored  # nothing stored

    browser = dash.post("/account", {**good, "timezone": ""})
    assert browser.status_code == 303
    assert accounts.get_preferences(system.hub, account.id).timezone is None


def test_a_step_the_plan_no_longer_allows_says_so_and_links_to_the_plan(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
) -> None:
    registry = registry_with(ActionType("test.sms", "Text", NoSettings, succeed, capability="sms"))
    system = make_system(registry=registry)
    account = system.account("pro")
    system.workflow(account, [{"action": "test.sms"}], name="Text the invitee")
    with system.hub.db.begin() as conn:  # downgraded after the workflow was saved
        conn.execute(update(Account).where(Account.id == account.id).values(plan="free"))
    [run_id] = system.hub.emit(sample_event(), account_id=account.id).run_ids
    system.hub.process_run(run_id)
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    page = dash.get(f"/runs/{run_id}").text
    assert "The account's plan did not include this action when it ran." in shown(page)
    assert '<a href="/account">See what your plan includes</a>' in page
    assert "Not on the plan" in shown(page)
    page = dash.get("/account").text
    assert 'Text <span class="muted">(on the Pro and Business plans)</span>' in page


def test_a_step_whose_integration_is_not_connected_links_to_connecting_it(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
) -> None:
    system = make_system(registry=registry_with(load="slack"))
    account = system.account()
    slack = {"action": "slack.post", "settings": {"channel": "#sales", "text": "New booking"}}
    system.workflow(account, [slack], name="Tell sales")
    [run_id] = system.hub.emit(sample_event(), account_id=account.id).run_ids
    system.hub.process_run(run_id)
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    page = dash.get(f"/runs/{run_id}").text
    assert "Slack is not connected to this account." in page
    assert '<a href="/settings/integrations#slack">Connect it in Settings</a>' in page
    row = dash.get("/runs").text.split(f'id="run-{run_id}"')[1]
    assert "Step 1: Slack is not connected to this account." in row


def test_older_runs_are_a_page_away_with_the_filter_kept(
    make_system: Callable[..., System],
    open_dash: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dashboard_runs, "PAGE_SIZE", 2)
    system, _ = make(make_system)
    account = system.account()
    wf = system.workflow(account, [{"action": "test.ok"}], name="Thank you")
    made = []
    for n in range(5):
        booking = sample_event().booking.model_dump(mode="json")
        booking["uid"] = f"bk_{n}"
        event = sample_event(id=f"evt_{n}", booking=booking)
        made += [r["id"] for r in system.hub.emit(event, account_id=account.id).answer["runs"]]
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    def pages(start: str) -> list[list[str]]:
        """The runs on each page, following "Older runs" from ``start`` to the last page."""
        seen, url = [], start
        while True:
            html = dash.get(url).text
            seen.append(re.findall(r'<li class="card run" id="run-(run_\w+)"', html))
            older = re.search(r'<a href="([^"]+)">Older runs →</a>', html)
            if older is None:
                assert ("Newest runs" in html) == (url != start)  # the way back
                return seen
            url = unescape(older.group(1))

    newest_first = list(reversed(made))
    expected = [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert pages("/runs") == expected
    assert pages("/runs?status=queued") == expected  # the filter goes with the page link
    assert pages(f"/workflows/{wf}/runs") == expected
    assert pages("/runs?status=failed") == [[]]

    bad = dash.get("/runs?cursor=yesterday")
    assert bad.status_code == 422
    assert "That page link is not valid: start again from the newest runs." in bad.text
