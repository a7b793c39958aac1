"""An operator's first minutes: what `linktime serve` says at start (where the dashboard and the
API docs are, what runs in the process, on which database and broker, passwords masked), and API
docs pages that load everything from the package, so they work without internet access."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from linktime.api import create_app
from linktime.api.docs import ASSETS, CONTENT_SECURITY_POLICY
from linktime.cli import main, serve_banner
from linktime.engine import Hub
from linktime.settings import Settings
from litestar.testing import TestClient
from playwright.sync_api import Browser, Route, expect

from .procs import Served, clean_env, serve_with_account, stop

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGES = ("/schema", "/schema/redoc", "/schema/swagger")
LINKS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`linktime serve` as installed, the embedded default (SQLite, in-process broker)."""
    env = clean_env(LINKTIME_DATA_DIR=str(tmp_path / "data"))
    server = serve_with_account(env, tmp_path)
    try:
        yield server
    finally:
        stop([server.proc])


def test_serve_says_once_where_things_are_and_what_runs(served: Served, tmp_path: Path) -> None:
    log = served.log.read_text()
    assert log.count("LinkTime Workflows\n") == 1
    said = {
        key.strip(): value.strip()
        for key, value in (line.split(":", 1) for line in log.splitlines() if line[:2] == "  ")
    }
    base = served.base
    assert said == {
        "dashboard": f"{base}/",
        "API docs": f"{base}/schema (Swagger UI: {base}/schema/swagger)",
        "roles": "API, worker (8 threads), scheduler",
        "database": f"sqlite:///{(tmp_path / 'data' / 'linktime.db').resolve()}",
        "broker": "in-process",
        "admin API": "off (set LINKTIME_ADMIN_TOKEN)",
        "callbacks": 'off (set LINKTIME_PUBLIC_URL): delivery statuses stay "accepted"',
    }
    # what it points to is there
    for url in (f"{base}/login", f"{base}/schema", f"{base}/schema/swagger"):
        assert httpx.get(url).status_code == 200, url


def test_the_access_log_keeps_no_unsubscribe_token_or_callback_key(served: Served) -> None:
    """Whoever reads the logs could unsubscribe an address or post as a provider with them."""
    token, key = "TOKENnotForLogs123", "acc_x.KEYnotForLogs456"
    httpx.get(f"{served.base}/v1/unsubscribe/{token}")
    httpx.post(f"{served.base}/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    httpx.post(f"{served.base}/v1/callbacks/twilio/{key}", data={"a": "b"})
    httpx.get(f"{served.base}/healthz?after=them")  # its line comes after theirs
    deadline = time.monotonic() + 10
    while "/healthz?after=them" not in served.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = served.log.read_text()
    assert "/healthz?after=them" in log
    assert '"GET /v1/unsubscribe/… HTTP/1.1" 404' in log
    assert '"POST /v1/callbacks/twilio/… HTTP/1.1" 404' in log
    assert "notForLogs" not in log


def test_banner_masks_passwords_and_names_the_other_processes() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://linktime:s3cret-pw@db.internal:5432/linktime",
        redis_url="redis://:hunter2-pw@redis.internal:6379/0",
        admin_token="an-operator-token",
    )
    lines = serve_banner(settings, "0.0.0.0", 8080)
    said = "\n".join(lines)
    assert "s3cret-pw" not in said and "hunter2-pw" not in said
    assert "an-operator-token" not in said
    assert lines[1:] == [
        "  dashboard:  http://localhost:8080/",
        "  API docs:   http://localhost:8080/schema (Swagger UI: "
        "http://localhost:8080/schema/swagger)",
        "  roles:      API only (steps run in `linktime worker`, reminders in "
        "`linktime scheduler`)",
        "  database:   postgresql+psycopg://linktime:***@db.internal:5432/linktime",
        "  broker:     redis://:***@redis.internal:6379/0",
        "  admin API:  on, /v1/admin",
        '  callbacks:  off (set LINKTIME_PUBLIC_URL): delivery statuses stay "accepted"',
    ]


def test_banner_masks_secrets_given_in_the_query_string() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://linktime@db.internal/linktime"
        "?password=q-pw&sslmode=require&sslpassword=q-sslpw",
        redis_url="redis://redis.internal:6379/0?password=q-redis-pw",
    )
    said = "\n".join(serve_banner(settings, "127.0.0.1", 8000))
    assert "q-pw" not in said and "q-sslpw" not in said and "q-redis-pw" not in said
    assert (
        "  database:   postgresql+psycopg://linktime@db.internal/linktime"
        "?password=***&sslmode=require&sslpassword=***"
    ) in said
    assert "  broker:     redis://redis.internal:6379/0?password=***" in said
    absolute = Settings(database_url="sqlite:////var/lib/linktime/linktime.db")
    assert "  database:   sqlite:////var/lib/linktime/linktime.db" in serve_banner(
        absolute, "127.0.0.1", 8000
    )


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("LINKTIME_METRICS_PORT", "99999", "less than or equal to 65535"),
        ("LINKTIME_LOG_FORMAT", "xml", "'text' or 'json'"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_the_variable(
    variable: str, value: str, said: str
) -> None:
    for args in (["plans"], ["plans", "--help"]):
        result = CliRunner().invoke(main, args, env={variable: value})
        assert result.exit_code == 1, result.output
        assert result.output == f"Error: invalid setting: {variable}: Input should be {said}\n"


@pytest.mark.parametrize(
    "value",
    [
        "ftp://hub.example.com",
        "https://hub.example.com#top",
        "https://hub.example.com?x=1",
        "https://hub.example.com?",
        "https://user:secret@hub.example.com",
        "http://hub example.com",
        "https://",
    ],
)
def test_a_public_url_providers_could_not_call_back_is_refused(value: str) -> None:
    result = CliRunner().invoke(main, ["plans"], env={"LINKTIME_PUBLIC_URL": value})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: invalid setting: LINKTIME_PUBLIC_URL: ")
    assert "secret" not in result.output  # a password in it is not repeated


def test_a_public_url_is_kept_without_its_trailing_slash() -> None:
    assert Settings(public_url=" https://hub.example.com/base/ ").public_url == (
        "https://hub.example.com/base"
    )
    assert Settings(public_url="").public_url is None


def test_log_format_takes_any_case() -> None:
    assert Settings(log_format="JSON").log_format == "json"
    assert Settings(log_format="Text").log_format == "text"


@pytest.fixture
def docs_client(tmp_path: Path) -> Iterator[TestClient[Any]]:
    hub = Hub(Settings(data_dir=tmp_path, secret_key="test-secret-key"))
    hub.migrate()
    with TestClient(create_app(hub)) as client:
        yield client
    hub.close()


def test_docs_pages_load_only_from_this_server(docs_client: TestClient[Any]) -> None:
    loaded = set()
    for page in DOCS_PAGES:
        r = docs_client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), page
        links = LINKS.findall(r.text)
        assert links, page
        assert [u for u in links if not u.startswith("/")] == [], f"{page} loads from elsewhere"
        assert "fonts.googleapis" not in r.text
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        loaded |= set(links)
    assert loaded == {
        "/static/openapi/favicon-32x32.png",
        "/static/openapi/redoc.standalone.js",
        "/static/openapi/swagger-ui-bundle.js",
        "/static/openapi/swagger-ui-standalone-preset.js",
        "/static/openapi/swagger-ui.css",
    }
    for url in sorted(loaded):
        r = docs_client.get(url)
        assert r.status_code == 200 and len(r.content) == (ASSETS / Path(url).name).stat().st_size


def test_the_wheel_carries_the_docs_assets(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("linktime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ASSETS.iterdir():
        assert f"linktime/api/static/openapi/{asset.name}" in names


def test_swagger_and_redoc_render_with_no_network(browser: Browser, served: Served) -> None:
    """In Chromium, every request to another host refused: both pages still render the API."""
    refused: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(served.base + "/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context = browser.new_context()
    context.route("**/*", only_this_server)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{served.base}/schema/swagger")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("LinkTime Workflows")
    expect(
        page.locator(".opblock-summary-path", has_text="/v1/admin/accounts").first
    ).to_be_visible()
    page.goto(f"{served.base}/schema/redoc")
    expect(page.locator("h1", has_text="LinkTime Workflows")).to_be_visible()
    expect(page.get_by_text("Move an account to another plan").first).to_be_attached()
    context.close()
    assert refused == []
