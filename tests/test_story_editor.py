"""The workflow editor keeps work, in a real browser at desktop and phone sizes: a draft is
edited, tested, switched on, its steps added, moved and removed, and nothing typed is lost;
Back and reload after Save create nothing twice; the variable picker inserts at the cursor;
a misspelt field is answered with the right name; a free account sees SMS last, marked with the
plans that include it. Every page reached is checked (screenshot, no sideways scroll, axe)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Dialog, Page, expect

from .browser import Dashboard, add_step, check, dashboard, step

HOOK = "https://hooks.example.com/bookings"


def api_workflows(dash: Dashboard) -> list[dict[str, Any]]:
    answer = dash.api.get("/v1/workflows")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return list(body["items"] if isinstance(body, dict) else body)


def new_webhook_draft(dash: Dashboard, page: Page, name: str) -> None:
    """A new workflow's draft named ``name``, its one step a webhook to HOOK."""
    page.goto(f"{dash.base}/workflows/new?action=webhook.call")
    page.get_by_label("Name", exact=True).fill(name)
    step(page, 1).get_by_label("URL").fill(HOOK)


def test_a_draft_is_kept_through_test_toggle_and_step_edits(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        page = dash.page(browser, viewport)
        page.get_by_role("link", name="Create workflow").first.click()
        expect(page.get_by_role("heading", name="Create workflow")).to_be_visible()

        # A free account: actions its plan allows come first; SMS, WhatsApp and voice last,
        # marked with the plans that include them, and not the default choice.
        add = page.get_by_label("Add an action")
        options = add.locator("option").all_inner_texts()
        assert sorted(options[-3:]) == [
            "AI Voice Call — on Business",
            "Send SMS — on Pro and Business",
            "Send WhatsApp message — on Pro and Business",
        ]
        assert "—" not in "".join(options[:-3])
        assert add.evaluate("s => s.options[s.selectedIndex].text") == options[0]
        check(page, "editor new")

        # The draft: name, a time trigger with its offset in hours, two steps.
        page.get_by_label("Name", exact=True).fill("Reminder an hour before")
        page.get_by_label("When", exact=True).select_option(label="Before Meeting")
        page.get_by_label("How long").fill("1")
        page.get_by_label("Unit").select_option("hours")
        expect(page.locator("#offset-help")).to_have_text("before the meeting starts")
        add_step(page, "Call Webhook")
        add_step(page, "Send Email")
        expect(page.locator("#step-count")).to_have_text("2")
        step(page, 1).get_by_label("URL").fill(HOOK)
        email = step(page, 2)
        email.get_by_label("To invitee").check()
        # A misspelt field: answered at save with the field it meant, next to the field.
        email.get_by_label("Subject").fill("Reminder: {{ attendee_nme }}")
        email.get_by_label("Text").fill("See you soon.")

        # Moved up, then a third step added and removed: all in the page, nothing posted.
        email.get_by_role("button", name="Move up step 2").click()
        expect(step(page, 1)).to_have_attribute("data-action", "email.send")
        expect(step(page, 1).get_by_label("Subject")).to_have_value("Reminder: {{ attendee_nme }}")
        add_step(page, "Send SMS — on Pro and Business")
        expect(step(page, 3)).to_have_attribute("data-action", "sms.send")
        expect(step(page, 3).locator(".alert.warn")).to_have_text(
            [
                "Not on your free plan: Send SMS is on Pro and Business.",
                "Twilio is not connected: this step cannot send until it is. Connect Twilio",
            ]
        )
        expect(step(page, 3).get_by_role("link", name="Connect Twilio")).to_have_attribute(
            "href", "/settings/integrations#twilio"
        )
        check(page, "editor step not on the plan")
        step(page, 3).get_by_role("button", name="Remove step 3").click()
        expect(page.locator("#chain > li.step-item")).to_have_count(2)
        expect(page).to_have_url(f"{dash.base}/workflows/new")

        # Switched on as part of the draft, then tested: the draft comes back whole.
        page.get_by_role("switch", name="Enabled").check()
        page.get_by_role("button", name="Test", exact=True).click()
        expect(page.locator("#steps-0-settings-subject-error")).to_contain_text(
            "did you mean 'attendee_name'?"
        )
        check(page, "editor test refused")
        subject = step(page, 1).get_by_label("Subject")
        expect(subject).to_have_value("Reminder: {{ attendee_nme }}")
        expect(step(page, 2).get_by_label("URL")).to_have_value(HOOK)
        expect(page.get_by_role("switch", name="Enabled")).to_be_checked()
        expect(page.get_by_label("How long")).to_have_value("1")
        expect(page.get_by_label("Unit")).to_have_value("hours")

        # The variable picker puts the right field where the cursor is.
        subject.fill("Reminder:  is booked")
        subject.evaluate("el => el.setSelectionRange(10, 10)")
        # One list on the page (not one per field and per action), opened beside the field.
        expect(page.locator(".var-picker")).to_have_count(1)
        step(page, 1).get_by_role("button", name="Insert a booking field").first.click()
        picker = step(page, 1).locator(".var-picker")
        expect(picker).to_have_attribute("open", "")
        check(page, "editor variable picker")
        picker.get_by_role("button", name="{{ attendee_name }}").click()
        expect(subject).to_have_value("Reminder: {{ attendee_name }} is booked")

        page.get_by_role("button", name="Test", exact=True).click()
        expect(page.locator("#test-panel")).to_be_visible()
        expect(step(page, 1).get_by_label("Subject")).to_have_value(
            "Reminder: {{ attendee_name }} is booked"
        )
        expect(page.get_by_role("switch", name="Enabled")).to_be_checked()
        check(page, "editor tested")
        assert api_workflows(dash) == []  # testing saved nothing

        # Leaving a draft with unsaved changes asks first; staying keeps it.
        asked: list[str] = []

        def stay(dialog: Dialog) -> None:
            asked.append(dialog.type)
            dialog.dismiss()

        page.once("dialog", stay)
        page.get_by_label("Name", exact=True).fill("Reminder one hour before")
        page.get_by_role("link", name="← Workflows").click()
        expect(page.get_by_label("Name", exact=True)).to_have_value("Reminder one hour before")
        assert asked == ["beforeunload"]

        page.get_by_role("button", name="Save workflow").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved “Reminder one hour before”")
        check(page, "editor saved")

        # Come back: everything as it was typed, the offset in its unit.
        (saved,) = api_workflows(dash)
        assert (saved["offset_minutes"], saved["enabled"]) == (60, True)
        assert [s["action"] for s in saved["steps"]] == ["email.send", "webhook.call"]
        # Saved, the page leaves without asking.
        page.on("dialog", stay)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Workflows").click()
        expect(page.locator(f"#workflow-{saved['id']}")).to_contain_text(
            "Before Meeting · 1 hour before the meeting starts"
        )
        assert asked == ["beforeunload"]
        page.goto(f"{dash.base}/workflows/{saved['id']}")
        expect(page.get_by_label("Name", exact=True)).to_have_value("Reminder one hour before")
        expect(page.get_by_label("How long")).to_have_value("1")
        expect(page.get_by_label("Unit")).to_have_value("hours")
        expect(page.get_by_role("switch", name="Enabled")).to_be_checked()
        # Saved steps start folded to a line saying what they send to whom.
        expect(step(page, 1).locator(".step-summary")).to_have_text(
            "Email to the invitee · “Reminder: {{ attendee_name }} is booked”"
        )
        expect(step(page, 2).locator(".step-summary")).to_have_text(f"Webhook to {HOOK}")
        expect(step(page, 2).get_by_label("URL")).to_be_hidden()
        step(page, 2).locator("summary").click()
        expect(step(page, 2).get_by_label("URL")).to_have_value(HOOK)
        check(page, "editor reopened")


def test_back_and_reload_after_save_create_nothing_twice(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        page = dash.page(browser, viewport)
        new_webhook_draft(dash, page, "Push to CRM")
        # Tested first: the page shown is the answer to a POST of the draft.
        page.get_by_role("button", name="Test", exact=True).click()
        expect(page.locator("#test-panel")).to_be_visible()
        page.get_by_role("button", name="Save workflow").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved “Push to CRM”")
        workflow_url = page.url
        assert re.search(r"/workflows/wf_\w+$", workflow_url)
        assert len(api_workflows(dash)) == 1

        # Reloading the saved workflow's page is a GET: nothing posted again.
        page.reload()
        expect(page.get_by_label("Name", exact=True)).to_have_value("Push to CRM")
        assert len(api_workflows(dash)) == 1

        # Back goes to the previous GET: the tested draft's own page (the Test post answered
        # with a redirect to it), not "Confirm Form Resubmission"; reloading it posts nothing.
        page.go_back()
        expect(page).to_have_url(re.compile(r"/workflows/new\?draft=[\w-]+(#test-panel)?$"))
        expect(page.get_by_label("Name", exact=True)).to_have_value("Push to CRM")
        expect(page.locator("#test-panel")).to_be_visible()
        page.reload()
        expect(page.get_by_label("Name", exact=True)).to_have_value("Push to CRM")
        check(page, "editor draft after back")
        assert len(api_workflows(dash)) == 1
        # Saving that draft again opens the workflow it created: nothing is created twice.
        page.get_by_role("button", name="Save workflow").click()
        expect(page).to_have_url(re.compile(re.escape(workflow_url) + "$"))
        expect(page.get_by_role("status").first).to_contain_text("already saved")
        check(page, "editor already saved")
        assert len(api_workflows(dash)) == 1

        # A double click on Save of a new draft posts it once.
        new_webhook_draft(dash, page, "Push to ERP")
        page.get_by_role("button", name="Save workflow").dblclick()
        expect(page.get_by_role("status").first).to_contain_text("Saved “Push to ERP”")
        assert sorted(w["name"] for w in api_workflows(dash)) == ["Push to CRM", "Push to ERP"]


def test_without_javascript_every_button_posts_the_draft_and_it_comes_back(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        page = dash.page(browser, viewport)
        # The dashboard's scripts never load (axe still runs: the browser's JS stays on).
        page.route(re.compile(r"/static/dashboard/[^/]+\.js$"), lambda route: route.abort())
        page.goto(f"{dash.base}/workflows/new")
        page.get_by_label("Name", exact=True).fill("Without JavaScript")
        # The offset is there to fill in, as the page cannot show it when the trigger changes.
        expect(page.get_by_label("When", exact=True)).to_have_value("booking.created")
        expect(page.get_by_label("How long")).to_be_visible()
        page.get_by_label("When", exact=True).select_option(label="After Meeting")
        page.get_by_label("How long").fill("2")
        page.get_by_label("Unit").select_option("days")
        add_step(page, "Call Webhook")
        expect(page.locator("#step-count")).to_have_text("1")
        expect(page.locator("#offset-help")).to_have_text("after the meeting ends")
        step(page, 1).get_by_label("URL").fill(HOOK)
        add_step(page, "Send Slack Message")
        step(page, 2).get_by_label("Channel").fill("#sales")
        # The booking fields are one list under the chain, readable without JS.
        expect(page.get_by_role("button", name="Insert a booking field")).to_have_count(0)
        page.get_by_text("Booking fields you can use in a message").click()
        expect(page.locator("#var-picker").get_by_text("{{ attendee_name }}")).to_be_visible()
        step(page, 2).get_by_role("button", name="Move up step 2").click()
        expect(step(page, 1)).to_have_attribute("data-action", "slack.post")
        expect(step(page, 1).get_by_label("Channel")).to_have_value("#sales")
        expect(step(page, 2).get_by_label("URL")).to_have_value(HOOK)
        check(page, "editor without javascript")
        step(page, 1).get_by_role("button", name="Remove step 1").click()
        expect(page.locator("#chain > li.step-item")).to_have_count(1)
        page.get_by_role("switch", name="Enabled").check()
        page.get_by_role("button", name="Test", exact=True).click()
        expect(page.locator("#test-panel")).to_be_visible()
        assert api_workflows(dash) == []  # nothing stored until Save

        page.get_by_role("button", name="Save workflow").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved “Without JavaScript”")
        (saved,) = api_workflows(dash)
        assert (saved["name"], saved["trigger"], saved["offset_minutes"], saved["enabled"]) == (
            "Without JavaScript",
            "meeting.after",
            2 * 24 * 60,
            True,
        )
        assert [(s["action"], s["settings"]["url"]) for s in saved["steps"]] == [
            ("webhook.call", HOOK)
        ]


def test_two_tabs_a_save_over_the_others_changes_asks_and_a_deleted_one_keeps_the_draft(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    with dashboard(tmp_path) as dash:
        first = dash.page(browser, viewport)
        new_webhook_draft(dash, first, "Shared")
        first.get_by_role("button", name="Save workflow").click()
        expect(first.get_by_role("status").first).to_contain_text("Saved “Shared”")
        location = first.url
        # The same person in a second tab renames it.
        second = first.context.new_page()
        second.goto(location)
        second.get_by_label("Name", exact=True).fill("Renamed in the second tab")
        second.get_by_role("button", name="Save workflow").click()
        expect(second.get_by_role("status").first).to_contain_text("Saved “Renamed")

        # The first tab's Save asks instead of silently undoing it.
        first.get_by_label("Name", exact=True).fill("Renamed in the first tab")
        first.get_by_role("button", name="Save workflow").click()
        expect(first.get_by_role("alert")).to_contain_text("changed in another tab")
        expect(first.get_by_role("link", name="Reload it (lose these edits)")).to_be_visible()
        expect(first.get_by_label("Name", exact=True)).to_have_value("Renamed in the first tab")
        check(first, "editor changed elsewhere")
        assert [w["name"] for w in api_workflows(dash)] == ["Renamed in the second tab"]
        first.get_by_role("button", name="Save anyway").click()
        expect(first.get_by_role("status").first).to_contain_text("Saved “Renamed in the first")
        assert [w["name"] for w in api_workflows(dash)] == ["Renamed in the first tab"]

        # Deleted in the second tab: the first tab's Save keeps the draft to create it again.
        second.goto(location)
        second.once("dialog", lambda dialog: dialog.accept())
        second.get_by_role("button", name="Delete workflow").click()
        expect(second).to_have_url(f"{dash.base}/workflows")
        first.get_by_label("Name", exact=True).fill("Brought back")
        first.get_by_role("button", name="Save workflow").click()
        expect(first.get_by_role("alert")).to_contain_text(
            "This workflow was deleted. Save to create it again."
        )
        expect(first).to_have_url(re.compile(r"/workflows/new\?draft=[\w-]+$"))
        check(first, "editor deleted elsewhere")
        assert api_workflows(dash) == []
        first.get_by_role("button", name="Save workflow").click()
        expect(first.get_by_role("status").first).to_contain_text("Saved “Brought back”")
        assert [w["name"] for w in api_workflows(dash)] == ["Brought back"]
