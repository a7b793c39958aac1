"""Every dashboard page, at a desktop size and at a phone's 390 by 844, as a person with a
screen reader or a small screen meets it: no horizontal scroll, axe-core finds no serious or
critical violation (``check``), the headings are in order (one h1, no skipped level), and where
a form was refused, the error summary has the focus and links to every invalid field.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from linktime.models import sample_event
from linktime.testing import HttpReceiver
from playwright.sync_api import Browser, Page, expect

from .browser import check, dashboard
from .conftest import LOOPBACK
from .test_crash import wait_run

HEADINGS = """() => [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")]
    .filter((h) => h.getClientRects().length > 0)
    .map((h) => Number(h.tagName[1]))"""

SUMMARY = """() => {
  const summary = document.getElementById("error-summary");
  return {
    focused: document.activeElement === summary,
    links: [...summary.querySelectorAll("a")].map((a) => a.getAttribute("href")),
    invalid: [...document.querySelectorAll("[aria-invalid=true]")].map((e) => "#" + e.id),
  };
}"""


def headings_in_order(page: Page, name: str) -> None:
    levels = page.evaluate(HEADINGS)
    assert levels.count(1) == 1 and levels[0] == 1, f"{name}: headings {levels}"
    for before, after in pairwise(levels):
        assert after <= before + 1, f"{name}: h{before} is followed by h{after} ({levels})"


def visit(page: Page, name: str) -> None:
    """What every page must pass."""
    check(page, name)
    headings_in_order(page, name)


def go(page: Page, url: str, name: str, status: int = 200) -> None:
    response = page.goto(url)
    assert response is not None and response.status == status, f"{name}: {url}"
    visit(page, name)


def error_summary_leads(page: Page, name: str) -> None:
    """The summary has the focus and links to each invalid field, which exists."""
    found = page.evaluate(SUMMARY)
    assert found["focused"], f"{name}: the error summary does not have the focus"
    assert found["invalid"], f"{name}: no field is marked invalid"
    assert set(found["invalid"]) <= set(found["links"]), f"{name}: {found}"
    for link in found["links"]:
        assert page.locator(link).count() == 1, f"{name}: {link} leads nowhere"


def test_every_page_is_usable_and_accessible(
    tmp_path: Path, browser: Browser, viewport: str, http_receiver: HttpReceiver
) -> None:
    with dashboard(tmp_path, LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK) as dash:
        api = dash.api
        hook = {"action": "webhook.call", "settings": {"url": f"{http_receiver.url}/hooks"}}
        created = api.post(
            "/v1/workflows",
            json={"name": "Tell the CRM", "trigger": "booking.created", "steps": [hook]},
        )
        assert created.status_code == 201, created.text
        workflow = created.json()["id"]
        assert api.post(f"/v1/workflows/{workflow}/enable").status_code == 200
        slack = {"action": "slack.post", "settings": {"channel": "#bookings", "text": "New"}}
        unconnected = {"name": "Tell the team", "trigger": "booking.created", "steps": [slack]}
        assert api.post("/v1/workflows", json=unconnected).status_code == 201

        page = dash.page(browser, viewport)

        # Signed out: the sign-in page, refused.
        anonymous = browser.new_context(viewport=page.viewport_size)
        login = anonymous.new_page()
        login.goto(f"{dash.base}/login")
        visit(login, "Sign in")
        login.get_by_label("API key").fill("lt_wrong")
        login.get_by_role("button", name="Sign in").click()
        expect(login.locator("#error-summary")).to_contain_text("not valid")
        visit(login, "Sign in refused")
        error_summary_leads(login, "Sign in refused")
        anonymous.close()

        visit(page, "Workflows")
        go(page, f"{dash.base}/workflows/new", "New workflow")

        go(page, f"{dash.base}/workflows/{workflow}", "Editor")
        page.locator("#step-0 summary").click()  # a saved step shows as its summary
        page.locator("#steps-0-settings-url").fill("ftp://127.0.0.1/nope")
        page.get_by_role("button", name="Save workflow").click()
        expect(page.locator("#error-summary")).to_be_visible()
        visit(page, "Editor refused")
        error_summary_leads(page, "Editor refused")

        go(page, f"{dash.base}/workflows/{workflow}/test", "Test")
        go(page, f"{dash.base}/workflows/{workflow}", "Editor again")
        page.get_by_role("button", name="Test", exact=True).click()
        expect(page.locator("#test-panel")).to_be_visible()
        visit(page, "Editor with the Test panel")

        event = sample_event(id="evt_a11y").model_dump(mode="json")
        answer = api.post("/v1/events", json=event)
        assert answer.status_code == 202, answer.text
        (run,) = answer.json()["runs"]
        assert wait_run(dash.base, dict(api.headers), run["id"])["status"] == "succeeded"
        opted_out = api.post("/v1/suppressions", json={"address": "+14155550123"})
        assert opted_out.status_code == 201, opted_out.text

        for name, path in [
            ("Delivery log", "/runs"),
            ("Workflow runs", f"/workflows/{workflow}/runs"),
            ("Run", f"/runs/{run['id']}"),
            ("Events", "/events"),
            ("Event", "/events/evt_a11y"),
            ("Booking", f"/bookings/{event['booking']['uid']}"),
            ("Settings", "/settings/integrations"),
            ("Sources", "/settings/sources"),
            ("Webhooks", "/settings/webhooks"),
            ("Opt-outs", "/settings/opt-outs"),
            ("Account", "/account"),
        ]:
            go(page, f"{dash.base}{path}", name)

        go(page, f"{dash.base}/workflows/wf_nope", "Not found", 404)
        page.context.close()
