"""The workflows list as a person on the free plan meets it, in a real browser at both sizes:
at the active-workflow limit the toggle of a disabled workflow says why instead of looking
clickable, and the template needing SMS is marked with the plan that includes it; a workflow
whose Slack step has no connected Slack warns, and its "Connect Slack" link lands on the Slack
card of Settings, where connecting it ends the warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from linktime.testing import HttpReceiver
from playwright.sync_api import Browser, expect

from .browser import check, dashboard
from .conftest import LOOPBACK

LIMIT_REASON = (
    "Your free plan allows 3 active workflows and 3 are active: disable one, or upgrade, to "
    "enable this one."
)


def create(api: httpx.Client, name: str, step: dict[str, Any], enable: bool = False) -> str:
    spec = {"name": name, "trigger": "booking.created", "steps": [step]}
    created = api.post("/v1/workflows", json=spec)
    assert created.status_code == 201, created.text
    workflow_id = str(created.json()["id"])
    if enable:
        assert api.post(f"/v1/workflows/{workflow_id}/enable").status_code == 200
    return workflow_id


def test_at_the_limit_the_toggle_says_why(
    tmp_path: Path, browser: Browser, viewport: str, http_receiver: HttpReceiver
) -> None:
    with dashboard(tmp_path, LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK) as dash:
        api = dash.api
        hook = {"action": "webhook.call", "settings": {"url": f"{http_receiver.url}/hooks"}}
        first = create(api, "Tell the CRM", hook, enable=True)
        create(api, "Tell billing", hook, enable=True)
        create(api, "Tell support", hook, enable=True)
        create(api, "Tell sales", hook)

        page = dash.page(browser, viewport)
        expect(page.locator("#usage")).to_contain_text("3 of 3 active workflows")
        sales = page.get_by_role("switch", name="Enabled: Tell sales")
        expect(sales).to_have_attribute("aria-checked", "false")
        expect(sales).to_have_attribute("aria-disabled", "true")
        expect(sales).to_have_accessible_description(LIMIT_REASON)
        expect(page.get_by_text(LIMIT_REASON)).to_be_visible()
        # Only the disabled workflow is held back: the enabled ones can still be turned off.
        crm = page.get_by_role("switch", name="Enabled: Tell the CRM")
        expect(crm).not_to_have_attribute("aria-disabled", "true")
        # A template the free plan lacks is offered last, marked with the plan that has it.
        reminder = page.locator(".card.template").last
        expect(reminder).to_contain_text("Meeting Reminder")
        expect(reminder).to_contain_text("Upgrade to the pro plan to use this template.")
        expect(reminder.get_by_role("button")).to_have_count(0)
        check(page, "Workflows at the limit")

        # Pressed anyway (it is still a button, for keyboards and without JavaScript), the
        # server refuses in the same words and nothing changes.
        sales.click(force=True)
        expect(page.get_by_role("alert")).to_contain_text(LIMIT_REASON)
        expect(page.get_by_role("switch", name="Enabled: Tell sales")).to_have_attribute(
            "aria-checked", "false"
        )
        expect(page.locator("#usage")).to_contain_text("3 of 3 active workflows")
        check(page, "Workflows at the limit refused")

        # Disabling one makes room: the toggle is offered again and enables.
        page.locator(f"#workflow-{first}").get_by_role("switch").click()
        expect(page.locator("#usage")).to_contain_text("2 of 3 active workflows")
        sales = page.get_by_role("switch", name="Enabled: Tell sales")
        expect(sales).not_to_have_attribute("aria-disabled", "true")
        expect(page.get_by_text(LIMIT_REASON)).to_have_count(0)
        sales.click()
        expect(page.get_by_role("switch", name="Enabled: Tell sales")).to_have_attribute(
            "aria-checked", "true"
        )
        expect(page.locator("#usage")).to_contain_text("3 of 3 active workflows")
        # Now the CRM workflow, disabled, is the one held back.
        expect(page.get_by_role("switch", name="Enabled: Tell the CRM")).to_have_attribute(
            "aria-disabled", "true"
        )


def test_an_unconnected_slack_step_warns_and_links_to_the_slack_card(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        api = dash.api
        slack = {"action": "slack.post", "settings": {"channel": "#bookings", "text": "New!"}}
        workflow = create(api, "Tell the team", slack)
        # Steps that need no connection: an incoming webhook, and an email (its integration
        # only names the sender).
        hook = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
        by_hook = {"action": "slack.post", "settings": {"webhook_url": hook, "text": "New!"}}
        email = {
            "action": "email.send",
            "settings": {"to_invitee": True, "subject": "Booked", "text": "See you."},
        }
        unwarned = [create(api, "Post by webhook", by_hook), create(api, "Confirm", email)]

        page = dash.page(browser, viewport)
        row = page.locator(f"#workflow-{workflow}")
        expect(row.locator(".missing-integration")).to_have_text(
            "Slack is not connected: the steps that use it will fail. Connect Slack"
        )
        for other in unwarned:
            expect(page.locator(f"#workflow-{other} .missing-integration")).to_have_count(0)
        check(page, "Workflows with Slack not connected")

        row.get_by_role("link", name="Connect Slack").click()
        expect(page).to_have_url(f"{dash.base}/settings/integrations#slack")
        card = page.locator("#slack")
        expect(card).to_be_in_viewport()
        expect(card.get_by_role("heading", name="Slack")).to_be_visible()
        expect(card).to_contain_text("Not connected")
        check(page, "Settings at the Slack card")

        # A wrong token first: the summary takes the focus and leads to the field.
        card.get_by_label("Bot token").fill("not-a-token")
        card.get_by_role("button", name="Connect Slack").click()
        summary = page.locator("#error-summary")
        expect(summary).to_be_focused()
        expect(summary.get_by_role("heading")).to_have_text("Slack was not saved")
        summary.get_by_role("link", name="Bot token").click()
        expect(page.get_by_label("Bot token")).to_be_focused()
        check(page, "Settings with a Slack error")

        page.get_by_label("Bot token").fill("xoxb-a-real-looking-token")
        page.get_by_role("button", name="Connect Slack").click()
        expect(page.get_by_role("status").first).to_have_text("Slack is connected.")
        expect(page.locator("#slack")).to_contain_text("Connected")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Workflows").click()
        expect(page.locator(f"#workflow-{workflow}")).to_be_visible()
        expect(page.locator(".missing-integration")).to_have_count(0)
