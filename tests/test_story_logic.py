"""Workflow logic in the editor, in a real browser at desktop and phone sizes: "Unpaid booking
reminder" built by hand (a delay of 24 hours, a filter on booking.paid eq false, an email),
saved and shown again whole; a bad value named beside its input with the other edits kept;
the Test panel showing the path the sample booking would take."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, expect

from .browser import add_step, check, dashboard, step


def test_unpaid_booking_reminder_is_built_by_hand(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        page = dash.page(browser, viewport)
        page.goto(f"{dash.base}/workflows/new")
        page.get_by_label("Name", exact=True).fill("Unpaid booking reminder")
        page.get_by_role("button", name="Add delay").click()
        page.get_by_role("button", name="Add filter").click()
        add_step(page, "Send Email")
        expect(page.locator("#action-count")).to_have_text("1")
        expect(page.locator("#step-count")).to_have_text("3")

        step(page, 1).get_by_label("Wait for").fill("24")
        step(page, 1).get_by_label("Delay unit").select_option("hours")
        row = step(page, 2).locator(".cond-row").first
        row.get_by_label("Field", exact=True).select_option("booking.paid")
        expect(row.get_by_label("Operator")).to_have_value("eq")
        # A boolean's value is a true/false choice; a bad one is typed below to be refused.
        expect(row.get_by_label("Value", exact=True)).to_have_js_property("tagName", "SELECT")
        row.get_by_label("Value", exact=True).select_option("false")
        email = step(page, 3)
        email.get_by_label("To invitee").check()
        email.get_by_label("Subject").fill("Your booking is not paid yet")
        email.get_by_label("Text").fill("Please pay before the meeting.")
        check(page, "editor with logic")

        # A bad value: named beside its input, the rest kept.
        email.get_by_role("button", name="Add condition to Only when…").click()
        when = step(page, 3).locator(".cond-row").first
        when.get_by_label("Field", exact=True).select_option("guests.count")
        when.get_by_label("Operator").select_option("gt")
        when.get_by_label("Value", exact=True).evaluate(
            "el => { el.type = 'text'; el.value = 'many'; }"
        )
        page.get_by_role("button", name="Save workflow").click()
        expect(page.locator("#steps-2-when-0-value-error")).to_contain_text("number")
        check(page, "editor with logic refused")
        expect(step(page, 1).get_by_label("Wait for")).to_have_value("24")
        expect(step(page, 3).get_by_label("Subject")).to_have_value("Your booking is not paid yet")
        step(page, 3).get_by_role("button", name="Remove condition 1").click()

        page.get_by_role("button", name="Save workflow").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved “Unpaid booking reminder”")
        page.reload()
        expect(step(page, 1)).to_contain_text("Waits 24 hours")
        step(page, 2).locator("summary").click()
        row = step(page, 2).locator(".cond-row").first
        expect(row.get_by_label("Field", exact=True)).to_have_value("booking.paid")
        expect(row.get_by_label("Value", exact=True)).to_have_value("false")

        page.get_by_role("button", name="Test", exact=True).click()
        panel = page.locator("#test-panel")
        expect(panel.locator(".step-path")).to_have_text(
            [
                "Waits 24 hours (a test send does not wait)",
                "Filter: goes on — every condition held",
                "Runs",
            ]
        )
        check(page, "editor with logic tested")
