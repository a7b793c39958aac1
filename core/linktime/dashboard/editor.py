"""The workflow editor: one form holds the whole draft (trigger, options, steps); adding,
moving and removing steps, testing and saving all act on that draft."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from pydantic import BaseModel, ValidationError

from .. import workflows
from ..actions import TriggerType
from ..engine import Hub
from ..errors import FieldError, InputError, pydantic_fields
from ..offload import offload
from ..workflows import MAX_STEPS, WorkflowIn, WorkflowOut
from . import forms
from .app import (
    AnyRequest,
    Me,
    flash,
    page,
    place_errors,
    see_other,
    shown_secrets,
    usage,
)
from .forms import FieldSpec, Raw


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
    return Saved(saved, shown_secrets(generated))


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
    placed, general = place_errors(errors, known)
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
    return list((await usage(hub, me)).allowed_actions)


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
        flash(request, f"Saved “{saved.workflow.name}”.")
        for s in saved.secrets:
            flash(request, "Generated", "secret", **s)
        return see_other(f"/workflows/{saved.workflow.id}")
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


HANDLERS = [new_workflow, edit_workflow, create_workflow, update_workflow]
