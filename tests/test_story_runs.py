"""The run log as a person reads it, in a real browser at desktop and phone sizes: each run
says whose booking it was, what started it and where it stands in words ("Retrying at 14:05",
"Scheduled for Tue 3 Dec, 09:00"), in the timezone chosen on the Account page with UTC on
hover; an email step stopped by the server's missing setting tells the user to contact the
administrator and names no setting."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from linktime.models import sample_event
from linktime.testing import HttpReceiver, Reply
from playwright.sync_api import Browser, Locator, expect

from .browser import Dashboard, browser, check, dashboard, viewport  # noqa: F401 (fixtures)
from .conftest import LOOPBACK

TITLE = "Intro call between Ada Lovelace and Grace Hopper"  # the sample booking's


def create(dash: Dashboard, name: str, step: dict[str, Any], **workflow: Any) -> str:
    """An enabled workflow made through the API, as another tool of the account would."""
    body = {"name": name, "trigger": "booking.created", "enabled": True, "steps": [step]}
    r = dash.api.post("/v1/workflows", json={**body, **workflow})
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


def wait_status(dash: Dashboard, run_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        run: dict[str, Any] = dash.api.get(f"/v1/runs/{run_id}").json()
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.1)


def shows_moment(time_element: Locator, moment: datetime, zone: str, text: str) -> None:
    """``time_element`` shows ``moment`` in ``zone`` as ``text`` (a strftime pattern) and
    UTC on hover."""
    local = moment.astimezone(ZoneInfo(zone))
    utc = moment.astimezone(UTC)
    if text == "%H:%M" and local.date() != datetime.now(ZoneInfo(zone)).date():
        text = "%-d %b %Y, %H:%M"  # the clock alone is for today there: past midnight, the date
    expect(time_element).to_have_text(local.strftime(text) + f" {local.tzname()}")
    expect(time_element).to_have_attribute("title", utc.strftime("%Y-%m-%d %H:%M:%S UTC"))


def test_runs_read_in_words_in_the_chosen_timezone(
    tmp_path: Path,
    browser: Browser,  # noqa: F811 (the fixtures)
    viewport: str,  # noqa: F811
    http_receiver: HttpReceiver,
) -> None:
    http_receiver.default = Reply(503, "busy")
    with dashboard(
        tmp_path, LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK, LINKTIME_RETRY_SCHEDULE="[3600]"
    ) as dash:
        hook = {"action": "webhook.call", "settings": {"url": f"{http_receiver.url}/crm"}}
        mail = {
            "action": "email.send",
            "settings": {"to_invitee": True, "subject": "Booked", "text": "See you then"},
        }
        made = {
            create(dash, "Tell the CRM", hook): "crm",
            create(dash, "Confirm by email", mail): "mail",
            create(
                dash,
                "Remind the CRM",
                hook,
                trigger="meeting.before",
                offset_minutes=60,
            ): "reminder",
        }
        start = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)
        event = sample_event(id="evt_story_runs").model_dump(mode="json")
        event["booking"] |= {
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
        }
        answer = dash.api.post("/v1/events", json=event)
        assert answer.status_code == 202, answer.text
        runs = {made[r["workflow_id"]]: r["id"] for r in answer.json()["runs"]}
        retrying = wait_status(dash, runs["crm"], "waiting")
        retry_at = datetime.fromisoformat(retrying["steps"][0]["next_attempt_at"])
        wait_status(dash, runs["mail"], "failed")

        # The browser's zone (Europe/Berlin) until one is chosen.
        page = dash.page(browser, viewport)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Delivery log").click()
        crm = page.locator(f"#run-{runs['crm']}")
        expect(crm.get_by_role("heading")).to_have_text("Tell the CRM")
        for fact in ("Booking created", "Grace Hopper", TITLE):
            expect(crm).to_contain_text(fact)
        expect(crm.locator(".status")).to_contain_text("Retrying at")
        expect(crm.locator(".status")).not_to_contain_text("pending")
        expect(crm.locator(".setback")).to_have_text(
            "Step 1: The receiver had a problem of its own (HTTP 503 Service Unavailable)."
        )
        shows_moment(crm.locator(".status time"), retry_at, "Europe/Berlin", "%H:%M")
        check(page, "run log")

        # Chosen once on the Account page, the zone applies to every time shown.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Account").click()
        page.get_by_label("Timezone").select_option("America/New_York")
        page.get_by_label("Email for tests").fill("me at example")
        page.get_by_role("button", name="Save preferences").click()
        summary = page.locator("#error-summary")
        expect(summary).to_be_focused()
        expect(summary).to_contain_text("Email for tests: Enter an email address")
        check(page, "account refused")
        page.get_by_label("Email for tests").fill("me@example.com")
        page.get_by_role("button", name="Save preferences").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved")
        expect(page.get_by_label("Timezone")).to_have_value("America/New_York")
        expect(page.locator("#plan")).to_contain_text("Send SMS (on the Pro and Business plans)")
        check(page, "account")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Delivery log").click()
        crm = page.locator(f"#run-{runs['crm']}")
        shows_moment(crm.locator(".status time"), retry_at, "America/New_York", "%H:%M")
        reminder = page.locator(f"#run-{runs['reminder']}")
        expect(reminder).to_contain_text("1 hour before the meeting")
        expect(reminder.locator(".status")).to_contain_text("Scheduled for")
        shows_moment(
            reminder.locator(".status time"),
            start - timedelta(hours=1),
            "America/New_York",
            "%a %-d %b, %H:%M",
        )
        check(page, "run log in the chosen zone")
        reminder.get_by_role("link", name="Remind the CRM").click()
        expect(page.locator("#run-status")).to_contain_text("Scheduled for")
        expect(page.get_by_text("Nothing has been sent yet")).to_be_visible()
        check(page, "run scheduled")
        page.go_back()

        # The email step stopped by the server's settings: the user is told whom to ask.
        not_set_up = "Email sending is not set up on this server — contact your administrator."
        expect(page.locator(f"#run-{runs['mail']} .setback")).to_have_text(f"Step 1: {not_set_up}")
        page.locator(f"#run-{runs['mail']}").get_by_role("link", name="Confirm by email").click()
        step = page.locator("#step-0")
        expect(step).to_contain_text(not_set_up)
        expect(step.locator(".step-status")).to_have_text("Failed")
        assert "LINKTIME_" not in page.content()
        check(page, "run operator error")

        # The retrying run: its attempt with the HTTP status and the error in words, and the
        # booking's timeline and the event one click away.
        page.goto(f"{dash.base}/runs/{runs['crm']}")
        attempt = page.locator("#step-0 .attempt").first
        expect(attempt.locator(".http-status")).to_have_text("503")
        expect(attempt).to_contain_text("The receiver had a problem of its own")
        expect(page.locator("#step-0 .step-status")).to_contain_text("Retrying at")
        expect(page.get_by_role("link", name="See the booking's timeline")).to_have_attribute(
            "href", "/bookings/bk_sample"
        )
        expect(page.get_by_role("link", name="evt_story_runs")).to_have_attribute(
            "href", "/events/evt_story_runs"
        )
        check(page, "run retrying")
