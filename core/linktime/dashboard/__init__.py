"""The web dashboard: server-rendered pages (Litestar + Jinja2, plain HTML forms, a little
vanilla JS) over the same service functions as the JSON API.

Mounted by :func:`linktime.api.create_app` through :class:`DashboardPlugin`: the pages live under
``/`` (``/login``, ``/workflows``, ``/runs/{id}``, ``/events/{id}``, ``/settings/integrations``)
in one router with its own session middleware, CSRF guard and HTML error pages, so the bearer-key
API under ``/v1`` is untouched by either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request, Response, Router, get, post
from litestar.config.app import AppConfig
from litestar.datastructures import FormMultiDict, ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from pydantic import BaseModel, ValidationError

from .. import integrations, plans, runs, testruns, workflows
from ..actions import TriggerType
from ..api.schemas import RunOut
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound, pydantic_fields
from ..models import sample_event
from ..offload import offload
from ..statuses import RunStatus
from ..storage import new_id
from ..workflows import MAX_STEPS, GeneratedSecret, WorkflowIn, WorkflowOut
from . import forms, services
from .forms import FieldSpec, Raw
from .session import (
    CSRF_FIELD,
    SignInRequired,
    check_csrf,
    csrf_token,
    key_id_for,
    session_config,
    signed_in,
)

HERE = Path(__file__).parent
AnyRequest = Request[Any, Any, Any]
log = logging.getLogger(__name__)


class DashboardPlugin(InitPlugin):
    """Adds the dashboard's router and its template engine to a Litestar app."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(router(self.hub))
        app_config.template_config = template_config()
        return app_config


# -- presentation helpers ------------------------------------------------------------------------


def _dt(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return str(value)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _field_id(name: str) -> str:
    return name.replace(".", "-").replace("_", "-")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = _dt
    env.filters["pretty"] = _pretty
    env.filters["field_id"] = _field_id
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


@dataclass(frozen=True)
class Me:
    account_id: str
    name: str
    plan: str


def _flash(request: AnyRequest, text: str, kind: str = "ok", **extra: Any) -> None:
    request.session.setdefault("flash", []).append({"kind": kind, "text": text, **extra})


def page(
    request: AnyRequest,
    name: str,
    *,
    me: Me | None = None,
    status: int = 200,
    **context: Any,
) -> Template:
    session = request.session
    flashes = session.pop("flash", [])
    return Template(
        template_name=name,
        context={
            "csrf_field": CSRF_FIELD,
            "csrf": csrf_token(session),
            "flashes": flashes,
            "me": me,
            "path": request.url.path,
            **context,
        },
        status_code=status,
    )


def _see_other(url: str) -> Redirect:
    return Redirect(url, status_code=303)


def _safe_next(value: Any, default: str = "/workflows") -> str:
    """Only this site's own paths (no //host, no scheme)."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and not any(c in value for c in "\\\r\n")
    ):
        return value
    return default


def _trigger_text(hub: Hub, trigger: str, offset: int) -> str:
    t = hub.registry.triggers.get(trigger)
    if t is None:
        return f"{trigger} (not installed)"
    if t.kind != "time":
        return t.title
    where = "before the meeting starts" if t.direction < 0 else "after the meeting ends"
    return f"{t.title} · {offset} min {where}"


def _action_title(hub: Hub, name: str) -> str:
    action = hub.registry.actions.get(name)
    return action.title if action else f"{name} (not installed)"


def _place_errors(
    errors: list[FieldError], known: set[str]
) -> tuple[dict[str, list[str]], list[FieldError]]:
    """Each error under the most specific known field its path falls in; the rest general."""
    placed: dict[str, list[str]] = {}
    general: list[FieldError] = []
    for error in errors:
        # pydantic's "Value error, " says nothing to a person reading the form
        error = FieldError(error.field, error.message.removeprefix("Value error, "))
        parts = error.field.split(".")
        for cut in range(len(parts), 0, -1):
            key = ".".join(parts[:cut])
            if key in known:
                placed.setdefault(key, []).append(error.message)
                break
        else:
            general.append(error)
    return placed, general


# -- dependencies and error pages ----------------------------------------------------------------


async def _provide_me(request: AnyRequest, hub: NamedDependency[Hub]) -> Me:
    key_id = request.session.get("key_id")
    if not isinstance(key_id, str):
        raise SignInRequired
    found = await offload(signed_in, hub, key_id)
    if found is None:  # the key was revoked: this session is over
        request.session.pop("key_id", None)
        raise SignInRequired
    return Me(*found)


def _on_sign_in_required(request: AnyRequest, _: SignInRequired) -> Response[Any]:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = "/workflows"
    return Redirect(f"/login?next={quote(target, safe='/')}", status_code=303)


def _error_page(request: AnyRequest, status: int, title: str, detail: str) -> Response[Any]:
    if "session" not in request.scope:
        return Response(f"{title}: {detail}", status_code=status, media_type="text/plain")
    return page(request, "error.html", status=status, title=title, detail=detail)


def _on_not_found(request: AnyRequest, exc: NotFound) -> Response[Any]:
    return _error_page(request, 404, "Not found", str(exc))


def _on_http(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    titles = {403: "Forbidden", 404: "Not found", 405: "Method not allowed", 413: "Too large"}
    return _error_page(request, exc.status_code, titles.get(exc.status_code, "Error"), exc.detail)


def _on_input(request: AnyRequest, exc: InputError) -> Response[Any]:
    return _error_page(request, exc.status, "Not accepted", str(exc))


def _on_unexpected(request: AnyRequest, exc: Exception) -> Response[Any]:
    # A bug, not the user's doing: the traceback goes to the log, not to the page.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_page(request, 500, "Something went wrong", "It has been logged.")


# -- sign-in ---------------------------------------------------------------------------------------


@get("/")
async def home() -> Redirect:
    return Redirect("/workflows")


@get("/login")
async def login_page(request: AnyRequest, next: FromQuery[str | None] = None) -> Template:
    return page(request, "login.html", next=_safe_next(next), error=None)


@post("/login")
async def login(request: AnyRequest, hub: NamedDependency[Hub]) -> Template | Redirect:
    form = await request.form()
    key = str(form.get("api_key", "")).strip()
    found = await offload(key_id_for, hub, key) if key else None
    target = _safe_next(form.get("next"))
    if found is None:
        return page(
            request,
            "login.html",
            status=401,
            next=target,
            error="That API key is not valid (or was revoked).",
        )
    # A fresh session: new CSRF token, nothing carried over from before sign-in.
    request.set_session({"key_id": found[1]})
    return _see_other(target)


@post("/logout")
async def logout(request: AnyRequest) -> Redirect:
    request.clear_session()
    return _see_other("/login")


# -- workflows list --------------------------------------------------------------------------------


async def _usage(hub: Hub, me: Me) -> plans.PlanUsage:
    return await offload(workflows.plan_usage, hub, me.account_id)


@get("/workflows")
async def workflows_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    items = await offload(workflows.list_all, hub, me.account_id)
    usage = await _usage(hub, me)
    offered = await offload(workflows.list_templates, hub, me.account_id)
    rows = [
        {
            "id": w.id,
            "name": w.name,
            "enabled": w.enabled,
            "trigger": _trigger_text(hub, w.trigger, w.offset_minutes),
            "actions": [_action_title(hub, s.action) for s in w.steps],
        }
        for w in items
    ]
    templates = [
        {
            "name": t.name,
            "title": t.title,
            "description": t.description,
            "trigger": _trigger_text(hub, t.trigger, t.offset_minutes),
            "actions": [_action_title(hub, a) for a in t.actions],
        }
        for t in offered
    ]
    return page(
        request,
        "workflows.html",
        me=me,
        rows=rows,
        usage=usage,
        templates=templates,
        broken=hub.registry.broken,
    )


@post("/workflows/{workflow_id:str}/toggle")
async def toggle(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Redirect:
    form = await request.form()
    enabled = str(form.get("enabled")) == "true"
    try:
        wf = await offload(workflows.set_enabled, hub, me.account_id, workflow_id, enabled)
    except InputError as exc:
        _flash(request, f"Could not {'enable' if enabled else 'disable'}: {exc}", "error")
    else:
        _flash(request, f"“{wf.name}” is {'enabled' if wf.enabled else 'disabled'}.")
    return _see_other(_safe_next(form.get("back")))


@post("/workflows/{workflow_id:str}/delete")
async def delete_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Redirect:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    await offload(workflows.delete, hub, me.account_id, workflow_id)
    _flash(request, f"Deleted “{wf.name}”.")
    return _see_other("/workflows")


def _shown(generated: list[GeneratedSecret]) -> list[dict[str, str]]:
    """Generated secrets as the flash messages show them once (steps counted from 1)."""
    return [{"step": str(g.step + 1), "field": g.field, "value": g.value} for g in generated]


def _from_template(
    hub: Hub, account_id: str, name: str
) -> tuple[WorkflowOut, list[dict[str, str]]]:
    """Create a workflow from a template; also returns the secrets generated for it (shown
    once)."""
    created, generated = workflows.create_from_template(hub, account_id, name)
    return created, _shown(generated)


@post("/workflows/from-template")
async def create_from_template(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Redirect:
    form = await request.form()
    name = str(form.get("template", ""))
    try:
        created, secrets = await offload(_from_template, hub, me.account_id, name)
    except InputError as exc:
        _flash(request, f"The template could not be used: {exc}", "error")
        return _see_other("/workflows")
    _flash(request, f"Created “{created.name}” from a template: review it, test it, enable it.")
    for s in secrets:
        _flash(request, "Generated", "secret", **s)
    return _see_other(f"/workflows/{created.id}")


# -- the editor ------------------------------------------------------------------------------------


@dataclass
class StepState:
    action: str
    origin: str | None = None  # id of the stored step this one edits
    values: dict[str, Raw] = field(default_factory=dict)
    secrets_set: set[str] = field(default_factory=set)


@dataclass
class EditorState:
    name: str = ""
    trigger: str = "booking.created"
    offset: str = "0"
    enabled: bool = False
    event_types: str = ""
    continue_when_blocked: bool = False
    steps: list[StepState] = field(default_factory=list)


OPTION_SPECS = [
    forms.field_spec(name, WorkflowIn.model_fields[name])
    for name in ("event_types", "continue_when_blocked")
]


def _specs(hub: Hub, action: str) -> list[FieldSpec]:
    found = hub.registry.actions.get(action)
    return forms.fields_of(found.settings) if found else []


def _new_step(hub: Hub, action: str) -> StepState:
    return StepState(action=action, values=forms.defaults(_specs(hub, action)))


def _state_of(hub: Hub, wf: WorkflowOut) -> EditorState:
    steps = []
    for s in wf.steps:
        values, secrets_set = forms.from_stored(_specs(hub, s.action), s.settings)
        steps.append(StepState(s.action, s.id, values, secrets_set))
    return EditorState(
        name=wf.name,
        trigger=wf.trigger,
        offset=str(wf.offset_minutes),
        enabled=wf.enabled,
        event_types=", ".join(wf.event_types),
        continue_when_blocked=wf.continue_when_blocked,
        steps=steps,
    )


def _read_state(hub: Hub, form: FormMultiDict, stored: EditorState | None) -> EditorState:
    flat = {k: str(v) for k, v in form.items()}
    state = EditorState(
        name=flat.get("name", "").strip(),
        trigger=flat.get("trigger", ""),
        offset=flat.get("offset_minutes", "0").strip(),
        enabled=stored.enabled if stored else False,
        event_types=flat.get("event_types", ""),
        continue_when_blocked="continue_when_blocked" in flat,
    )
    origins = {s.origin: s for s in stored.steps} if stored else {}
    for i in range(MAX_STEPS * 2):
        action = flat.get(f"steps.{i}.action")
        if action is None:
            break
        origin = flat.get(f"steps.{i}.origin") or None
        before = origins.get(origin) if origin is not None else None
        if before is None or before.action != action:
            origin = None
        values = forms.read_raw(_specs(hub, action), flat, f"steps.{i}.settings.")
        secrets_set = before.secrets_set if before is not None and origin is not None else set()
        state.steps.append(StepState(action, origin, values, secrets_set))
    return state


@dataclass
class Saved:
    workflow: WorkflowOut
    secrets: list[dict[str, str]]


def _local_problems(
    model: type[BaseModel], parsed: forms.Parsed, prefix: str, kept: set[str]
) -> list[FieldError]:
    """The model's own verdict on what the form sent, so every problem is named at once (the
    service would name the same; fields the form could not read, and secrets the service
    keeps, are not named)."""
    try:
        model.model_validate(parsed.data)
    except ValidationError as exc:
        unreadable = {e.field for e in parsed.errors} | {f"{prefix}.{name}" for name in kept}
        return [
            e
            for e in pydantic_fields(exc, prefix)
            if not any(e.field == u or e.field.startswith(u + ".") for u in unreadable)
        ]
    return []


def _save(hub: Hub, account_id: str, workflow_id: str | None, state: EditorState) -> Saved:
    """Validate the editor's state and create or update the workflow (raises InputError naming
    every field at fault)."""
    problems: list[FieldError] = []
    trigger = hub.registry.triggers.get(state.trigger)
    offset = 0
    if trigger is not None and trigger.kind == "time":
        typed = forms.whole_number(state.offset or "0")
        if typed is None:
            problems.append(FieldError("offset_minutes", "enter a whole number of minutes"))
        else:
            offset = typed
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(state.steps):
        action = hub.registry.actions.get(step.action)
        specs = forms.fields_of(action.settings) if action else []
        # A secret left blank is left out: the core keeps the stored one or generates one.
        parsed = forms.parse(specs, step.values, f"steps.{i}.settings.")
        problems += parsed.errors
        if action is not None:
            kept = parsed.blank_secrets if step.origin is not None else set()
            problems += _local_problems(action.settings, parsed, f"steps.{i}.settings", kept)
        steps.append({"id": step.origin, "action": step.action, "settings": parsed.data})
    options = forms.parse(
        OPTION_SPECS,
        {"event_types": state.event_types, "continue_when_blocked": state.continue_when_blocked},
    )
    data = {
        "name": state.name,
        "trigger": state.trigger,
        "offset_minutes": offset,
        "enabled": state.enabled,
        **options.data,
        "steps": steps,
    }
    try:
        spec = WorkflowIn.model_validate(data)
    except ValidationError as exc:
        problems += pydantic_fields(exc)
        raise InputError("the workflow is not valid", problems) from None
    if problems:
        raise InputError("the workflow is not valid", problems)
    if workflow_id is None:
        saved, generated = workflows.create(hub, account_id, spec)
    else:
        # The editor knows which stored step each one edits: a step without one is new.
        saved, generated = workflows.update(hub, account_id, workflow_id, spec, by_position=False)
    return Saved(saved, _shown(generated))


def _editor_context(
    hub: Hub,
    state: EditorState,
    workflow: WorkflowOut | None,
    errors: list[FieldError],
    allowed: list[str],
) -> dict[str, Any]:
    steps = []
    known = {"name", "trigger", "offset_minutes", "steps", "enabled"}
    known |= {s.name for s in OPTION_SPECS}
    for i, step in enumerate(state.steps):
        action = hub.registry.actions.get(step.action)
        specs = _specs(hub, step.action)
        known |= {f"steps.{i}", f"steps.{i}.action", f"steps.{i}.settings"}
        known |= {f"steps.{i}.settings.{s.name}" for s in specs}
        steps.append(
            {
                "index": i,
                "action": step.action,
                "title": action.title if action else f"{step.action} (not installed)",
                "description": action.description if action else "",
                "origin": "" if step.origin is None else str(step.origin),
                "fields": specs,
                "values": step.values,
                "secrets_set": step.secrets_set,
                "prefix": f"steps.{i}.settings.",
            }
        )
    placed, general = _place_errors(errors, known)
    triggers: list[TriggerType] = list(hub.registry.triggers.values())
    return {
        "state": state,
        "workflow": workflow,
        "steps": steps,
        "errors": placed,
        "general_errors": general,
        "error_count": len(errors),
        "triggers": triggers,
        "time_triggers": " ".join(t.name for t in triggers if t.kind == "time"),
        "current_trigger": hub.registry.triggers.get(state.trigger),
        "actions": [
            {
                "name": a.name,
                "title": a.title,
                "allowed": a.name in allowed,
            }
            for a in hub.registry.actions.values()
        ],
        "max_steps": MAX_STEPS,
        "name_spec": FieldSpec("name", "Name", "text", required=True),
        "option_specs": OPTION_SPECS,
    }


async def _allowed(hub: Hub, me: Me) -> list[str]:
    return list((await _usage(hub, me)).allowed_actions)


@get("/workflows/new")
async def new_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    action: FromQuery[str | None] = None,
) -> Template:
    state = EditorState()
    if action and action in hub.registry.actions:
        state.steps.append(_new_step(hub, action))
    context = _editor_context(hub, state, None, [], await _allowed(hub, me))
    return page(request, "editor.html", me=me, **context)


@get("/workflows/{workflow_id:str}")
async def edit_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    context = _editor_context(hub, _state_of(hub, wf), wf, [], await _allowed(hub, me))
    return page(request, "editor.html", me=me, **context)


async def _editor_post(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    workflow_id: FromPath[str] | None,
) -> Template | Redirect:
    stored = None
    wf = None
    if workflow_id is not None:
        wf = await offload(workflows.get, hub, me.account_id, workflow_id)
        stored = _state_of(hub, wf)
    form = await request.form()
    state = _read_state(hub, form, stored)
    op = str(form.get("op", "save"))
    kind, _, arg = op.partition(":")
    errors: list[FieldError] = []
    if kind == "add":
        action = str(form.get("add_action", ""))
        if len(state.steps) >= MAX_STEPS:
            errors.append(FieldError("steps", f"a workflow has at most {MAX_STEPS} actions"))
        elif action in hub.registry.actions:
            state.steps.append(_new_step(hub, action))
        else:
            errors.append(FieldError("steps", "choose an action to add"))
    elif kind in ("remove", "up", "down"):
        index = forms.whole_number(arg)
        if index is None or index >= len(state.steps):
            errors.append(FieldError("steps", f"there is no step {arg[:20]!r} to {kind}"))
        elif kind == "remove":
            del state.steps[index]
        else:
            other = index - 1 if kind == "up" else index + 1
            if 0 <= other < len(state.steps):
                state.steps[index], state.steps[other] = state.steps[other], state.steps[index]
    else:
        try:
            saved = await offload(_save, hub, me.account_id, workflow_id, state)
        except InputError as exc:
            errors = exc.fields or [FieldError("workflow", exc.message)]
            context = _editor_context(hub, state, wf, errors, await _allowed(hub, me))
            return page(request, "editor.html", me=me, status=exc.status, **context)
        _flash(request, f"Saved “{saved.workflow.name}”.")
        for s in saved.secrets:
            _flash(request, "Generated", "secret", **s)
        return _see_other(f"/workflows/{saved.workflow.id}")
    context = _editor_context(hub, state, wf, errors, await _allowed(hub, me))
    return page(request, "editor.html", me=me, status=422 if errors else 200, **context)


@post("/workflows/new")
async def create_workflow(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template | Redirect:
    return await _editor_post(request, hub, me, None)


@post("/workflows/{workflow_id:str}")
async def update_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Template | Redirect:
    return await _editor_post(request, hub, me, workflow_id)


# -- test, runs, events ----------------------------------------------------------------------------


@get("/workflows/{workflow_id:str}/test")
async def test_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    event_type: FromQuery[str | None] = None,
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    event_types = [t.name for t in hub.registry.triggers.values() if t.kind == "event"]
    chosen = event_type if event_type in event_types else None
    event = sample_event(chosen) if chosen else None
    preview = await offload(testruns.dry_run, hub, me.account_id, workflow_id, event)
    return page(
        request,
        "test.html",
        me=me,
        workflow=wf,
        steps=preview.steps,
        event=preview.event,
        event_types=event_types,
        chosen=chosen,
        trigger=_trigger_text(hub, wf.trigger, wf.offset_minutes),
    )


@get("/workflows/{workflow_id:str}/runs")
async def workflow_runs(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    items = await offload(runs.list_runs, hub, me.account_id, workflow_id=workflow_id)
    return page(
        request,
        "runs.html",
        me=me,
        workflow=wf,
        runs=items,
        chosen_status=None,
        statuses=list(RunStatus),
    )


@get("/runs")
async def all_runs(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    status: FromQuery[str | None] = None,
) -> Template:
    chosen = status if status in frozenset(RunStatus) else None
    items = await offload(runs.list_runs, hub, me.account_id, status=chosen)
    return page(
        request,
        "runs.html",
        me=me,
        workflow=None,
        runs=items,
        chosen_status=chosen,
        statuses=list(RunStatus),
    )


@get("/runs/{run_id:str}")
async def run_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], run_id: FromPath[str]
) -> Template:
    run = RunOut.of(await offload(runs.get_run, hub, me.account_id, run_id))
    event_id = await offload(services.event_of_run, hub, me.account_id, run_id)
    steps = [{"title": _action_title(hub, s.action), **s.model_dump()} for s in run.steps]
    # The replay button's Idempotency-Key, one per rendering: a double click replays once.
    replay_key = new_id("rpl")
    return page(
        request,
        "run.html",
        me=me,
        run=run,
        steps=steps,
        event_id=event_id,
        replay_key=replay_key,
    )


@post("/runs/{run_id:str}/replay")
async def replay_run(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], run_id: FromPath[str]
) -> Redirect:
    key = str((await request.form()).get("idempotency_key", "")).strip()[:200] or None
    try:
        made = await offload(runs.replay, hub, me.account_id, run_id, key)
    except InputError as exc:
        _flash(request, f"Not replayed: {exc.message}", "error")
        return _see_other(f"/runs/{run_id}")
    if made.repeated:
        _flash(request, f"Already replayed from the failed step as {made.run_id}.")
    else:
        _flash(request, f"Replaying from the failed step as {made.run_id}.")
    return _see_other(f"/runs/{made.run_id}")


@get("/events/{event_id:str}")
async def event_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], event_id: FromPath[str]
) -> Template:
    found = await offload(runs.inspect_event, hub, me.account_id, event_id)
    by_id = {r.id: r for r in found.runs}
    decisions = [
        {
            "workflow_id": d.workflow_id,
            "name": d.name,
            "run_id": d.run_id,
            "reason": d.reason,
            "run": by_id.get(d.run_id) if d.run_id else None,
        }
        for d in found.decisions
    ]
    return page(
        request,
        "event.html",
        me=me,
        event=found,
        ran=[d for d in decisions if d["reason"] is None],
        not_run=[d for d in decisions if d["reason"] is not None],
    )


# -- integrations ----------------------------------------------------------------------------------


def _credential_models(hub: Hub, name: str) -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    for a in hub.registry.actions.values():
        if a.integration == name and a.credentials is not None and a.credentials not in models:
            models.append(a.credentials)
    return models


def _credential_specs(models: list[type[BaseModel]]) -> list[FieldSpec]:
    specs: dict[str, FieldSpec] = {}
    for model in models:
        for spec in forms.fields_of(model):
            specs.setdefault(spec.name, spec)
    return list(specs.values())


async def _integrations_page(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    *,
    failed: str | None = None,
    raw: dict[str, Raw] | None = None,
    errors: list[FieldError] | None = None,
    status: int = 200,
) -> Template:
    items = await offload(integrations.list_all, hub, me.account_id)
    cards = []
    for item in items:
        specs = _credential_specs(_credential_models(hub, item.name))
        values, secrets_set = forms.from_stored(specs, item.settings or {})
        placed: dict[str, list[str]] = {}
        general: list[FieldError] = []
        if item.name == failed:
            placed, general = _place_errors(errors or [], {s.name for s in specs})
            values = {**values, **{k: v for k, v in (raw or {}).items()}}
            for s in specs:
                if s.kind == "password":
                    values[s.name] = ""
        cards.append(
            {
                "name": item.name,
                "connected": item.connected,
                "updated_at": item.updated_at,
                "actions": [_action_title(hub, a) for a in item.actions],
                "fields": specs,
                "values": values,
                "secrets_set": secrets_set,
                "errors": placed,
                "general_errors": general,
            }
        )
    return page(request, "integrations.html", me=me, status=status, cards=cards)


@get("/settings/integrations")
async def integrations_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    return await _integrations_page(request, hub, me)


def _connect(hub: Hub, account_id: str, name: str, raw: dict[str, Raw]) -> None:
    models = _credential_models(hub, name)
    if not models:
        raise NotFound(f"no integration {name!r}")
    specs = _credential_specs(models)
    parsed = forms.parse(specs, raw)
    if parsed.errors:
        raise InputError(f"the {name} settings are not valid", parsed.errors)
    # A secret left blank is left out: the core keeps the stored one.
    integrations.connect(hub, account_id, name, parsed.data)


@post("/settings/integrations/{name:str}")
async def connect_integration(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], name: FromPath[str]
) -> Template | Redirect:
    models = _credential_models(hub, name)
    if not models:
        raise NotFound(f"no integration {name!r}")
    form = await request.form()
    raw = forms.read_raw(_credential_specs(models), {k: str(v) for k, v in form.items()}, "")
    try:
        await offload(_connect, hub, me.account_id, name, raw)
    except InputError as exc:
        return await _integrations_page(
            request,
            hub,
            me,
            failed=name,
            raw=raw,
            errors=exc.fields or [FieldError("integration", exc.message)],
            status=exc.status,
        )
    _flash(request, f"{name} is connected.")
    return _see_other("/settings/integrations")


@post("/settings/integrations/{name:str}/disconnect")
async def disconnect_integration(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], name: FromPath[str]
) -> Redirect:
    await offload(integrations.disconnect, hub, me.account_id, name)
    _flash(request, f"{name} is disconnected; its stored settings were deleted.")
    return _see_other("/settings/integrations")


# -- the router ------------------------------------------------------------------------------------

HANDLERS = [
    home,
    login_page,
    login,
    logout,
    workflows_page,
    toggle,
    delete_workflow,
    create_from_template,
    new_workflow,
    create_workflow,
    edit_workflow,
    update_workflow,
    test_workflow,
    workflow_runs,
    all_runs,
    run_page,
    replay_run,
    event_page,
    integrations_page,
    connect_integration,
    disconnect_integration,
]


SECURITY_HEADERS = [
    # Pages may show a secret once: never cache them; never frame them (the toggles are forms).
    ResponseHeader(name="Cache-Control", value="no-store"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


def router(hub: Hub) -> Router:
    async def provide_hub() -> Hub:
        return hub

    static = create_static_files_router(
        path="/static/dashboard",
        directories=[HERE / "static"],
        name="dashboard-static",
        include_in_schema=False,
    )
    return Router(
        path="/",
        route_handlers=[*HANDLERS, static],
        dependencies={"hub": Provide(provide_hub), "me": Provide(_provide_me)},
        middleware=[session_config(hub).middleware],
        guards=[check_csrf],
        exception_handlers={
            SignInRequired: _on_sign_in_required,
            NotFound: _on_not_found,
            InputError: _on_input,
            HTTPException: _on_http,
            Exception: _on_unexpected,
        },
        response_headers=SECURITY_HEADERS,
        include_in_schema=False,
    )
