"""Dashboard stories in a real browser: Debian's Chromium driven by Playwright against a real
``linktime serve`` (the embedded default), at a desktop size and at a phone's 390 by 844.

``check(page, name)`` is what every story calls on every page it reaches: a full-page
screenshot kept in ``test-artifacts/dashboard/``, no horizontal scroll at the viewport's width,
and axe-core (``axe-playwright-python``) reporting no serious or critical violation. Without
Chromium these tests fail; they never skip.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from .procs import LINKTIME, Served, clean_env, serve_with_account, stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "mobile": {"width": 390, "height": 844}}
AXE = Axe()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the dashboard's browser tests need Debian's Chromium "
        "(apt-get install -y chromium)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(params=sorted(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> str:
    """Each story runs at both sizes."""
    return str(request.param)


@dataclass
class Dashboard:
    """A served dashboard: ``key`` signs in to the account made before it started."""

    served: Served
    env: dict[str, str]
    cwd: Path
    api: httpx.Client  # the account's API, signed with its key, as another tool would call it

    @property
    def base(self) -> str:
        return self.served.base

    @property
    def key(self) -> str:
        return self.served.key

    def cli(self, *args: str) -> str:
        """What ``linktime *args`` prints, run as the operator of this server."""
        return subprocess.run(
            [LINKTIME, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def page(self, browser: Browser, viewport: str, key: str | None = None) -> Page:
        """A new browser context at ``viewport``, signed in with ``key`` (default: ``self.key``),
        on the Workflows page. Its timezone is Europe/Berlin, so times shown differ from UTC."""
        context = browser.new_context(viewport=VIEWPORTS[viewport], timezone_id="Europe/Berlin")
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{self.base}/login?next=/workflows")
        page.get_by_label("API key").fill(key or self.key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{self.base}/workflows")
        return page


@contextmanager
def dashboard(tmp_path: Path, *account_args: str, **env: str) -> Iterator[Dashboard]:
    """``linktime serve`` with ``env`` (LINKTIME_… operator settings) and an account made with
    ``account_args`` (default: "Acme" on the free plan). Its log is printed if the story fails."""
    environ = clean_env(**env)
    served = serve_with_account(environ, tmp_path, *(account_args or ("--name", "Acme")))
    api = httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {served.key}"})
    try:
        yield Dashboard(served, environ, tmp_path, api)
    except BaseException:
        print(served.log.read_text()[-4000:])
        raise
    finally:
        api.close()
        stop([served.proc])


def check(page: Page, name: str) -> None:
    """The page as it is now: screenshot kept; no horizontal scroll; axe-core finds no serious
    or critical violation."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    page.screenshot(path=str(ARTIFACTS / f"{slug}-{width}.png"), full_page=True)
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{name}: the page is {scroll}px wide in a {width}px viewport"
    violations = AXE.run(page).response["violations"]
    bad = [v for v in violations if v.get("impact") in ("serious", "critical")]
    assert not bad, f"{name} at {width}px: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in bad
    )


def step(page: Page, n: int) -> Locator:
    """The editor's n-th step card (from 1) of the chain."""
    return page.locator("#chain > li.step-item").nth(n - 1)


def add_step(page: Page, title: str) -> None:
    """Add an action to the editor's chain by its title ("Call Webhook")."""
    page.get_by_label("Add an action").select_option(label=title)
    page.get_by_role("button", name="Add action").click()
