"""Stories of "Test before you enable" in a real browser, at desktop and phone sizes: a Slack
step without the Slack connection is not ready and links to connecting it; an email step is
previewed as its recipient sees it (the rendered HTML in a sandboxed frame, its scripts not
run); "send a test to me" reaches a real SMTP server on loopback, and the address is
remembered; from the editor it sends the draft as edited, reaches only the tester, and
leaves the draft on screen."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from linktime_email_testing import SmtpPeer
from playwright.sync_api import Browser, expect

from .browser import Dashboard, add_step, check, dashboard, step

SENDER = "bookings@example.com"


def create(dash: Dashboard, name: str, steps: list[dict[str, Any]]) -> str:
    """A workflow made through the API, as another tool of the account would."""
    r = dash.api.post(
        "/v1/workflows", json={"name": name, "trigger": "booking.created", "steps": steps}
    )
    assert r.status_code == 201, r.text
    wf_id: str = r.json()["id"]
    return wf_id


def test_slack_unconnected_is_not_ready_with_the_link_to_connect(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        slack = {"action": "slack.post", "settings": {"channel": "#sales", "text": "New booking"}}
        wf_id = create(dash, "Tell sales", [slack])
        page = dash.page(browser, viewport)

        page.goto(f"{dash.base}/workflows/{wf_id}/test")

        step = page.locator("#preview-0")
        expect(step.get_by_text("Not ready")).to_be_visible()
        expect(step).to_contain_text("Slack is not connected.")
        expect(step.locator(".slack-message")).to_contain_text("New booking")
        expect(page.locator("#test-panel")).not_to_contain_text("Ready ")
        check(page, "test slack not connected")
        step.get_by_role("link", name="Connect Slack in Settings.").click()
        expect(page).to_have_url(f"{dash.base}/settings/integrations#slack")
        check(page, "test slack connect link")


def test_the_editors_test_of_a_draft_shows_slack_not_ready_with_the_link_to_connect(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        page = dash.page(browser, viewport)
        page.goto(f"{dash.base}/workflows/new")
        page.get_by_label("Name", exact=True).fill("Tell sales")
        add_step(page, "Send Slack Message")
        card = step(page, 1)
        card.get_by_label("Channel").fill("#sales")
        card.get_by_label("Text").fill("New booking with {{ attendee_name }}")

        page.get_by_role("button", name="Test", exact=True).click()

        preview = page.locator("#preview-0")
        expect(preview.get_by_text("Not ready")).to_be_visible()
        expect(preview.locator(".slack-message")).to_contain_text("New booking with Grace Hopper")
        link = preview.get_by_role("link", name="Connect Slack in Settings.")
        expect(link).to_have_attribute("href", "/settings/integrations#slack")
        expect(page.locator("#send-test-panel")).to_contain_text("Save the workflow")
        expect(card.get_by_label("Channel")).to_have_value("#sales")  # the draft is kept
        check(page, "test draft slack not connected")


def test_email_preview_shows_the_rendered_html_in_a_sandboxed_frame(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path, LINKTIME_EMAIL_FROM_ADDRESS=SENDER) as dash:
        email = {
            "action": "email.send",
            "settings": {
                "to_invitee": True,
                "subject": "See you, {{ attendee_first_name }}",
                "text": "Plain: see you",
                # A script in the email must not run in the preview: it would change the heading.
                "html": "<h1>Hello {{ attendee_name }}</h1><p>Your <b>{{ event_name }}</b></p>"
                "<script>document.querySelector('h1').textContent = 'Scripts ran';</script>",
            },
        }
        wf_id = create(dash, "Confirmation", [email])
        page = dash.page(browser, viewport)

        page.goto(f"{dash.base}/workflows/{wf_id}/test")

        step = page.locator("#preview-0")
        expect(step.get_by_text("Ready", exact=True)).to_be_visible()
        expect(step.locator("dl.envelope")).to_contain_text("See you, Grace")
        expect(step.locator("dl.envelope")).to_contain_text(SENDER)
        expect(step.locator("dl.envelope")).to_contain_text("Grace Hopper <grace@example.com>")
        frame = step.locator("iframe")
        expect(frame).to_have_attribute("sandbox", "")
        inside = step.frame_locator("iframe")
        expect(inside.get_by_role("heading", name="Hello Grace Hopper")).to_be_visible()
        expect(inside.locator("b")).to_have_text("Intro call between Ada Lovelace and Grace Hopper")
        expect(inside.get_by_text("Scripts ran")).to_have_count(0)
        expect(step).to_contain_text("they load when the email is opened")
        check(page, "test email preview")


@contextmanager
def smtp_dashboard(tmp_path: Path) -> Iterator[tuple[Dashboard, SmtpPeer]]:
    """The dashboard, its email sent through a real SMTP server on loopback."""
    smtp = SmtpPeer()
    env = {
        "LINKTIME_EMAIL_SMTP_HOST": "127.0.0.1",
        "LINKTIME_EMAIL_SMTP_PORT": str(smtp.port),
        "LINKTIME_EMAIL_FROM_ADDRESS": SENDER,
    }
    try:
        with dashboard(tmp_path, **env) as dash:
            yield dash, smtp
    finally:
        smtp.close()


def wait_delivered(smtp: SmtpPeer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not smtp.delivered:
        assert time.monotonic() < deadline, f"nothing reached the SMTP server in {timeout}s"
        time.sleep(0.05)


def wait_finished(dash: Dashboard, run_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        run = dash.api.get(f"/v1/runs/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            return
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout}s"
        time.sleep(0.05)


def test_send_a_test_to_me_arrives_at_the_smtp_server_and_is_remembered(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with smtp_dashboard(tmp_path) as (dash, smtp):
        email = {
            "action": "email.send",
            "settings": {
                "to_invitee": True,
                "subject": "Test me",
                "text": "Hi {{ attendee_name }}",
            },
        }
        wf_id = create(dash, "Welcome", [email])
        page = dash.page(browser, viewport)
        page.goto(f"{dash.base}/workflows/{wf_id}/test")
        address = page.get_by_label("Your email address")

        address.fill("not an address")
        page.get_by_role("button", name="Send a test to me").click()
        summary = page.locator("#error-summary")
        expect(summary).to_contain_text("Enter an email address like you@example.com.")
        expect(address).to_have_attribute("aria-invalid", "true")
        check(page, "test send refused")
        assert smtp.delivered == []  # refused before anything was started

        page.get_by_label("Your email address").fill("me@example.com")
        page.get_by_role("button", name="Send a test to me").click()

        expect(page).to_have_url(re.compile(rf"/workflows/{wf_id}/test\?run=run_"))
        expect(page.get_by_role("status").filter(has_text="test run")).to_be_visible()
        check(page, "test send started")
        wait_delivered(smtp)
        [delivered] = smtp.delivered
        assert delivered.rcpt_tos == ["me@example.com"]
        assert delivered.message["Subject"] == "Test me"
        assert "Hi Test Recipient" in delivered.message.get_body().get_content()
        page.get_by_role("link", name="See what it sent").click()
        expect(page).to_have_url(re.compile(r"/runs/run_"))
        check(page, "test run")
        page.goto(f"{dash.base}/workflows/{wf_id}/test")
        expect(page.get_by_label("Your email address")).to_have_value("me@example.com")


def test_send_a_test_to_me_from_the_editor_sends_the_draft_and_keeps_it(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with smtp_dashboard(tmp_path) as (dash, smtp):
        email = {
            "action": "email.send",
            "settings": {
                "addresses": ["boss@example.com"],
                "subject": "Saved subject",
                "text": "Hi {{ attendee_name }}",
            },
        }
        slack = {"action": "slack.post", "settings": {"channel": "#sales", "text": "Booked"}}
        wf_id = create(dash, "Welcome", [email, slack])
        page = dash.page(browser, viewport)
        page.goto(f"{dash.base}/workflows/{wf_id}")
        card = step(page, 1)
        card.locator("summary").first.click()
        card.get_by_label("Subject").fill("Draft subject")
        page.get_by_role("button", name="Test", exact=True).click()
        panel = page.locator("#send-test-panel")
        expect(panel).to_contain_text("This test also posts to #sales (Slack).")
        address = page.get_by_label("Your email address")

        address.fill("not an address")
        address.press("Enter")  # sends the test, not Save

        expect(page.locator("#error-summary")).to_contain_text(
            "Enter an email address like you@example.com."
        )
        expect(page.get_by_label("Your email address")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("Subject").first).to_have_value("Draft subject")
        check(page, "editor send refused")
        assert smtp.delivered == []

        page.get_by_label("Your email address").fill("me@example.com")
        page.get_by_label("Your email address").press("Enter")

        expect(panel.get_by_role("status")).to_contain_text("The test run has started.")
        # Answered with a redirect to the draft's page (Back and reload are GETs).
        expect(page).to_have_url(re.compile(rf"/workflows/{wf_id}\?draft=[\w-]+#test-panel$"))
        expect(page.get_by_label("Subject").first).to_have_value("Draft subject")
        check(page, "editor send started")
        wait_delivered(smtp)
        [delivered] = smtp.delivered
        assert delivered.rcpt_tos == ["me@example.com"]  # not boss@example.com
        assert delivered.message["Subject"] == "Draft subject"
        # Nothing was saved: the saved version still has its subject.
        saved = dash.api.get(f"/v1/workflows/{wf_id}").json()
        assert saved["steps"][0]["settings"]["subject"] == "Saved subject"

        # The run opens in a new tab (the draft stays in this one): the email went, Slack
        # is not connected, with the link to connect it.
        with page.context.expect_page() as opened:
            panel.get_by_role("link", name="See what it sent (opens in a new tab)").click()
        run_page = opened.value
        expect(run_page).to_have_url(re.compile(r"/runs/run_"))
        wait_finished(dash, run_page.url.rsplit("/", 1)[1])
        run_page.reload()
        expect(run_page.locator("main")).to_contain_text("Slack is not connected")
        check(run_page, "editor send run")
        expect(page.get_by_label("Subject").first).to_have_value("Draft subject")
        run_page.goto(f"{dash.base}/runs")
        setback = run_page.locator(".setback").first
        expect(setback).to_contain_text("Slack")
        expect(setback.get_by_role("link")).to_have_attribute(
            "href", "/settings/integrations#slack"
        )
        check(run_page, "runs not connected")
