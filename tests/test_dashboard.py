"""The web dashboard over Litestar's TestClient and PostgreSQL: sign-in, CSRF, cookie flags,
forms generated from each action's settings model, errors next to their field, and accounts
that cannot see or touch each other's workflows, runs and events."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any, Literal, NamedTuple

import pytest
from linktime import plugins, workflows
from linktime.accounts import NewAccount
from linktime.actions import ActionType, Result
from linktime.admin import set_plan
from linktime.api import create_app
from linktime.dashboard import forms
from linktime.dashboard.editor import step_summary
from linktime.models import sample_event
from linktime.storage import ApiKey, Draft, Integration, Workflow, WorkflowStep
from linktime.templating import TemplateStr
from litestar.testing import TestClient
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .conftest import System

TOKEN_RE = re.compile(r'name="_csrf_token" value="([^"]+)"')


# -- helpers -------------------------------------------------------------------------------------


class Form(HTMLParser):
    """The form controls of a page: name → attributes (with the tag), and label texts by id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.controls: dict[str, dict[str, str]] = {}
        self.labels: dict[str, str] = {}
        self._label: str | None = None
        self._text: list[str] = []
        self._select: dict[str, str] | None = None
        self._textarea: dict[str, str] | None = None
        self._inert = 0  # inside <template>: not part of the page until a script adds it
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._inert += tag == "template"
        if self._inert:
            return
        if tag in ("input", "select", "textarea") and "name" in a:
            control = self.controls.setdefault(a["name"], {**a, "tag": tag})
            if tag == "select":
                self._select = control
            elif tag == "textarea":
                self._textarea = control
                control["value"] = ""
        if (
            tag == "option"
            and self._select is not None
            and ("value" not in self._select or "selected" in a)
        ):
            self._select["value"] = a.get("value", "")
        if tag == "label" and "for" in a:
            self._label, self._text = a["for"], []

    def handle_data(self, data: str) -> None:
        if self._label is not None:
            self._text.append(data)
        if self._textarea is not None:
            self._textarea["value"] += data

    def handle_endtag(self, tag: str) -> None:
        self._inert -= tag == "template"
        if tag == "label" and self._label is not None:
            self.labels[self._label] = "".join(self._text).replace("*", "").strip()
            self._label = None
        if tag == "select":
            self._select = None
        if tag == "textarea":
            self._textarea = None

    def values(self) -> dict[str, str]:
        """What submitting the page's forms would send (checkboxes only when checked)."""
        return {
            name: c.get("value", "")
            for name, c in self.controls.items()
            if name != "op" and (c.get("type") != "checkbox" or "checked" in c)
        }

    def kind(self, name: str) -> str:
        """'text', 'password', 'checkbox', 'number', 'select' or 'textarea', and labelled."""
        control = self.controls[name]
        assert control.get("id") in self.labels, f"{name} has no <label for=…>"
        return control["tag"] if control["tag"] != "input" else control.get("type", "text")


class Dash:
    """A browser session on the dashboard: a TestClient keeping cookies, and the CSRF token."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self.token = ""

    def get(self, path: str, **kw: Any) -> Any:
        response = self.client.get(path, **kw)
        found = TOKEN_RE.search(response.text)
        if found:
            self.token = found.group(1)
        return response

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        csrf: bool = True,
        multipart: bool = False,
    ) -> Any:
        """Submit a form, urlencoded as browsers do by default, or as multipart/form-data."""
        body = dict(data or {})
        if csrf:
            body.setdefault("_csrf_token", self.token)
        if multipart:
            fields = [(name, (None, str(value))) for name, value in body.items()]
            response = self.client.post(path, files=fields, follow_redirects=False)
        else:
            response = self.client.post(path, data=body, follow_redirects=False)
        found = TOKEN_RE.search(response.text)
        if found:
            self.token = found.group(1)
        return response

    def edit(self, path: str, data: dict[str, Any]) -> Any:
        """Post the editor's form and follow its answer (always 303: POST-redirect-GET) to the
        page it shows: the draft, or the saved workflow."""
        answer = self.post(path, data)
        assert answer.status_code == 303, answer.text[-500:]
        return self.get(answer.headers["location"])

    def sign_in(self, api_key: str) -> Any:
        self.get("/login")
        response = self.post("/login", {"api_key": api_key})
        assert response.status_code == 303, response.text
        self.get("/workflows")  # signing in starts a new session, with a new CSRF token
        return response


@pytest.fixture
def open_dash(make_system: Callable[..., System]) -> Iterator[Callable[..., Dash]]:
    """A browser on a system's app (``base_url`` https: as if behind TLS). Each has its own
    app instance: one Litestar app's lifespan is not entered twice."""
    clients: list[TestClient[Any]] = []

    def open_(system: System, base_url: str = "http://testserver.local") -> Dash:
        client = TestClient(create_app(system.hub), base_url=base_url)
        client.__enter__()
        clients.append(client)
        return Dash(client)

    yield open_
    for client in clients:
        client.__exit__(None, None, None)


class SignedIn(NamedTuple):
    system: System
    account: NewAccount
    dash: Dash


@pytest.fixture
def signed_in(make_system: Callable[..., System], open_dash: Any) -> SignedIn:
    """A default system, a new account on it, and the dashboard signed in as that account."""
    system = make_system()
    account = system.account()
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    return SignedIn(system, account, dash)


def webhook_step(url: str = "https://example.com/hook") -> dict[str, Any]:
    return {"action": "webhook.call", "settings": {"url": url}}


def editor_form(
    name: str, trigger: str, steps: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    form: dict[str, Any] = {"name": name, "trigger": trigger, "op": "save", **extra}
    for i, step in enumerate(steps):
        form[f"steps.{i}.action"] = step["action"]
        for key, value in step.get("settings", {}).items():
            form[f"steps.{i}.settings.{key}"] = value
    return form


def field_error(html: str, field_id: str) -> str:
    """The error shown inside the field's own block (not in a summary elsewhere)."""
    block = re.search(
        rf'<div class="field[^"]*"[^>]*>(?:(?!<div class="field).)*?id="{field_id}".*?</div>',
        html,
        re.S,
    )
    assert block, f"no field {field_id}"
    found = re.search(rf'id="{field_id}-error">([^<]*)<', block.group(0))
    assert found, f"no error shown next to {field_id}: {block.group(0)}"
    return html_lib.unescape(found.group(1))


# -- sign-in, session, CSRF ----------------------------------------------------------------------


PAGES = ["/workflows", "/workflows/new", "/runs", "/settings/integrations", "/workflows/wf_x"]


def test_every_page_needs_sign_in(make_system: Callable[..., System], open_dash: Any) -> None:
    dash = open_dash(make_system())
    for path in [*PAGES, "/workflows/wf_x/runs", "/runs/run_x", "/events/evt_x"]:
        response = dash.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/login?next={path}"
    assert dash.get("/").headers.get("content-type", "").startswith("text/html")


def test_wrong_key_refused_and_revoked_key_signs_out(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system()
    account = system.account()
    dash = open_dash(system)
    dash.get("/login")
    for bad in ("lt_not-a-key", "nonsense", ""):
        response = dash.post("/login", {"api_key": bad})
        assert response.status_code == 401
        assert "not valid" in response.text
    assert dash.get("/workflows", follow_redirects=False).status_code == 303

    dash.sign_in(account.api_key)
    page = dash.get("/workflows")
    assert page.status_code == 200 and "Create workflow" in page.text
    with system.hub.db.begin() as conn:
        conn.execute(update(ApiKey).values(revoked_at=system.hub.clock()))
    assert dash.get("/workflows", follow_redirects=False).status_code == 303


def test_sign_in_goes_back_only_to_own_pages(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system()
    account = system.account()
    for target, expected in [
        ("/runs", "/runs"),
        ("//evil.example/x", "/workflows"),
        ("https://evil.example/", "/workflows"),
        ("/\\evil.example", "/workflows"),
    ]:
        dash = open_dash(system)
        dash.get("/login")
        response = dash.post("/login", {"api_key": account.api_key, "next": target})
        assert response.headers["location"] == expected


def test_sign_out(make_system: Callable[..., System], open_dash: Any) -> None:
    system = make_system()
    dash = open_dash(system)
    dash.sign_in(system.account().api_key)
    dash.get("/workflows")
    response = dash.post("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert dash.get("/workflows", follow_redirects=False).status_code == 303


def _session_cookie(response: Any) -> str:
    cookies = [c for c in response.headers.get_list("set-cookie") if "linktime_session=" in c]
    assert cookies, response.headers
    return cookies[-1]


def test_session_cookie_flags(make_system: Callable[..., System], open_dash: Any) -> None:
    system = make_system()
    account = system.account()
    plain = open_dash(system)
    plain.get("/login")
    cookie = _session_cookie(plain.post("/login", {"api_key": account.api_key}))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "secure" not in flags  # plain http (a local `linktime serve`)
    assert account.api_key not in cookie and account.id not in cookie  # encrypted

    page = plain.get("/workflows")
    assert page.headers["x-frame-options"] == "DENY"  # the toggles are forms
    assert page.headers["cache-control"] == "no-store"  # a page may show a secret once
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    tls = open_dash(system, base_url="https://testserver.local")
    tls.get("/login")
    cookie = _session_cookie(tls.post("/login", {"api_key": account.api_key}))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"httponly", "samesite=lax", "secure"} <= set(flags)


def test_csrf_on_forms_not_on_the_bearer_api(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system()
    account = system.account()
    wf = system.workflow(account, [webhook_step()], enabled=False)
    dash = open_dash(system)

    dash.get("/login")
    assert dash.post("/login", {"api_key": account.api_key}, csrf=False).status_code == 403
    dash.sign_in(account.api_key)
    dash.get("/workflows")
    for token in (None, "", "forged-token"):
        data = {"enabled": "true"} if token is None else {"enabled": "true", "_csrf_token": token}
        response = dash.post(f"/workflows/{wf}/toggle", data, csrf=False)
        assert response.status_code == 403, token
        assert "security token" in response.text
    assert dash.post(f"/workflows/{wf}/delete", csrf=False).status_code == 403
    assert workflows.get(system.hub, account.id, wf).enabled is False

    # A token from another session does not do either.
    other = open_dash(system)
    other.get("/login")
    response = dash.post(f"/workflows/{wf}/toggle", {"enabled": "true", "_csrf_token": other.token})
    assert response.status_code == 403

    # The JSON API takes bearer keys and no CSRF token, on the same app and client.
    bearer = {"Authorization": f"Bearer {account.api_key}"}
    response = dash.client.post(f"/v1/workflows/{wf}/enable", headers=bearer)
    assert response.status_code == 200 and response.json()["enabled"] is True
    created = dash.client.post(
        "/v1/workflows",
        json={"name": "api", "trigger": "booking.created", "steps": [webhook_step()]},
        headers=bearer,
    )
    assert created.status_code == 201, created.text
    # ... and the session cookie is no credential for it.
    assert dash.client.get("/v1/workflows").status_code == 401

    response = dash.post(f"/workflows/{wf}/toggle", {"enabled": "false"})
    assert response.status_code == 303
    assert workflows.get(system.hub, account.id, wf).enabled is False


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
def test_forms_work_urlencoded_and_multipart(
    make_system: Callable[..., System], open_dash: Any, multipart: bool
) -> None:
    system = make_system(registry=fax_registry())
    account = system.account()
    wf = system.workflow(account, [webhook_step()], enabled=False)
    dash = open_dash(system)

    dash.get("/login")
    signed_in = dash.post("/login", {"api_key": account.api_key}, multipart=multipart)
    assert signed_in.status_code == 303, signed_in.text
    dash.get("/workflows")
    toggled = dash.post(f"/workflows/{wf}/toggle", {"enabled": "true"}, multipart=multipart)
    assert toggled.status_code == 303, toggled.text
    assert workflows.get(system.hub, account.id, wf).enabled is True

    dash.get("/workflows/new")
    form = editor_form("made", "booking.created", [webhook_step()])
    saved = dash.post("/workflows/new", form, multipart=multipart)
    assert saved.status_code == 303, saved.text
    assert [w.name for w in workflows.list_all(system.hub, account.id)].count("made") == 1

    dash.get("/settings/integrations")
    fields = {"api_key": "fax-secret-123", "sender": "Acme", "region": "us"}
    connected = dash.post("/settings/integrations/faxco", fields, multipart=multipart)
    assert connected.status_code == 303, connected.text
    card = dash.get("/settings/integrations").text.split('id="faxco"')[1]
    assert "Connected" in card.split("</section>")[0]

    # Without the token, either way, it is still refused.
    forged = dash.post(
        f"/workflows/{wf}/toggle", {"enabled": "false"}, csrf=False, multipart=multipart
    )
    assert forged.status_code == 403 and "security token" in forged.text


# -- the editor: generated forms, errors next to fields, secrets -----------------------------------


class FaxCredentials(BaseModel):
    api_key: SecretStr
    sender: str = Field(description="Shown as the sender")
    region: Literal["eu", "us"] = "eu"


class FaxSettings(BaseModel):
    """A third-party action's settings: one field of every kind the generator knows."""

    number: str = Field(description="Where to send it")
    cover: TemplateStr = "Hello {{ invitee.name }}"
    note: TemplateStr | None = None
    urgent: bool = False
    quality: Literal["fine", "standard"] = "standard"
    pages: int = 1
    copies_to: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    pin: SecretStr | None = None
    notes_long: str = Field("", max_length=10_000)


def _fax(ctx: Any) -> Result:
    return Result.ok(external_id="fax-1")


def fax_registry() -> plugins.Registry:
    registry = plugins.load()
    registry.broken.append(plugins.BrokenPlugin("fax_old", "linktime-fax-old", "import failed"))
    registry.actions["fax.send"] = ActionType(
        "fax.send",
        "Send a fax",
        FaxSettings,
        _fax,
        credentials=FaxCredentials,
        integration="faxco",
    )
    return registry


def test_a_form_for_every_installed_action(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system(registry=fax_registry())
    dash = open_dash(system)
    dash.sign_in(system.account().api_key)
    assert "webhook.call" in system.hub.registry.actions
    for name, action in system.hub.registry.actions.items():
        page = dash.get(f"/workflows/new?action={name}")
        assert page.status_code == 200, name
        assert action.title in page.text
        form = Form(page.text)
        assert form.controls["steps.0.action"]["value"] == name
        if action.logic:
            continue  # a delay's and a filter's own inputs: tests/test_editor_logic.py
        for field, info in action.settings.model_fields.items():
            if forms.field_spec(field, info).hidden:
                continue  # set by an action of its own (below)
            assert f"steps.0.settings.{field}" in form.controls, (name, field)
            form.kind(f"steps.0.settings.{field}")  # labelled

    webhook = Form(dash.get("/workflows/new?action=webhook.call").text)
    assert webhook.kind("steps.0.settings.url") == "text"
    assert webhook.kind("steps.0.settings.secret") == "password"
    assert webhook.controls["steps.0.settings.secret"]["placeholder"] == "generated if left blank"
    assert webhook.kind("steps.0.settings.headers") == "textarea"
    assert webhook.labels["steps-0-settings-url"] == "URL"
    # Rotate secret's fields ride along unseen: the rotated-out secret not at all (left out, the
    # stored one is kept), its end as a hidden value.
    assert "steps.0.settings.previous_secret" not in webhook.controls
    assert webhook.controls["steps.0.settings.previous_secret_until"]["type"] == "hidden"

    fax = Form(dash.get("/workflows/new?action=fax.send").text)
    expected = {
        "number": "text",
        "cover": "textarea",
        "note": "textarea",
        "urgent": "checkbox",
        "quality": "select",
        "pages": "number",
        "copies_to": "text",
        "tags": "textarea",
        "pin": "password",
        "notes_long": "textarea",
    }
    assert {f: fax.kind(f"steps.0.settings.{f}") for f in expected} == expected
    page = dash.get("/workflows/new?action=fax.send").text
    assert '<option value="standard" selected>' in page
    assert "Hello {{ invitee.name }}" in page  # defaults shown
    assert "(comma-separated)" in page

    # A plugin that failed to load is named on the Workflows page.
    listing = dash.get("/workflows").text
    assert "fax_old" in listing and "linktime-fax-old" in listing and "import failed" in listing

    # The trigger picker has every trigger's title; the offset input is for time triggers.
    blank = dash.get("/workflows/new").text
    for trigger in system.hub.registry.triggers.values():
        assert f">{trigger.title}</option>" in blank
    assert re.search(r'id="offset-field" data-time-triggers="[^"]*meeting.before', blank)
    # Shown without JS whatever the trigger (editor.js hides it for event triggers).
    assert "for Before Meeting and After Meeting only" in blank


def test_a_third_party_action_round_trips_through_its_form(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system(registry=fax_registry())
    account = system.account()
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    dash.get("/workflows/new")
    settings = {
        "number": " +4930123 ",
        "cover": "Hi {{ invitee.first_name }},\nsee you",
        "urgent": "on",
        "quality": "fine",
        "pages": "3",
        "copies_to": "a@example.com, b@example.com",
        "tags": "team: sales\nsource: web",
        "pin": "1234",
    }
    response = dash.post(
        "/workflows/new",
        editor_form("Fax it", "booking.created", [{"action": "fax.send", "settings": settings}]),
    )
    assert response.status_code == 303, response.text
    wf = workflows.get(system.hub, account.id, response.headers["location"].rsplit("/", 1)[1])
    stored = wf.steps[0].settings
    assert stored["number"] == "+4930123"
    assert stored["cover"] == "Hi {{ invitee.first_name }},\nsee you"
    assert stored["urgent"] is True and stored["quality"] == "fine" and stored["pages"] == 3
    assert stored["copies_to"] == ["a@example.com", "b@example.com"]
    assert stored["tags"] == {"team": "sales", "source": "web"}
    assert stored["pin"] == "********" and stored["note"] is None

    page = dash.get(f"/workflows/{wf.id}").text
    assert "1234" not in page
    form = Form(page)
    assert form.controls["steps.0.settings.pin"]["placeholder"] == "unchanged"
    assert form.controls["steps.0.settings.copies_to"]["value"] == "a@example.com, b@example.com"
    assert "checked" in form.controls["steps.0.settings.urgent"]


def test_save_errors_are_shown_next_to_their_field(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    steps = [
        webhook_step("ftp://example.com/x"),
        {"action": "webhook.call", "settings": {"headers": "no colon here"}},
    ]
    response = dash.edit("/workflows/new", editor_form("", "booking.created", steps))
    assert response.status_code == 200
    html = response.text
    assert "The workflow was not saved" in html
    assert "http or https" in field_error(html, "steps-0-settings-url")
    assert "name: value" in field_error(html, "steps-1-settings-headers")
    assert field_error(html, "name") == "Give the workflow a name"
    empty = dash.edit("/workflows/new", editor_form("Nothing", "booking.created", []))
    assert empty.status_code == 200
    assert 'id="steps-error">Add at least one action<' in empty.text
    assert "should have" not in empty.text  # said once, in the editor's words
    assert re.search(r'id="steps-0-settings-url"[^>]*aria-invalid="true"', html)
    # What was typed is kept.
    assert Form(html).controls["steps.0.settings.url"]["value"] == "ftp://example.com/x"
    assert workflows.list_all(system.hub, account.id) == []

    # An error from the service (a template with an unknown field) lands on its field too.
    if "email.send" in system.hub.registry.actions:
        email = {
            "action": "email.send",
            "settings": {"to_invitee": "on", "subject": "Hi {{ nobody }}", "text": "x"},
        }
        response = dash.edit("/workflows/new", editor_form("Mail", "booking.created", [email]))
        assert response.status_code == 200
        assert "unknown field 'nobody'" in field_error(response.text, "steps-0-settings-subject")

    # An event trigger takes no offset (one typed without JS is named, not dropped); a time
    # trigger takes a whole number of a unit.
    response = dash.edit(
        "/workflows/new",
        editor_form("Now", "booking.created", [webhook_step()], offset="2", offset_unit="hours"),
    )
    assert "set How long to 0" in field_error(response.text, "offset")
    response = dash.edit(
        "/workflows/new",
        editor_form("Later", "meeting.before", [webhook_step()], offset="soon"),
    )
    assert "Enter a whole number" in field_error(response.text, "offset")
    response = dash.edit(
        "/workflows/new",
        editor_form("Later", "meeting.before", [webhook_step()], offset="91", offset_unit="days"),
    )
    assert "At most 90 days" in field_error(response.text, "offset")
    response = dash.post(
        "/workflows/new",
        editor_form("Later", "meeting.before", [webhook_step()], offset="60"),
    )
    assert response.status_code == 303
    created = workflows.list_all(system.hub, account.id)
    assert [(w.trigger, w.offset_minutes, w.enabled) for w in created] == [
        ("meeting.before", 60, False)
    ]
    listing = dash.get("/workflows").text
    assert "Before Meeting · 1 hour before the meeting starts" in listing


def test_steps_are_added_moved_and_removed_without_saving(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    form = editor_form("Chain", "booking.created", [webhook_step("https://a.example/1")])
    for n in range(2, 6):
        form["op"], form["add_action"] = "add", "webhook.call"
        page = dash.edit("/workflows/new", form)
        assert page.status_code == 200
        controls = Form(page.text).controls
        assert f"steps.{n - 1}.action" in controls
        form = Form(page.text).values()
        form[f"steps.{n - 1}.settings.url"] = f"https://a.example/{n}"
    # Five actions is the most; delays and filters (not actions) can still be added.
    assert 'name="op" value="add" disabled>Add action<' in page.text
    assert 'value="add:logic.delay">Add delay<' in page.text
    form["op"], form["add_action"] = "add", "webhook.call"
    refused = dash.edit("/workflows/new", form)
    assert refused.status_code == 200 and "at most 5 actions" in refused.text
    form["op"] = "up:4"
    page = dash.edit("/workflows/new", form)
    controls = Form(page.text).controls
    assert controls["steps.3.settings.url"]["value"] == "https://a.example/5"
    form = Form(page.text).values()
    form["op"] = "remove:0"
    page = dash.edit("/workflows/new", form)
    controls = Form(page.text).controls
    urls = [controls[f"steps.{i}.settings.url"]["value"] for i in range(4)]
    assert urls == [f"https://a.example/{n}" for n in (2, 3, 5, 4)]
    assert "steps.4.action" not in controls
    assert workflows.list_all(system.hub, account.id) == []
    form = Form(page.text).values()
    form["name"] = "Chain"
    response = dash.post("/workflows/new", form)
    assert response.status_code == 303, re.findall(r'field-error" id="[^"]*">[^<]*', response.text)
    (saved,) = workflows.list_all(system.hub, account.id)
    assert [s.settings["url"] for s in saved.steps] == urls


def created_ids(system: System, account: NewAccount) -> list[str]:
    return [w.id for w in workflows.list_all(system.hub, account.id)]


def test_a_new_workflows_draft_is_saved_once(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    blank = Form(dash.get("/workflows/new?action=webhook.call").text).values()
    token = blank["draft"]
    assert len(token) >= 16
    blank.update({"name": "Once", "steps.0.settings.url": "https://example.com/once"})

    # Without JS, adding a step posts the draft: the answer keeps the token.
    added = dash.edit("/workflows/new", {**blank, "op": "add", "add_action": "webhook.call"})
    assert added.status_code == 200
    draft = Form(added.text).values()
    assert draft["draft"] == token
    draft["steps.1.settings.url"] = "https://example.com/twice"
    saved = dash.post("/workflows/new", {**draft, "op": "save"})
    assert saved.status_code == 303
    location = saved.headers["location"]
    assert created_ids(system, account) == [location.rsplit("/", 1)[1]]

    # That draft posted again, by any button (Back and resubmit, a reload, a double click),
    # opens the workflow it created, saying so; nothing new is stored.
    for op in ("save", "test", "add", "remove:0"):
        again = dash.post("/workflows/new", {**draft, "op": op, "add_action": "webhook.call"})
        assert (again.status_code, again.headers["location"]) == (303, location), op
        assert "already saved" in dash.get(location).text
    assert len(created_ids(system, account)) == 1

    # Another new workflow gets another token; once its workflow is deleted, its draft may be
    # saved again.
    other = Form(dash.get("/workflows/new?action=webhook.call").text).values()
    assert other["draft"] != token
    dash.post(f"{location}/delete")
    resaved = dash.post("/workflows/new", {**draft, "op": "save"})
    assert resaved.status_code == 303 and resaved.headers["location"] != location
    assert len(created_ids(system, account)) == 1


def test_every_editor_post_answers_with_a_redirect_to_a_page_showing_it(
    two_accounts: tuple[System, NewAccount, NewAccount], open_dash: Any
) -> None:
    system, a, b = two_accounts
    wf_id = system.workflow(a, [webhook_step()], name="Stored")
    dash = open_dash(system)
    dash.sign_in(a.api_key)
    location = f"/workflows/{wf_id}"
    form = Form(dash.get(location).text).values()
    form.update({"name": "Tested, not saved", "op": "test"})
    answer = dash.post(location, form)
    assert answer.status_code == 303
    shown_at = answer.headers["location"]
    assert re.fullmatch(rf"{location}\?draft=[\w-]{{16,}}#test-panel", shown_at)
    for _ in range(2):  # a reload of the draft's page is a GET showing the same
        page = dash.get(shown_at.partition("#")[0])
        assert page.status_code == 200 and 'id="test-panel"' in page.text
        assert Form(page.text).values()["name"] == "Tested, not saved"
    assert workflows.get(system.hub, a.id, wf_id).name == "Stored"

    # A refused Save is a draft page too, its errors in the summary and by the field.
    form.update({"name": "x" * 201, "op": "save"})
    refused = dash.edit(location, form)
    assert "The workflow was not saved" in refused.text
    assert field_error(refused.text, "name") == "Use at most 200 characters"
    form["name"] = "Many types"
    form["event_types"] = ", ".join(f"type-{i}" for i in range(60))
    assert "Enter at most 50 items" in dash.edit(location, form).text

    # An action the editor has not is refused, and nothing is saved.
    for op in ("frobnicate", "save:later", ""):
        unknown = dash.post(location, {**form, "op": op})
        assert unknown.status_code == 400 and "Unknown action" in unknown.text, op
    assert workflows.get(system.hub, a.id, wf_id).name == "Stored"

    # A draft is its account's only.
    draft = re.search(r"draft=([\w-]+)", shown_at)
    assert draft
    other = open_dash(system)
    other.sign_in(b.api_key)
    assert other.get(f"/workflows/new?draft={draft.group(1)}").status_code == 404
    assert other.get(f"{location}?draft={draft.group(1)}").status_code == 404


def test_a_save_over_changes_made_elsewhere_asks_first(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    wf_id = system.workflow(account, [webhook_step()], name="Original")
    [secret] = signing_secrets(system, wf_id)
    location = f"/workflows/{wf_id}"
    mine = Form(dash.get(location).text).values()
    # Another tab renames it: this tab's Save asks, and stores nothing.
    theirs = Form(dash.get(location).text).values()
    assert dash.post(location, {**theirs, "name": "Theirs"}).status_code == 303
    asked = dash.edit(location, {**mine, "name": "Mine"})
    assert "changed in another tab or by someone else" in asked.text
    assert f'href="{location}">Reload it' in asked.text
    assert workflows.get(system.hub, account.id, wf_id).name == "Theirs"
    # Saved anyway: these edits win; the step still there keeps its secret.
    anyway = {**Form(asked.text).values(), "op": "save:anyway"}
    assert dash.post(location, anyway).status_code == 303
    assert workflows.get(system.hub, account.id, wf_id).name == "Mine"
    assert signing_secrets(system, wf_id) == [secret]

    # Another tab replaced the step: this tab's step is saved (as a new one, with a secret of
    # its own shown once) only when saved anyway, never silently.
    mine = Form(dash.get(location).text).values()
    replaced = Form(dash.get(location).text).values()
    replaced.update({"op": "remove:0"})
    replaced = Form(dash.edit(location, replaced).text).values()
    replaced.update({"op": "add", "add_action": "webhook.call"})
    replaced = Form(dash.edit(location, replaced).text).values()
    replaced.update({"op": "save", "steps.0.settings.url": "https://example.com/theirs"})
    assert dash.post(location, replaced).status_code == 303
    [theirs_secret] = signing_secrets(system, wf_id)
    asked = dash.edit(location, mine)
    assert "changed in another tab" in asked.text
    assert signing_secrets(system, wf_id) == [theirs_secret]
    saved = dash.post(location, {**Form(asked.text).values(), "op": "save:anyway"})
    [new_secret] = signing_secrets(system, wf_id)
    assert new_secret not in (secret, theirs_secret)
    shown = re.findall(
        r'class="generated-secret">(whsec_[^<]+)<', dash.get(saved.headers["location"]).text
    )
    assert shown == [new_secret]


def test_a_save_after_the_workflow_was_deleted_keeps_the_draft(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    wf_id = system.workflow(account, [webhook_step()], name="Doomed")
    location = f"/workflows/{wf_id}"

    def stored_drafts() -> int | None:
        with Session(system.hub.db) as session:
            return session.scalar(select(func.count()).select_from(Draft))

    before = stored_drafts()
    form = Form(dash.get(location).text).values()
    assert stored_drafts() == before  # opening the editor stores no draft
    dash.post(f"{location}/delete")
    answer = dash.post(location, {**form, "name": "Rescued"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/workflows/new?")
    page = dash.get(answer.headers["location"]).text
    assert "This workflow was deleted. Save to create it again." in page
    assert Form(page).values()["name"] == "Rescued"
    assert dash.post("/workflows/new", {**Form(page).values(), "op": "save"}).status_code == 303
    assert [w.name for w in workflows.list_all(system.hub, account.id)] == ["Rescued"]


def test_a_new_email_step_starts_sent_to_the_invitee(signed_in: SignedIn) -> None:
    system, _, dash = signed_in
    if "email.send" not in system.hub.registry.actions:
        pytest.skip("the email plugin is not installed")
    page = Form(dash.get("/workflows/new?action=email.send").text)
    assert "checked" in page.controls["steps.0.settings.to_invitee"]


def test_offsets_are_entered_and_shown_in_minutes_hours_or_days(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    cases = [("2", "days", 2880, "2 days"), ("90", "minutes", 90, "90 minutes")]
    cases += [("120", "minutes", 120, "2 hours"), ("1", "hours", 60, "1 hour")]
    for number, unit, minutes, shown in cases:
        form = editor_form(
            f"After {shown}", "meeting.after", [webhook_step()], offset=number, offset_unit=unit
        )
        response = dash.post("/workflows/new", form)
        assert response.status_code == 303, response.text
        wf = workflows.get(system.hub, account.id, response.headers["location"].rsplit("/", 1)[1])
        assert wf.offset_minutes == minutes
        controls = Form(dash.get(f"/workflows/{wf.id}").text).controls
        shown_number, shown_unit = shown.split()
        assert controls["offset"]["value"] == shown_number
        assert controls["offset_unit"]["value"] == shown_unit.removesuffix("s") + "s"
        assert f"After Meeting · {shown} after the meeting ends" in dash.get("/workflows").text

    form = editor_form("Odd", "meeting.after", [webhook_step()], offset="2", offset_unit="weeks")
    response = dash.edit("/workflows/new", form)
    assert response.status_code == 200
    assert field_error(response.text, "offset") == "Choose minutes, hours or days"


def test_test_answers_with_the_draft_as_typed_and_stores_nothing(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    wf_id = system.workflow(account, [webhook_step()], name="Stored", enabled=False)
    location = f"/workflows/{wf_id}"
    form = Form(dash.get(location).text).values()
    form.update(
        {
            "name": "Edited",
            "enabled": "on",
            "trigger": "meeting.before",
            "offset": "3",
            "offset_unit": "hours",
            "steps.0.settings.url": "https://example.com/edited",
            "op": "test",
        }
    )
    tested = dash.edit(location, form)
    assert tested.status_code == 200
    assert 'id="test-panel"' in tested.text
    page = Form(tested.text)
    shown = page.values()
    for key in ("name", "trigger", "offset", "offset_unit", "steps.0.settings.url"):
        assert shown[key] == form[key], key
    assert "checked" in page.controls["enabled"]
    assert 'data-unsaved="true"' in tested.text  # editor.js warns before leaving it
    stored = workflows.get(system.hub, account.id, wf_id)
    assert (stored.name, stored.enabled, stored.steps[0].settings["url"]) == (
        "Stored",
        False,
        "https://example.com/hook",
    )

    # A draft that cannot run is not tested: its problems are named at their fields.
    form.update({"steps.0.settings.url": "ftp://example.com/x", "offset": "many"})
    refused = dash.edit(location, form)
    assert refused.status_code == 200
    assert 'id="test-panel"' not in refused.text
    assert "The draft cannot be tested yet" in refused.text
    assert "http or https" in field_error(refused.text, "steps-0-settings-url")
    assert field_error(refused.text, "offset") == "Enter a whole number"
    assert Form(refused.text).values()["name"] == "Edited"


def test_the_editor_says_up_front_what_the_plan_and_integrations_allow(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system()
    account = system.account("free")
    installed = system.hub.registry.actions
    slack = {"action": "slack.post", "settings": {"channel": "#sales", "text": "New booking"}}
    ids = [system.workflow(account, [slack], name=f"Flow {i}", enabled=i < 3) for i in range(4)]
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    # Actions the plan allows first (the default choice among them); the rest last, marked.
    page = dash.get("/workflows/new").text
    options = re.findall(
        r'<option value="([\w.]+)"[^>]*>([^<]*)</option>',
        page.split('id="add_action"')[1].split("</select>")[0],
    )
    allowed = [name for name, _ in options if "— on" not in _]
    marked = dict(o for o in options if "— on" in o[1])
    assert [name for name, _ in options] == allowed + list(marked)
    assert Form(page).values()["add_action"] == allowed[0]
    if "sms.send" in installed:
        assert marked["sms.send"] == "Send SMS — on Pro and Business"
        # Saved anyway, the plan refuses it in the same words, naming no capability.
        sms = {"action": "sms.send", "settings": {"text": "Hi"}}
        refused = dash.edit("/workflows/new", editor_form("Texts", "booking.created", [sms]))
        assert refused.status_code == 200
        assert re.search(
            r'id="steps-0-action-error">Your plan does not include Send SMS: it is on Pro and '
            r"Business<",
            refused.text,
        )
    # Delays and filters are added by their own buttons, not from this list.
    assert set(marked) == {
        n
        for n, a in installed.items()
        if not a.logic and n not in {"email.send", "slack.post", "webhook.call"}
    }

    # A step whose integration is not connected says so, with the way to connect it.
    editor = dash.get(f"/workflows/{ids[3]}").text.split("<template")[0]  # not editor.js's
    assert "Slack is not connected" in editor
    assert '<a href="/settings/integrations#slack">Connect Slack</a>' in editor
    # At the plan's limit the Enabled switch of a disabled workflow is locked, saying why.
    assert re.search(r'id="enabled"[^>]*disabled', editor)
    assert "Your free plan allows 3 active workflows and 3 are active" in editor
    enabled = dash.get(f"/workflows/{ids[0]}").text
    assert not re.search(r'id="enabled"[^>]*disabled', enabled)
    # Past the limit (a plan downgraded under four enabled workflows) an enabled workflow's
    # switch stays on and free: saving it says why, and it is not switched off unasked.
    with system.hub.db.begin() as conn:
        conn.execute(update(Workflow).where(Workflow.id == ids[3]).values(enabled=True))
    over = Form(dash.get(f"/workflows/{ids[3]}").text)
    assert "checked" in over.controls["enabled"] and "disabled" not in over.controls["enabled"]
    refused = dash.edit(f"/workflows/{ids[3]}", {**over.values(), "op": "save"})
    assert refused.status_code == 200
    assert "allows 3 active workflows" in field_error(refused.text, "enabled")
    assert workflows.get(system.hub, account.id, ids[3]).enabled is True

    # A Slack step posting to an incoming webhook needs no connection either.
    hook = {
        "action": "slack.post",
        "settings": {"webhook_url": "https://hooks.slack.com/services/T0/B0/x", "text": "New"},
    }
    quiet = dash.get(f"/workflows/{system.workflow(account, [hook], enabled=False)}").text
    assert "is not connected" not in quiet.split("<template")[0]

    # An email step needs no connection (its integration only names the sender).
    if "email.send" in installed:
        email = {
            "action": "email.send",
            "settings": {"to_invitee": True, "subject": "Hi", "text": "See you"},
        }
        quiet = dash.get(f"/workflows/{system.workflow(account, [email], enabled=False)}").text
        quiet = quiet.split("<template")[0]
        assert "is not connected" not in quiet


def test_each_step_is_summed_up_in_one_line(make_system: Callable[..., System]) -> None:
    system = make_system(registry=fax_registry())
    actions = system.hub.registry.actions

    def line(action: str, **values: Any) -> str:
        specs = forms.fields_of(actions[action].settings)
        return step_summary(action, specs, {**forms.defaults(specs), **values})

    assert line("webhook.call", url="https://crm.example.com/in") == (
        "Webhook to https://crm.example.com/in"
    )
    assert line("fax.send", number="+4930123", cover="Hi {{ invitee.name }}\nmore") == (
        "Fax to +4930123 · “Hi {{ invitee.name }}”"
    )
    if "email.send" in actions:
        assert line(
            "email.send", to_invitee=True, to_hosts=True, subject="Reminder: {{ event_name }}"
        ) == ("Email to the invitee and the hosts · “Reminder: {{ event_name }}”")
    if "sms.send" in actions:
        assert line("sms.send", text="Hi") == "SMS to the invitee · “Hi”"
        assert line("sms.send", to="number", number="+14155550100", text="Hi") == (
            "SMS to +14155550100 · “Hi”"
        )
    if "slack.post" in actions:
        assert line("slack.post", channel="#sales", text="New") == "Slack to #sales · “New”"


def signing_secrets(system: System, wf_id: str) -> list[str]:
    """The stored signing secret of each step of a workflow of webhook steps, decrypted."""
    model = system.hub.registry.actions["webhook.call"].settings
    with system.hub.db.connect() as conn:
        rows = conn.scalars(
            select(WorkflowStep.settings)
            .where(WorkflowStep.workflow_id == wf_id)
            .order_by(WorkflowStep.position)
        )
        return [system.hub.sealer.secrets(model, stored)["secret"] for stored in rows]


def test_a_generated_secret_is_shown_once_and_kept_when_left_blank(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    response = dash.post("/workflows/new", editor_form("Hook", "booking.created", [webhook_step()]))
    location = response.headers["location"]
    wf_id = location.rsplit("/", 1)[1]
    page = dash.get(location).text
    shown = re.findall(r'class="generated-secret">(whsec_[^<]+)<', page)
    [stored] = signing_secrets(system, wf_id)
    assert shown == [stored]
    again = dash.get(location).text
    assert stored not in again and "generated-secret" not in again

    # Edited with the secret left blank: the URL changes, the secret stays.
    form = Form(again).values()
    form["steps.0.settings.url"] = "https://example.com/new"
    response = dash.post(location, form)
    assert response.status_code == 303, re.findall(r'field-error" id="[^"]*">[^<]*', response.text)
    assert signing_secrets(system, wf_id) == [stored]
    assert workflows.get(system.hub, account.id, wf_id).steps[0].settings["url"].endswith("/new")

    # A new webhook step added while editing gets its own secret, shown once.
    form = Form(dash.get(location).text).values()
    form.update({"op": "add", "add_action": "webhook.call"})
    form = Form(dash.edit(location, form).text).values()
    form.update({"op": "save", "steps.1.settings.url": "https://example.com/second"})
    assert dash.post(location, form).status_code == 303
    first, second = signing_secrets(system, wf_id)
    assert first == stored
    page = dash.get(location).text
    assert re.findall(r'class="generated-secret">(whsec_[^<]+)<', page) == [second]


def test_header_values_are_masked_in_the_editor_and_kept_when_saved_as_shown(
    signed_in: SignedIn,
) -> None:
    system, account, dash = signed_in
    wf_id = system.workflow(
        account,
        [
            {
                **webhook_step(),
                "settings": {
                    "url": "https://example.com/hook",
                    "headers": {"Authorization": "Bearer s3cr3t-v4lue"},
                },
            }
        ],
    )
    location = f"/workflows/{wf_id}"
    page = dash.get(location).text
    assert "s3cr3t-v4lue" not in page
    form = Form(page).values()
    assert form["steps.0.settings.headers"] == "Authorization: ********"

    # Saved as shown, with one header added: the masked one keeps its value (the core's rule).
    form["steps.0.settings.headers"] += "\nX-Tenant: acme"
    response = dash.post(location, form)
    assert response.status_code == 303, re.findall(r'field-error" id="[^"]*">[^<]*', response.text)
    model = system.hub.registry.actions["webhook.call"].settings
    with system.hub.db.connect() as conn:
        [stored] = conn.scalars(
            select(WorkflowStep.settings).where(WorkflowStep.workflow_id == wf_id)
        )
    assert system.hub.sealer.secrets(model, stored)["headers"] == {
        "Authorization": "Bearer s3cr3t-v4lue",
        "X-Tenant": "acme",
    }
    assert "s3cr3t-v4lue" not in dash.get(location).text

    # Emptied, the headers are gone.
    form = Form(dash.get(location).text).values()
    form["steps.0.settings.headers"] = ""
    assert dash.post(location, form).status_code == 303
    assert workflows.get(system.hub, account.id, wf_id).steps[0].settings["headers"] == {}


def test_workflows_list_toggle_and_plan_limit(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system()
    account = system.account("free")
    ids = [
        system.workflow(account, [webhook_step()], name=f"Flow {i}", enabled=i < 3)
        for i in range(4)
    ]
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    page = dash.get("/workflows").text
    assert "3 of 3 active workflows · free plan" in page
    for i in range(4):
        assert f"Flow {i}" in page
    assert page.count('role="switch"') == 4
    assert page.count('class="switch on"') == 3
    assert "Booking Created" in page and "Call Webhook" in page

    response = dash.post(f"/workflows/{ids[3]}/toggle", {"enabled": "true", "back": "/workflows"})
    assert response.status_code == 303
    page = dash.get("/workflows").text
    assert "Could not enable" in page and "3" in page
    assert workflows.get(system.hub, account.id, ids[3]).enabled is False

    dash.post(f"/workflows/{ids[0]}/toggle", {"enabled": "false"})
    dash.post(f"/workflows/{ids[3]}/toggle", {"enabled": "true"})
    assert [workflows.get(system.hub, account.id, i).enabled for i in ids] == [
        False,
        True,
        True,
        True,
    ]
    page = dash.get("/workflows").text
    assert "is enabled" in page

    response = dash.post(f"/workflows/{ids[0]}/delete")
    assert response.status_code == 303
    assert len(workflows.list_all(system.hub, account.id)) == 3


def test_a_workflow_paused_by_a_plan_change_says_why_until_enabled(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system()
    account = system.account("business")
    ids = [system.workflow(account, [webhook_step()], name=f"Flow {i}") for i in range(4)]
    set_plan(system.hub, account.id, "free")
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    reason = "Paused when the plan changed from business to free, which allows 3 active workflows"

    def row(page: str, workflow_id: str) -> str:
        found = re.search(
            rf'<li class="card workflow" id="workflow-{workflow_id}">.*?</li>', page, re.S
        )
        assert found, f"no row for {workflow_id}"
        return found.group(0)

    page = dash.get("/workflows").text
    paused = row(page, ids[3])
    assert f'<p class="help paused-reason" id="paused-{ids[3]}">{reason}</p>' in paused
    # the switch (held at the limit) is described by why it is off and why it cannot go on
    assert f'aria-describedby="paused-{ids[3]} blocked-{ids[3]}"' in paused
    assert all("paused-reason" not in row(page, i) for i in ids[:3])
    editor = dash.get(f"/workflows/{ids[3]}").text
    assert f'<p class="help paused-reason" id="enabled-paused">{reason}</p>' in editor
    assert 'aria-describedby="enabled-help enabled-paused"' in editor

    dash.post(f"/workflows/{ids[0]}/toggle", {"enabled": "false"})
    dash.post(f"/workflows/{ids[3]}/toggle", {"enabled": "true"})
    page = dash.get("/workflows").text
    assert 'class="switch on"' in row(page, ids[3])
    assert reason not in page and reason not in dash.get(f"/workflows/{ids[3]}").text


def test_create_from_a_template(make_system: Callable[..., System], open_dash: Any) -> None:
    system = make_system()
    account = system.account("business")
    offered = workflows.list_templates(system.hub, account.id)
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    page = dash.get("/workflows").text
    if not offered:
        assert "No templates are installed" in page
        return
    for t in offered:
        assert t.title in page
    template = offered[0]
    response = dash.post("/workflows/from-template", {"template": template.name})
    assert response.status_code == 303
    wf_id = response.headers["location"].rsplit("/", 1)[1]
    wf = workflows.get(system.hub, account.id, wf_id)
    assert (wf.name, wf.trigger, wf.enabled) == (template.title, template.trigger, False)
    assert [s.action for s in wf.steps] == template.actions
    assert "from a template" in dash.get(f"/workflows/{wf_id}").text
    assert dash.post("/workflows/from-template", {"template": "nope"}).status_code == 404


# -- test, run log, events -------------------------------------------------------------------------


def test_dry_run_run_log_and_event_pages(
    make_system: Callable[..., System], open_dash: Any, http_receiver: Any, allow_loopback: None
) -> None:
    system = make_system()
    system.start()
    account = system.account()
    hook = system.workflow(account, [webhook_step(f"{http_receiver.url}/in")], name="To CRM")
    system.workflow(account, [webhook_step()], name="On cancel", trigger="booking.cancelled")
    off = system.workflow(account, [webhook_step()], name="Switched off", enabled=False)
    dash = open_dash(system)
    dash.sign_in(account.api_key)

    page = dash.get(f"/workflows/{hook}/test").text
    assert "Step 1 · Call Webhook" in page
    assert f"{http_receiver.url}/in" in page
    assert http_receiver.requests == []  # a dry run sends nothing

    answer = system.hub.emit(sample_event(id="evt_dash"), account_id=account.id).answer
    (run_id,) = [r["id"] for r in answer["runs"]]
    system.wait_run(account, run_id)
    assert dash.get(f"/workflows/{hook}/runs").text.count(run_id) >= 1
    assert run_id in dash.get("/runs").text
    assert run_id in dash.get("/runs?status=succeeded").text
    assert run_id not in dash.get("/runs?status=failed").text

    page = dash.get(f"/runs/{run_id}").text
    assert "Step 1 · Call Webhook" in page
    assert 'HTTP <span class="http-status">200</span>' in page
    assert "Succeeded" in page and " ms</span>" in page
    assert 'href="/events/evt_dash"' in page

    page = dash.get("/events/evt_dash").text
    ran = page.split('id="ran"')[1].split("</ul>")[0]
    not_run = page.split('id="not-run"')[1].split("</ul>")[0]
    other_kind = page.split('id="other-kind"')[1].split("</ul>")[0]
    assert "To CRM" in ran and run_id in ran and "succeeded" in ran  # now, not as received
    assert "Switched off" in not_run and "On cancel" not in not_run
    # Waiting for a cancellation is no fault; something ran, so no fix is offered for it.
    assert "On cancel" in other_kind and "Change its trigger" not in other_kind
    assert off not in ran


def test_integrations_are_generated_and_write_only(
    make_system: Callable[..., System], open_dash: Any
) -> None:
    system = make_system(registry=fax_registry())
    account = system.account()
    dash = open_dash(system)
    dash.sign_in(account.api_key)
    page = dash.get("/settings/integrations").text
    form = Form(page)
    assert form.kind("api_key") == "password"
    assert form.kind("sender") == "text"
    assert form.kind("region") == "select"
    assert "Not connected" in page.split('id="faxco"')[1]

    response = dash.post("/settings/integrations/faxco", {"sender": "Acme"})
    assert response.status_code == 422
    assert "required" in field_error(response.text, "int-faxco-api-key").lower()

    secret = "fax-secret-123"
    response = dash.post(
        "/settings/integrations/faxco", {"api_key": secret, "sender": "Acme", "region": "us"}
    )
    assert response.status_code == 303
    page = dash.get("/settings/integrations").text
    card = page.split('id="faxco"')[1].split("</section>")[0]
    assert "Connected" in card and secret not in page
    assert Form(card).controls["api_key"]["placeholder"] == "unchanged"
    assert Form(card).controls["sender"]["value"] == "Acme"

    # Saved again with the secret left blank: it is kept.
    assert dash.post("/settings/integrations/faxco", {"sender": "Acme 2"}).status_code == 303
    with system.hub.db.connect() as conn:
        stored = conn.scalar(select(Integration.settings).where(Integration.name == "faxco"))
    assert system.hub.sealer.secrets(FaxCredentials, stored) == {"api_key": secret}

    response = dash.post("/settings/integrations/faxco/disconnect")
    assert response.status_code == 303
    assert "Not connected" in dash.get("/settings/integrations").text.split('id="faxco"')[1]
    assert dash.post("/settings/integrations/nope", {}).status_code == 404


# -- accounts see only their own -------------------------------------------------------------------


@pytest.fixture
def two_accounts(make_system: Callable[..., System]) -> tuple[System, NewAccount, NewAccount]:
    system = make_system()
    return system, system.account(), system.account()


def test_another_accounts_objects_answer_404(
    two_accounts: tuple[System, NewAccount, NewAccount], open_dash: Any
) -> None:
    system, a, b = two_accounts
    wf = system.workflow(a, [webhook_step()], name="A's secret flow", enabled=True)
    disabled = system.workflow(a, [webhook_step()], name="A's other flow", enabled=False)
    (run,) = system.hub.emit(sample_event(id="evt_a"), account_id=a.id).answer["runs"]
    dash = open_dash(system)
    dash.sign_in(b.api_key)

    for path in [
        f"/workflows/{wf}",
        f"/workflows/{wf}/test",
        f"/workflows/{wf}/runs",
        f"/runs/{run['id']}",
        "/events/evt_a",
    ]:
        response = dash.get(path)
        assert response.status_code == 404, path
        assert "A&#39;s secret flow" not in response.text and "A's secret flow" not in response.text
    for path, data in [
        (f"/workflows/{disabled}/toggle", {"enabled": "true"}),
        (f"/workflows/{wf}/toggle", {"enabled": "false"}),
        (f"/workflows/{wf}/delete", {}),
        (f"/workflows/{wf}", editor_form("Mine now", "booking.created", [webhook_step()])),
        (f"/runs/{run['id']}/replay", {}),
    ]:
        assert dash.post(path, data).status_code == 404, path
    assert workflows.get(system.hub, a.id, wf).enabled is True
    assert workflows.get(system.hub, a.id, disabled).enabled is False
    assert workflows.get(system.hub, a.id, wf).name == "A's secret flow"

    listing = dash.get("/workflows").text
    assert "secret flow" not in listing and "0 of unlimited" in listing
    assert run["id"] not in dash.get("/runs").text

    # A sees them.
    mine = open_dash(system)
    mine.sign_in(a.api_key)
    assert mine.get(f"/workflows/{wf}").status_code == 200
    assert mine.get(f"/runs/{run['id']}").status_code == 200
    assert mine.get("/events/evt_a").status_code == 200
