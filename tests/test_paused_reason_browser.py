"""A workflow paused by its operator's plan change, as its user meets it in a real browser
(Chromium, 1280 and 390 px, against ``linktime serve`` on the embedded database): the reason
under its row in the workflows list and next to the editor's Enabled switch, accessible."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, expect

from .browser import check, dashboard

REASON = "Paused when the plan changed from business to free, which allows 3 active workflows"
# A screen reader hears it with the switch, among what else describes the switch there
DESCRIBED = re.compile(re.escape(REASON))


def test_the_user_sees_why_a_plan_change_paused_a_workflow(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path, "--name", "Acme", "--plan", "business") as dash:
        hook = {"action": "webhook.call", "settings": {"url": "https://hooks.example.com/in"}}
        made = []
        for i in range(4):
            spec = {"name": f"Flow {i}", "trigger": "booking.created", "enabled": True}
            created = dash.api.post("/v1/workflows", json={**spec, "steps": [hook]})
            assert created.status_code == 201, created.text
            made.append(created.json()["id"])
        account = dash.cli("accounts", "list").splitlines()[1].split()[0]
        dash.cli("accounts", "set-plan", account, "free")

        page = dash.page(browser, viewport)
        paused = page.locator(f"#workflow-{made[3]}")
        expect(paused.locator(".paused-reason")).to_have_text(REASON)
        expect(paused.get_by_role("switch")).to_have_accessible_description(DESCRIBED)
        expect(page.locator(".paused-reason")).to_have_count(1)
        check(page, "Workflows after a downgrade")

        paused.get_by_role("link", name="Flow 3", exact=True).click()
        expect(page.get_by_role("switch", name="Enabled")).to_have_accessible_description(DESCRIBED)
        check(page, "Editor of a paused workflow")
