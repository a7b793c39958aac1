"""A story in a real browser, at a desktop size and at a phone's: connecting a booking source
from Settings → Sources. The person connects the toy source of ``test_sources`` (installed as a
plugin distribution the server finds), copies the inbound URL and the secret shown once, the
provider posts with that secret, "Send a sample" says what it became, the deliveries list links
each event to the inspector, which names the source; then they rotate the secret and disconnect.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from .browser import check, dashboard
from .test_plugins import install_distribution
from .test_sources import ToySettings, booking, sign

REPO = Path(__file__).resolve().parent.parent
TOY_PLUGIN = """
from linktime import hookimpl
from tests.test_sources import TOY


@hookimpl
def register_sources(register):
    register(TOY)
"""


def copied(page: Page, field: str, label: str) -> str:
    """Click the field's Copy button; what the clipboard then holds."""
    page.get_by_role("button", name=f"Copy {label}").click()
    expect(page.locator(f"#{field}-copied")).to_have_text("Copied")
    return str(page.evaluate("navigator.clipboard.readText()"))


def test_connect_a_source_copy_its_url_and_secret_and_send_a_sample(
    tmp_path: Path, browser: Browser, viewport: str
) -> None:
    site = tmp_path / "site"
    install_distribution(site, "linktime-toy", "toy_source", TOY_PLUGIN, "toy")
    with dashboard(tmp_path, PYTHONPATH=os.pathsep.join([str(site), str(REPO)])) as dash:
        page = dash.page(browser, viewport)
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dash.base)
        page.goto(f"{dash.base}/settings/integrations")
        page.get_by_role("navigation", name="Settings").get_by_role("link", name="Sources").click()
        expect(page.get_by_text("No source is connected yet.")).to_be_visible()
        check(page, "Sources")

        page.get_by_role("button", name="Connect Toy").click()
        expect(page.get_by_role("heading", name="Toy", exact=True)).to_be_visible()
        connection_id = page.url.rsplit("/", 1)[1]
        url = f"{dash.base}/v1/sources/{connection_id}/events"
        expect(page.get_by_label("Inbound URL")).to_have_value(url)
        check(page, "Source connected")
        assert copied(page, "inbound-url", "inbound url") == url
        secret = copied(page, "signing-secret", "signing secret")
        assert len(secret) >= 32
        expect(page.get_by_label("Signing secret")).to_have_value(secret)

        # The provider, given the URL and the secret, is let in.
        body = json.dumps({"id": "p1", "kind": "booked", "booking": booking("bk_story")})
        headers = sign(body.encode(), ToySettings(signing_secret=secret), datetime.now(UTC))
        posted = httpx.post(url, content=body, headers=headers, trust_env=False)
        assert posted.status_code == 200, posted.text

        page.get_by_role("button", name="Send a sample").click()
        result = page.locator(".sample-result")
        expect(result).to_contain_text("The sample became:")
        expect(result.get_by_role("link", name="Booking created · toy:sample-1")).to_be_visible()
        expect(page.get_by_label("Signing secret")).to_have_count(0)  # shown that once only
        rows = page.locator("#deliveries tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("Translated")
        expect(rows.nth(1)).to_contain_text("bk_story")
        check(page, "Source sampled")

        rows.nth(1).get_by_role("link", name="Booking created").click()
        expect(page.locator(".facts .via")).to_have_text("via Toy")
        check(page, "Event from a source")
        page.get_by_role("link", name="Booking timeline").click()
        expect(page.locator("#timeline .via")).to_have_text(["via Toy"])
        page.go_back()
        page.go_back()

        page.get_by_role("button", name="Rotate the secret").click()
        expect(page.get_by_text("the old one is refused from now on")).to_be_visible()
        rotated = page.get_by_label("Signing secret").input_value()
        assert rotated != secret
        again = httpx.post(url, content=body, headers=headers, trust_env=False)
        assert again.status_code == 401

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Disconnect Toy").click()
        expect(page.get_by_text("Toy is disconnected")).to_be_visible()
        expect(page.get_by_text("No source is connected yet.")).to_be_visible()
        assert httpx.post(url, content=body, headers=headers, trust_env=False).status_code == 404
        page.context.close()
