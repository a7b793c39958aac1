"""The workflow editor: one form holds the whole draft (trigger, options, the Enabled switch,
steps). Adding, moving and removing steps, testing and saving all post that draft, so nothing
typed is lost; static/editor.js does the first three in the page instead, and warns before
leaving with unsaved changes.

Back and reload are safe: every post answers 303 (POST-redirect-GET). Save goes to the saved
workflow; every other answer (a step added without JS, Test, a refused Save, "send a test to
me") is kept as a draft on the server (core drafts) and shown by ``GET …?draft=T``, so no page
in the history is the answer to a post. The form carries its draft's token: a new draft creates
one workflow at most (the database holds the claim), so posting it again, or twice at once,
opens the workflow it created. The form also carries the version it was opened at: a Save over
a workflow changed since (another tab) asks first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from litestar import get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from pydantic import BaseModel, ValidationError

from .. import drafts, endpoints, plans, workflows
from ..actions import ActionType, TriggerType
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound
from ..models import sample_event
from ..offload import offload
from ..templating import catalogue, checks_of_one_save
from ..workflows import MAX_OFFSET_MINUTES, MAX_STEPS, WorkflowIn, WorkflowOut
from . import forms, preview
from .app import (
    OFFSET_UNITS,
    AnyRequest,
    Me,
    action_title,
    connected_integrations,
    field_id,
    flash,
    offset_text,
    page,
    people_errors,
    place_errors,
    see_other,
    shown_secrets,
    split_offset,
    toggle_blocked,
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
    offset_unit: str = "minutes"
    enabled: bool = False
    event_types: str = ""
    continue_when_blocked: bool = False
    steps: list[StepState] = field(default_factory=list)
    draft: str = ""  # the draft's token (core drafts)
    version: str = ""  # the stored workflow's updated_at when the editor opened it


# The trigger's options, worded for the page (the API's descriptions speak JSON).
OPTION_SPECS = [
    replace(
        forms.field_spec("event_types", WorkflowIn.model_fields["event_types"]),
        label="Only for these event types",
        help="Event type slugs or ids, separated by commas. Leave empty for every event type.",
    ),
    replace(
        forms.field_spec("continue_when_blocked", WorkflowIn.model_fields["continue_when_blocked"]),
        label="Go on when the plan blocks a step",
        help="Off: the run stops at a step your plan does not include. On: later steps still run.",
    ),
]


def _specs(hub: Hub, action: str) -> list[FieldSpec]:
    found = hub.registry.actions.get(action)
    return forms.fields_of(found.settings) if found else []


# A new step reaches the invitee unless told otherwise (the API's default stays off: a model
# default there would change what an existing integration's posts mean).
NEW_STEP_TICKED = "to_invitee"


def _new_step(hub: Hub, action: str) -> StepState:
    specs = _specs(hub, action)
    values = forms.defaults(specs)
    if any(s.name == NEW_STEP_TICKED and s.kind == "checkbox" for s in specs):
        values[NEW_STEP_TICKED] = True
    return StepState(action=action, values=values)


def _state_of(hub: Hub, wf: WorkflowOut) -> EditorState:
    steps = []
    for s in wf.steps:
        values, secrets_set = forms.from_stored(_specs(hub, s.action), s.settings)
        steps.append(StepState(s.action, s.id, values, secrets_set))
    number, unit = split_offset(wf.offset_minutes)
    return EditorState(
        name=wf.name,
        trigger=wf.trigger,
        offset=str(number),
        offset_unit=unit,
        enabled=wf.enabled,
        event_types=", ".join(wf.event_types),
        continue_when_blocked=wf.continue_when_blocked,
        steps=steps,
        version=_version(wf),
    )


def _version(wf: WorkflowOut) -> str:
    return wf.updated_at.isoformat()


def _kept(state: EditorState) -> dict[str, Any]:
    """The draft as the drafts table keeps it (JSON)."""
    kept = asdict(state)
    for step in kept["steps"]:
        step["secrets_set"] = sorted(step["secrets_set"])
    return kept


def _from_kept(kept: dict[str, Any]) -> EditorState:
    steps = [
        StepState(s["action"], s["origin"], s["values"], set(s["secrets_set"]))
        for s in kept.get("steps", [])
    ]
    return EditorState(**{**kept, "steps": steps})


def _read_state(hub: Hub, form: FormMultiDict, stored: EditorState | None) -> EditorState:
    flat = {k: str(v) for k, v in form.items()}
    state = EditorState(
        name=flat.get("name", "").strip(),
        trigger=flat.get("trigger", ""),
        offset=flat.get("offset", "0").strip(),
        offset_unit=flat.get("offset_unit", "minutes"),
        enabled="enabled" in flat,
        event_types=flat.get("event_types", ""),
        continue_when_blocked="continue_when_blocked" in flat,
        draft=flat.get("draft", "")[:64],
        version=flat.get("version", "")[:64],
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
            for e in people_errors(exc, prefix)
            if not any(e.field == u or e.field.startswith(u + ".") for u in unreadable)
        ]
    return []


EVENT_OFFSET = (
    "This trigger runs when the booking event arrives, so it takes no time before or after: "
    "set How long to 0, or choose Before Meeting or After Meeting"
)


def _offset_minutes(hub: Hub, state: EditorState) -> tuple[int, list[FieldError]]:
    """The draft's offset in minutes (0 for an event trigger), or the problem with it."""
    trigger = hub.registry.triggers.get(state.trigger)
    if trigger is None or trigger.kind != "time":
        # Only a browser without JS sends one (editor.js hides the field): never drop it unsaid.
        if forms.whole_number(state.offset or "0"):
            return 0, [FieldError("offset", EVENT_OFFSET)]
        return 0, []
    number = forms.whole_number(state.offset or "0")
    size = OFFSET_UNITS.get(state.offset_unit)
    if number is None:
        return 0, [FieldError("offset", "Enter a whole number")]
    if size is None:
        return 0, [FieldError("offset", "Choose minutes, hours or days")]
    if number * size > MAX_OFFSET_MINUTES:
        return 0, [FieldError("offset", f"At most {offset_text(MAX_OFFSET_MINUTES)}")]
    return number * size, []


@checks_of_one_save()
def _draft_spec(hub: Hub, state: EditorState) -> WorkflowIn:
    """The draft as the service takes it, for Save and for Test alike (raises InputError
    naming every field at fault)."""
    offset, problems = _offset_minutes(hub, state)
    if state.trigger not in hub.registry.triggers:
        problems.append(FieldError("trigger", "Choose when the workflow runs from the list"))
    if not state.name:
        problems.append(FieldError("name", "Give the workflow a name"))
    if not state.steps:
        problems.append(FieldError("steps", "Add at least one action"))
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(state.steps):
        action = hub.registry.actions.get(step.action)
        specs = _specs(hub, step.action)
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
        # What the editor named in its own words above is not named again in the model's.
        named = {p.field for p in problems}
        problems += [e for e in people_errors(exc) if e.field not in named]
        raise InputError("the workflow is not valid", problems) from None
    if problems:
        raise InputError("the workflow is not valid", problems)
    return spec


def _save(
    hub: Hub, account_id: str, workflow_id: str | None, spec: WorkflowIn, draft: str
) -> Saved:
    """Create (from ``draft``, once) or update the workflow (raises InputError naming every
    field at fault, drafts.AlreadyCreated)."""
    if workflow_id is None:
        saved, generated = workflows.create(hub, account_id, spec, draft=draft)
    else:
        # The editor knows which stored step each one edits: a step without one is new.
        saved, generated = workflows.update(hub, account_id, workflow_id, spec, by_position=False)
    return Saved(saved, shown_secrets(generated))


# -- what the page shows -------------------------------------------------------------------------

# Fields that say whom a step reaches; the first template field says what it sends.
RECIPIENT_FIELDS = ("to", "recipients", "addresses", "email", "number", "phone", "channel", "url")
SUMMARY_TEXT = 60


def _quoted(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= SUMMARY_TEXT else line[: SUMMARY_TEXT - 1] + "…"


def step_summary(action_name: str, specs: list[FieldSpec], values: dict[str, Raw]) -> str:
    """One line on what a step sends to whom, read from its settings model alone: "Email to
    the invitee · “Reminder: {{ event_name }}”", "Webhook to https://…", "Slack to #sales"."""
    channel = forms.label_for(action_name.partition(".")[0])
    by_name = {s.name: s for s in specs}
    chooser = by_name.get("to")
    # A `to` choice naming another field ("number") means that field's value when chosen.
    chosen_only = set(chooser.choices) if chooser and chooser.kind == "select" else set()
    whom: list[str] = []
    for s in specs:
        value = values.get(s.name, "")
        if s.kind == "password":
            continue
        if s.kind == "checkbox" and s.name.startswith("to_"):
            if value:
                whom.append("the " + forms.label_for(s.name[3:]).lower())
        elif s is chooser and chosen_only:
            target = str(value)
            if target in by_name:
                shown = str(values.get(target, "")).strip()
                whom.append(shown or f"a {forms.label_for(target).lower()}")
            elif target:
                whom.append(f"the {target}")
        elif s.name in RECIPIENT_FIELDS and s.name not in chosen_only:
            text = _quoted(str(value))
            if text:
                whom.append(text)
    line = channel + (" to " + " and ".join(whom) if whom else "")
    message = next(
        (_quoted(str(values.get(s.name, ""))) for s in specs if s.template and values.get(s.name)),
        "",
    )
    return f"{line} · “{message}”" if message else line


def _listed(names: list[str]) -> str:
    """ "Pro", "Pro and Business", "Free, Pro and Business"."""
    titled = [forms.label_for(n) for n in names]
    return " and ".join(filter(None, [", ".join(titled[:-1]), titled[-1]])) if titled else ""


def plans_with(hub: Hub, action: ActionType) -> str:
    """Which plans include ``action``, in words."""
    names = plans.including(hub.settings.plans, action)
    return f"on {_listed(names)}" if names else "on no plan"


def needs_connection(action: ActionType, values: dict[str, Raw]) -> bool:
    """Whether the step, as its form stands, cannot be sent before the action's integration is
    connected (the action says: always, never, or by its settings, read here unvalidated)."""
    if not callable(action.needs_integration):
        return action.needs_connection(None)
    parsed = forms.parse(forms.fields_of(action.settings), values)
    return action.needs_connection(action.settings.model_construct(**parsed.data))


@dataclass(frozen=True)
class Standing:
    """What the page needs to know about the account: plan and connected integrations."""

    usage: plans.PlanUsage
    connected: frozenset[str]
    stored_enabled: bool

    def switch(self) -> dict[str, Any]:
        """The Enabled switch: locked, saying why, when the plan's active limit is reached. A
        workflow already enabled is never locked (a locked switch posts nothing, which would
        switch it off unasked); past the limit (a downgraded plan) its save says why."""
        reason = toggle_blocked(self.usage, self.stored_enabled)
        return {"locked": bool(reason), "reason": reason}


def _warnings(
    hub: Hub, account: Standing, action: ActionType | None, values: dict[str, Raw]
) -> list[dict[str, str]]:
    if action is None:
        return [{"text": "This action is not installed on this server.", "href": "", "link": ""}]
    found = []
    if action.name not in account.usage.allowed_actions:
        found.append(
            {
                "text": f"Not on your {account.usage.plan} plan: {action.title} is "
                f"{plans_with(hub, action)}.",
                "href": "",
                "link": "",
            }
        )
    if action.integration not in (None, *account.connected) and needs_connection(action, values):
        title = forms.label_for(str(action.integration))
        found.append(
            {
                "text": f"{title} is not connected: this step cannot send until it is.",
                "href": f"/settings/integrations#{action.integration}",
                "link": f"Connect {title}",
            }
        )
    return found


def _icon(action_name: str, action: ActionType | None) -> str:
    """The icon's kind: the action's capability ("sms"), else its channel (the name's start)."""
    if action is not None and action.capability:
        return action.capability
    return action_name.partition(".")[0]


def _step_view(
    hub: Hub, account: Standing, i: int, step: StepState, errors: dict[str, list[str]]
) -> dict[str, Any]:
    action = hub.registry.actions.get(step.action)
    specs = _specs(hub, step.action)
    failing = any(k == f"steps.{i}" or k.startswith(f"steps.{i}.") for k in errors)
    return {
        "index": i,
        "action": step.action,
        "title": action_title(hub, step.action),
        "description": action.description if action else "",
        "origin": "" if step.origin is None else str(step.origin),
        "fields": specs,
        "values": step.values,
        "secrets_set": step.secrets_set,
        "prefix": f"steps.{i}.settings.",
        "summary": step_summary(step.action, specs, step.values) if action else "Not installed",
        "icon": _icon(step.action, action),
        "warnings": _warnings(hub, account, action, step.values),
        "failing": failing,
        # Saved steps without a problem start folded to their summary; the rest want input.
        "open": failing or step.origin is None,
        "errors": errors,
    }


def _example(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return "" if value is None else str(value)


# The picker's list: the flat names (Cal.com's, the most used) before the objects' fields.
VARIABLES = [
    {"name": name, "example": _example(v)}
    for name, v in sorted(catalogue(sample_event()), key=lambda item: "." in item[0])
]


def _editor_context(
    hub: Hub,
    state: EditorState,
    workflow: WorkflowOut | None,
    errors: list[FieldError],
    account: Standing,
) -> dict[str, Any]:
    known = {"name", "trigger", "offset", "steps", "enabled"}
    known |= {s.name for s in OPTION_SPECS}
    for i, step in enumerate(state.steps):
        known |= {f"steps.{i}", f"steps.{i}.action", f"steps.{i}.settings"}
        known |= {f"steps.{i}.settings.{s.name}" for s in _specs(hub, step.action)}
    # The offset is entered as a number and a unit: its errors go next to them.
    errors = [FieldError("offset", e.message) if e.field == "offset_minutes" else e for e in errors]
    placed, general = place_errors(errors, known)
    steps = [_step_view(hub, account, i, step, placed) for i, step in enumerate(state.steps)]
    labels, targets = _summary_links(steps)
    triggers: list[TriggerType] = list(hub.registry.triggers.values())
    allowed = set(account.usage.allowed_actions)
    # Actions the plan allows first, so the default choice is one that can be saved.
    installed = sorted(hub.registry.actions.values(), key=lambda a: a.name not in allowed)
    actions = [
        {
            "name": a.name,
            "title": a.title,
            "allowed": a.name in allowed,
            "note": "" if a.name in allowed else plans_with(hub, a),
        }
        for a in installed
    ]
    return {
        "state": state,
        "workflow": workflow,
        "steps": steps,
        # One card per action for editor.js to add in the page (renumbered when inserted).
        "step_templates": [
            _step_view(hub, account, 0, _new_step(hub, a.name), {}) for a in installed
        ],
        "errors": placed,
        "general_errors": general,
        "error_labels": labels,
        "error_targets": targets,
        "error_heading": "The workflow was not saved",
        "triggers": triggers,
        "time_triggers": " ".join(t.name for t in triggers if t.kind == "time"),
        "current_trigger": hub.registry.triggers.get(state.trigger),
        "offset_units": list(reversed(OFFSET_UNITS)),
        "actions": actions,
        "max_steps": MAX_STEPS,
        "name_spec": FieldSpec("name", "Name", "text", required=True),
        "option_specs": OPTION_SPECS,
        "switch": account.switch(),
        "variables": VARIABLES,
        "test_panel": None,
        "unsaved": False,
    }


def _summary_links(steps: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """For the error summary: the label before each error, and the element a step-level
    error links to (its first field; the add-action choice for the list of steps)."""
    labels = {
        "name": "Name",
        "enabled": "Enabled",
        "trigger": "When",
        "offset": "How long",
        "steps": "Actions",
        **{s.name: s.label for s in OPTION_SPECS},
    }
    targets = {"steps": "add_action"}
    for step in steps:
        i, prefix, fields = step["index"], step["prefix"], step["fields"]
        target = field_id(prefix + fields[0].name) if fields else f"step-{i}"
        for key in (f"steps.{i}", f"steps.{i}.action", f"steps.{i}.settings"):
            labels[key], targets[key] = f"Step {i + 1}", target
        for spec in step["fields"]:
            labels[prefix + spec.name] = f"Step {i + 1} · {spec.label}"
    return labels, targets


async def _account(hub: Hub, me: Me, workflow: WorkflowOut | None) -> Standing:
    return Standing(
        await usage(hub, me),
        await offload(connected_integrations, hub, me.account_id),
        workflow is not None and workflow.enabled,
    )


CHANGED = (
    "This workflow was changed in another tab or by someone else since you opened it. "
    "Reload it to see the changes (your edits here are lost), or save anyway to replace them "
    "with yours."
)
DELETED = "This workflow was deleted. Save to create it again."


def _editor_url(workflow_id: str | None) -> str:
    return f"/workflows/{workflow_id}" if workflow_id else "/workflows/new"


async def _endpoint_tools(
    hub: Hub, me: Me, state: EditorState, wf: WorkflowOut | None
) -> dict[int, dict[str, Any]]:
    """For each step (by index) of a saved workflow that edits a stored step delivering to an
    endpoint: its stored position, whether it has a secret to rotate, and its endpoint if
    disabled (Settings → Webhooks' buttons, on the step)."""
    if wf is None:
        return {}
    disabled = dict(
        (await offload(endpoints.disabled_by_workflow, hub, me.account_id)).get(wf.id, [])
    )
    stored = {s.id: s for s in wf.steps}
    tools: dict[int, dict[str, Any]] = {}
    for i, step in enumerate(state.steps):
        saved = stored.get(step.origin or "")
        action = hub.registry.actions.get(step.action)
        if saved is None or action is None or action.endpoint is None:
            continue
        tools[i] = {
            "position": saved.position,
            "rotate": action.rotate_secret is not None,
            "disabled": disabled.get(saved.position),
        }
    return tools


async def _show(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    state: EditorState,
    wf: WorkflowOut | None,
    outcome: dict[str, Any],
) -> Template:
    """The editor page for ``state``, with what its last post came to (``outcome``, as
    _editor_post keeps it: errors, heading, a Test or send to show, a notice)."""
    errors = [FieldError(f, m) for f, m in outcome.get("errors", [])]
    context = _editor_context(hub, state, wf, errors, await _account(hub, me, wf))
    context["conflict"] = outcome.get("notice") == "changed"
    context["endpoint_tools"] = await _endpoint_tools(hub, me, state, wf)
    if outcome:
        context.update(unsaved=True, error_heading=outcome.get("heading", "There is a problem"))
    test = outcome.get("test")
    if test is not None and not errors:
        # The dry run is recomputed (it changes nothing); a send happened once, at its post.
        try:
            spec = await offload(_draft_spec, hub, state)
        except InputError:  # the account changed since (a plan, an integration): test again
            return page(request, "editor.html", me=me, **context)
        asked = FormMultiDict({"test_event_type": test.get("event_type", "")})
        panel = await preview.draft_panel(hub, me, spec, wf.id if wf else None, asked)
        panel.update(test.get("sent") or {})
        context["test_panel"] = panel
        if panel["errors"]:
            # The send's own fields, by the panel and in the summary like every other error.
            context["errors"] = {**context["errors"], **panel["errors"]}
            context["error_labels"] = {**context["error_labels"], **preview.SEND_LABELS}
            context["error_targets"] = {**context["error_targets"], **preview.SEND_TARGETS}
            context["error_heading"] = "The test was not sent"
    return page(request, "editor.html", me=me, **context)


@get("/workflows/new")
async def new_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    action: FromQuery[str | None] = None,
    draft: FromQuery[str | None] = None,
) -> Template:
    if draft is not None:
        kept = await offload(drafts.get, hub, me.account_id, draft)
        if kept.workflow_id is not None:
            raise NotFound("This draft belongs to a saved workflow: open it from Workflows.")
        state = replace(_from_kept(kept.form), draft=kept.id)
        return await _show(request, hub, me, state, None, kept.outcome)
    state = EditorState(draft=drafts.new_token())
    if action and action in hub.registry.actions:
        state.steps.append(_new_step(hub, action))
    return await _show(request, hub, me, state, None, {})


@get("/workflows/{workflow_id:str}")
async def edit_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    draft: FromQuery[str | None] = None,
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    if draft is not None:
        kept = await offload(drafts.get, hub, me.account_id, draft)
        if kept.workflow_id != workflow_id:
            raise NotFound("This draft is not one of this workflow's.")
        state = replace(_from_kept(kept.form), draft=kept.id)
        return await _show(request, hub, me, state, wf, kept.outcome)
    # A GET stores nothing: the draft is written by the first post that needs it.
    state = replace(_state_of(hub, wf), draft=drafts.new_token())
    return await _show(request, hub, me, state, wf, {})


def _plan_words(hub: Hub, state: EditorState, error: FieldError) -> FieldError:
    """A step the plan refuses, said as the step card says it ("Send SMS is on Pro and
    Business") rather than by the action's name and capability."""
    head, _, rest = error.field.partition(".")
    index = forms.whole_number(rest.removesuffix(".action"))
    if head != "steps" or index is None or index >= len(state.steps):
        return error
    action = hub.registry.actions.get(state.steps[index].action)
    if action is None:
        return error
    return FieldError(
        error.field, f"Your plan does not include {action.title}: it is {plans_with(hub, action)}"
    )


def _edit_steps(hub: Hub, state: EditorState, op: str, add_action: str) -> list[FieldError]:
    """Add, move or remove a step of the draft (``op`` "add", "up:1", "down:0", "remove:2")."""
    kind, _, arg = op.partition(":")
    if kind == "add":
        if len(state.steps) >= MAX_STEPS:
            return [FieldError("steps", f"A workflow has at most {MAX_STEPS} actions")]
        if add_action not in hub.registry.actions:
            return [FieldError("steps", "Choose an action to add")]
        state.steps.append(_new_step(hub, add_action))
        return []
    index = forms.whole_number(arg)
    if index is None or index >= len(state.steps):
        return [FieldError("steps", "That step is no longer in the workflow")]
    if kind == "remove":
        del state.steps[index]
    else:
        other = index - 1 if kind == "up" else index + 1
        if 0 <= other < len(state.steps):
            state.steps[index], state.steps[other] = state.steps[other], state.steps[index]
    return []


STEP_OPS = ("add", "up", "down", "remove")
OPS = (*STEP_OPS, "test", "send", "save")


async def _already_created(hub: Hub, me: Me, token: str) -> str | None:
    """The workflow draft ``token`` created, if it still exists (if it was deleted since, the
    draft may create it again)."""
    created = await offload(drafts.created, hub, token)
    if created is None:
        return None
    try:
        await offload(workflows.get, hub, me.account_id, created)
    except NotFound:
        await offload(drafts.forget_created, hub, token)
        return None
    return created


async def _editor_post(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    workflow_id: FromPath[str] | None,
) -> Redirect:
    form = await request.form()
    op = str(form.get("op", "save"))
    kind = op.partition(":")[0]
    if kind not in OPS or (kind == "save" and op not in ("save", "save:anyway")):
        raise HTTPException(status_code=400, detail="Unknown action")
    token = str(form.get("draft", ""))
    mine = await offload(drafts.find, hub, me.account_id, token)
    wf = None
    outcome: dict[str, Any] = {}
    if workflow_id is not None:
        try:
            wf = await offload(workflows.get, hub, me.account_id, workflow_id)
        except NotFound:
            if await offload(workflows.exists, hub, workflow_id):
                raise  # another account's
            # Deleted (in another tab, say): the draft stays, as a new workflow's.
            outcome = {"errors": [("workflow", DELETED)], "heading": "The workflow was not saved"}
    elif mine is not None and mine.workflow_id is None:
        created = await _already_created(hub, me, token)
        if created is not None:
            flash(request, "This workflow was already saved: here it is.")
            return see_other(f"/workflows/{created}")
    state = _read_state(hub, form, _state_of(hub, wf) if wf else None)
    if wf is None and kind == "save":
        # The draft's row must be there for the save to claim it (its page, which Back may
        # show, keeps what it showed).
        shown = mine.outcome if mine else {}
        state.draft = await offload(
            drafts.write, hub, me.account_id, token, None, _kept(state), shown
        )
        token = state.draft
    if not outcome:
        outcome = await _act(request, hub, me, state, wf, op, form)
        if "saved" in outcome:
            return see_other(outcome["saved"])
    editing = wf.id if wf else None
    token = await offload(drafts.write, hub, me.account_id, token, editing, _kept(state), outcome)
    anchor = "#test-panel" if "test" in outcome else ""
    return see_other(f"{_editor_url(editing)}?draft={token}{anchor}")


async def _act(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    state: EditorState,
    wf: WorkflowOut | None,
    op: str,
    form: FormMultiDict,
) -> dict[str, Any]:
    """Do what the post asked of the draft; what came of it, as the draft keeps it (JSON), or
    {"saved": url} when the workflow was saved."""
    kind = op.partition(":")[0]
    if kind in STEP_OPS:
        errors = _edit_steps(hub, state, op, str(form.get("add_action", "")))
        return {"errors": [(e.field, e.message) for e in errors], "heading": "There is a problem"}
    testing = kind in ("test", "send")
    heading = "The draft cannot be tested yet" if testing else "The workflow was not saved"
    try:
        spec = await offload(_draft_spec, hub, state)
        if testing:
            return {"test": await _test(hub, me, spec, wf, form, send_draft=kind == "send")}
        # (A post without a version is not from the page: nothing to compare.)
        changed = wf is not None and state.version not in ("", _version(wf))
        if changed and op != "save:anyway":
            return {"errors": [("workflow", CHANGED)], "heading": heading, "notice": "changed"}
        saved = await offload(_save, hub, me.account_id, wf.id if wf else None, spec, state.draft)
    except InputError as exc:
        errors = exc.fields or [FieldError("workflow", exc.message)]
        if exc.code == "plan_limit":
            errors = [_plan_words(hub, state, e) for e in errors]
        return {"errors": [(e.field, e.message) for e in errors], "heading": heading}
    except drafts.AlreadyCreated:
        created = await offload(drafts.created, hub, state.draft)
        flash(request, "This workflow was already saved: here it is.")
        return {"saved": f"/workflows/{created}" if created else "/workflows"}
    flash(request, f"Saved “{saved.workflow.name}”.")
    for s in saved.secrets:
        flash(request, "Generated", "secret", **s)
    return {"saved": f"/workflows/{saved.workflow.id}"}


async def _test(
    hub: Hub,
    me: Me,
    spec: WorkflowIn,
    wf: WorkflowOut | None,
    form: FormMultiDict,
    send_draft: bool,
) -> dict[str, Any]:
    """A Test as the draft keeps it: the sample asked for, and what a send came to (its
    fields as entered, their errors, the run), which the draft page shows without sending."""
    test: dict[str, Any] = {"event_type": str(form.get("test_event_type", ""))}
    if send_draft:
        panel = await preview.draft_panel(
            hub, me, spec, wf.id if wf else None, form, send_draft=True
        )
        test["sent"] = {k: panel[k] for k in ("email", "phone", "errors", "run_id")}
    return test


@post("/workflows/new")
async def create_workflow(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Redirect:
    return await _editor_post(request, hub, me, None)


@post("/workflows/{workflow_id:str}")
async def update_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Redirect:
    return await _editor_post(request, hub, me, workflow_id)


HANDLERS = [new_workflow, edit_workflow, create_workflow, update_workflow]
