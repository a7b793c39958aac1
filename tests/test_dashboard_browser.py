"""The seed's five steps in a real browser (Debian's Chromium driven by Playwright) against a
real ``linktime serve`` (the embedded default) and a loopback webhook receiver: sign in, create
a workflow, choose the trigger, add a webhook action, test it, enable it with the toggle; then a
booking event arrives and the delivery shows in the run log.

Screenshots of every page land in ``test-artifacts/dashboard/``. Without Chromium this test
fails; it never skips.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from linktime.models import sample_event
from linktime.testing import HttpReceiver
from playwright.sync_api import Page, expect, sync_playwright
from standardwebhooks import Webhook

from .browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from .conftest import LOOPBACK
from .procs import clean_env, serve_with_account, stop
from .test_crash import wait_run

NAME = "Push bookings to my CRM"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_five_steps_in_a_browser_then_a_delivery(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the dashboard's browser test needs Debian's Chromium "
        "(apt-get install -y chromium)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = clean_env(LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK)
    served = serve_with_account(env, tmp_path, "--name", "Acme", "--plan", "free")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.set_default_timeout(20_000)
                walk(page, served.base, served.key, http_receiver)
            finally:
                browser.close()
    except BaseException:
        print(served.log.read_text()[-4000:])
        raise
    finally:
        stop([served.proc])


def walk(page: Page, base: str, key: str, receiver: HttpReceiver) -> None:
    # 1. Dashboard → Workflows: signing in first.
    page.goto(f"{base}/workflows")
    expect(page).to_have_url(re.compile(r"/login\?next=/workflows$"))
    page.get_by_label("API key").fill("lt_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shot(page, "01-login-refused")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/workflows")
    expect(page.get_by_role("heading", name="Workflows", exact=True)).to_be_visible()
    expect(page.locator("#usage")).to_contain_text("0 of 3 active workflows · free plan")
    shot(page, "02-workflows")

    # 2. "Create Workflow": from a template that calls a webhook if one is installed, else blank.
    webhook_templates = page.locator(".card.template").filter(has_text="Call Webhook")
    if webhook_templates.count():
        webhook_templates.first.get_by_role("button", name="Use template").click()
        expect(page.get_by_role("status").first).to_contain_text("from a template")
    else:
        page.get_by_role("link", name="Create workflow").click()
        expect(page.get_by_role("heading", name="Create workflow")).to_be_visible()
    page.get_by_label("Name", exact=True).fill(NAME)

    # 3. Choose the trigger: the offset input shows only for time triggers.
    trigger = page.get_by_label("When", exact=True)
    trigger.select_option(label="Before Meeting")
    expect(page.get_by_label("How long")).to_be_visible()
    expect(page.locator("#offset-help")).to_have_text("before the meeting starts")
    trigger.select_option(label="Booking Created")
    expect(page.get_by_label("How long")).to_be_hidden()

    # 4. Add a webhook action pointing at the receiver (a save error first, shown by the field).
    if not page.locator("li.step-item[data-action='webhook.call']").count():
        page.get_by_label("Add an action").select_option(label="Call Webhook")
        page.get_by_role("button", name="Add action").click()
    step = page.locator("li.step-item[data-action='webhook.call']").first
    expect(step.locator(".step-title")).to_contain_text("Call Webhook")
    step.get_by_label("URL").fill("ftp://127.0.0.1/nope")
    page.get_by_role("button", name="Save workflow").click()
    expect(page.locator("#steps-0-settings-url-error")).to_contain_text("http or https")
    shot(page, "03-editor-error")
    step = page.locator("li.step-item[data-action='webhook.call']").first
    step.get_by_label("URL").fill(f"{receiver.url}/hooks")
    shot(page, "04-editor")
    page.get_by_role("button", name="Save workflow").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Saved “{NAME}”")
    secret = page.locator(".generated-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    workflow_id = page.url.rsplit("/", 1)[1]
    assert workflow_id.startswith("wf_")
    shot(page, "05-saved")

    # 5a. Test: the dry run of the draft in the editor, step by step; nothing is sent.
    page.get_by_role("button", name="Test", exact=True).click()
    preview = page.locator("#preview-0")
    expect(preview).to_contain_text("Step 1 · Call Webhook")
    expect(preview).to_contain_text(f"{receiver.url}/hooks")
    shot(page, "06-test")
    assert receiver.requests == []

    # 5b. Enable: flip the green toggle on the Workflows page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Workflows").click()
    switch = page.get_by_role("switch", name=f"Enabled: {NAME}")
    expect(switch).to_have_attribute("aria-checked", "false")
    switch.click()
    switch = page.get_by_role("switch", name=f"Enabled: {NAME}")
    expect(switch).to_have_attribute("aria-checked", "true")
    expect(switch).to_have_css("background-color", "rgb(22, 163, 74)")  # green
    expect(page.locator("#usage")).to_contain_text("1 of 3 active workflows")
    shot(page, "07-enabled")

    # A booking event arrives through the API; the webhook is delivered, signed.
    headers = {"Authorization": f"Bearer {key}"}
    event = sample_event(id="evt_browser").model_dump(mode="json")
    answer = httpx.post(f"{base}/v1/events", json=event, headers=headers)
    assert answer.status_code == 202, answer.text
    (run,) = answer.json()["runs"]
    assert wait_run(base, headers, run["id"])["status"] == "succeeded"
    (delivery,) = receiver.wait_for(1, timeout=30)
    assert delivery.path == "/hooks"
    payload = Webhook(secret).verify(delivery.body, delivery.headers)
    assert payload["data"]["workflow"] == {"id": workflow_id, "name": NAME}

    # The run log shows it: the run, then its step's attempt with HTTP status 200.
    page.locator(f"#workflow-{workflow_id}").get_by_role("link", name="Runs").click()
    expect(page.get_by_role("heading", name=f"Run log: {NAME}")).to_be_visible()
    row = page.locator(f"#run-{run['id']}")
    expect(row).to_contain_text("Succeeded")
    shot(page, "08-run-log")
    row.get_by_role("link", name=NAME).click()
    attempt = page.locator("#step-0 .attempt").first
    expect(attempt.locator(".http-status")).to_have_text("200")
    expect(attempt).to_contain_text("Succeeded")
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    shot(page, "09-run")

    # Which workflows the event ran, and why the others did not.
    page.get_by_role("link", name="evt_browser").click()
    expect(page.locator("#ran")).to_contain_text(NAME)
    shot(page, "10-event")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings", exact=True)).to_be_visible()
    shot(page, "11-integrations")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/workflows")
    expect(page).to_have_url(re.compile(r"/login"))
