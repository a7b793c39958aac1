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
from ..logic import DelaySettings
from ..models import sample_event
from ..offload import offload
from ..templating import catalogue, checks_of_one_save
from ..workflows import MAX_ACTIONS, MAX_OFFSET_MINUTES, MAX_STEPS, WorkflowIn, WorkflowOut
from . import conditions_form, forms, preview
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
from .conditions_form import CondState
from .forms import FieldSpec, Raw

DELAY = "logic.delay"
FILTER = "logic.filter"


@dataclass
class FallbackState:
    """An action step's "if it fails, send instead…": the action and its settings as typed."""

    action: str
    values: dict[str, Raw] = field(default_factory=dict)
    secrets_set: set[str] = field(default_factory=set)


@dataclass
class StepState:
    action: str
    origin: str | None = None  # id of the stored step this one edits
    values: dict[str, Raw] = field(default_factory=dict)
    secrets_set: set[str] = field(default_factory=set)
    when: CondState = field(default_factory=CondState)  # an action's "Only when…"
    conditions: CondState = field(default_factory=CondState)  # a filter's
    fallback: FallbackState | None = None


@dataclass
class EditorState:
    name: str = ""
    trigger: str = "booking.created"
    offset: str = "0"
    offset_unit: str = "minutes"
    enabled: bool = False
    event_types: str = ""
    continue_when_blocked: bool = False
    conditions: CondState = field(default_factory=CondState)
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


# A delay as the page asks it: wait for an amount of a unit, or until minutes before or after
# the meeting's start or end (DelaySettings' offset_minutes is signed: before is negative).
DELAY_SPECS = [
    FieldSpec("mode", "Wait", "select", True, choices=("for", "until"), default="for"),
    FieldSpec("amount", "How long", "number", False, integer=True, default="1"),
    FieldSpec(
        "unit", "Unit", "select", True, choices=("minutes", "hours", "days"), default="hours"
    ),
    FieldSpec("minutes", "Minutes", "number", False, integer=True, default="0"),
    FieldSpec(
        "side", "Before or after", "select", True, choices=("before", "after"), default="before"
    ),
    FieldSpec("until", "The meeting's", "select", True, choices=("start", "end"), default="start"),
]
# Where DelaySettings' errors show on the page's inputs.
DELAY_INPUTS = {"offset_minutes": "minutes"}


def _specs(hub: Hub, action: str) -> list[FieldSpec]:
    """The inputs of a step's settings form (a filter's are its conditions rows)."""
    if action == DELAY:
        return DELAY_SPECS
    found = hub.registry.actions.get(action)
    if found is None or action == FILTER:
        return []
    return forms.fields_of(found.settings)


def _delay_values(settings: dict[str, Any]) -> dict[str, Raw]:
    """Stored delay settings as the page's inputs."""
    values = forms.defaults(DELAY_SPECS)
    if settings.get("amount") is not None:
        values.update(mode="for", amount=str(settings["amount"]), unit=str(settings["unit"]))
    elif settings.get("until") is not None:
        offset = int(settings.get("offset_minutes") or 0)
        side = "before" if offset < 0 else "after"
        values.update(mode="until", minutes=str(abs(offset)), side=side, until=settings["until"])
    return values


def _delay_settings(values: dict[str, Raw], prefix: str) -> tuple[dict[str, Any], list[FieldError]]:
    """The delay's inputs as DelaySettings takes them, and what could not be read."""
    if values.get("mode") == "until":
        minutes = forms.whole_number(str(values.get("minutes") or "0").strip())
        if minutes is None:
            return {}, [FieldError(prefix + "minutes", "Enter a whole number of minutes")]
        sign = -1 if values.get("side") == "before" else 1
        return {"until": values.get("until"), "offset_minutes": sign * minutes}, []
    amount = forms.whole_number(str(values.get("amount") or "").strip())
    if amount is None:
        return {}, [FieldError(prefix + "amount", "Enter a whole number")]
    return {"amount": amount, "unit": values.get("unit")}, []


# A new step reaches the invitee unless told otherwise (the API's default stays off: a model
# default there would change what an existing integration's posts mean).
NEW_STEP_TICKED = "to_invitee"


def _new_step(hub: Hub, action: str) -> StepState:
    specs = _specs(hub, action)
    values = forms.defaults(specs)
    if any(s.name == NEW_STEP_TICKED and s.kind == "checkbox" for s in specs):
        values[NEW_STEP_TICKED] = True
    step = StepState(action=action, values=values)
    if action == FILTER:
        step.conditions.rows.append(conditions_form.blank_row())
    return step


def _stored_step(hub: Hub, s: Any) -> StepState:
    """A saved step (workflows.StepOut) as the editor shows it."""
    values, secrets_set = forms.from_stored(_specs(hub, s.action), s.settings)
    step = StepState(s.action, s.id, values, secrets_set, conditions_form.from_stored(s.when))
    if s.action == DELAY:
        step.values = _delay_values(s.settings)
    elif s.action == FILTER:
        step.conditions = conditions_form.from_stored(s.settings.get("conditions"))
    if s.fallback is not None:
        other, kept = forms.from_stored(_specs(hub, s.fallback.action), s.fallback.settings)
        step.fallback = FallbackState(s.fallback.action, other, kept)
    return step


def _state_of(hub: Hub, wf: WorkflowOut) -> EditorState:
    steps = [_stored_step(hub, s) for s in wf.steps]
    number, unit = split_offset(wf.offset_minutes)
    return EditorState(
        name=wf.name,
        trigger=wf.trigger,
        offset=str(number),
        offset_unit=unit,
        enabled=wf.enabled,
        event_types=", ".join(wf.event_types),
        continue_when_blocked=wf.continue_when_blocked,
        conditions=conditions_form.from_stored(wf.conditions),
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
        if step["fallback"] is not None:
            step["fallback"]["secrets_set"] = sorted(step["fallback"]["secrets_set"])
    return kept


def _from_kept(kept: dict[str, Any]) -> EditorState:
    steps = []
    for s in kept.get("steps", []):
        other = s.get("fallback")
        steps.append(
            StepState(
                s["action"],
                s["origin"],
                s["values"],
                set(s["secrets_set"]),
                CondState.from_kept(s.get("when")),
                CondState.from_kept(s.get("conditions")),
                None
                if other is None
                else FallbackState(other["action"], other["values"], set(other["secrets_set"])),
            )
        )
    return EditorState(
        **{**kept, "conditions": CondState.from_kept(kept.get("conditions")), "steps": steps}
    )


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
        conditions=conditions_form.read(flat, "conditions"),
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
        step = StepState(action, origin, values, secrets_set)
        step.when = conditions_form.read(flat, f"steps.{i}.when")
        step.conditions = conditions_form.read(flat, f"steps.{i}.settings.conditions")
        step.fallback = _read_fallback(hub, flat, i, before if origin is not None else None)
        state.steps.append(step)
    return state


def _read_fallback(
    hub: Hub, flat: dict[str, str], i: int, before: StepState | None
) -> FallbackState | None:
    """Step ``i``'s fallback as posted: a fallback newly chosen starts from its defaults (its
    form was not on the page yet); one kept from the stored step keeps its secrets."""
    action = flat.get(f"steps.{i}.fallback.action", "")
    if action not in hub.registry.actions:
        return None
    if flat.get(f"steps.{i}.fallback.shown") != action:
        return FallbackState(action, forms.defaults(_specs(hub, action)))
    values = forms.read_raw(_specs(hub, action), flat, f"steps.{i}.fallback.settings.")
    stored = before.fallback if before is not None else None
    kept = stored.secrets_set if stored is not None and stored.action == action else set()
    return FallbackState(action, values, kept)


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
        where = f"steps.{i}"
        parsed = _step_settings(hub, step, f"{where}.settings.")
        problems += parsed.errors
        action = hub.registry.actions.get(step.action)
        if action is not None:
            kept = parsed.blank_secrets if step.origin is not None else set()
            problems += _local_problems(action.settings, parsed, f"{where}.settings", kept)
        data: dict[str, Any] = {"id": step.origin, "action": step.action}
        data["settings"] = parsed.data
        if action is not None and not action.logic:
            when, unread = conditions_form.to_data(step.when, f"{where}.when")
            problems += unread
            data["when"] = when or None
            data["fallback"] = _fallback_data(hub, step, where, problems)
        steps.append(data)
    workflow_conditions, unread = conditions_form.to_data(state.conditions, "conditions")
    problems += unread
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
        "conditions": workflow_conditions,
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


def _step_settings(hub: Hub, step: StepState, prefix: str) -> forms.Parsed:
    """A step's settings as the service takes them, from its form (a secret left blank is left
    out: the core keeps the stored one or generates one), its delay inputs or its filter's
    conditions rows."""
    if step.action == DELAY:
        data, errors = _delay_settings(step.values, prefix)
        return forms.Parsed(data, errors)
    if step.action == FILTER:
        found, errors = conditions_form.to_data(step.conditions, prefix + "conditions")
        return forms.Parsed({"conditions": found}, errors)
    return forms.parse(_specs(hub, step.action), step.values, prefix)


def _fallback_data(
    hub: Hub, step: StepState, where: str, problems: list[FieldError]
) -> dict[str, Any] | None:
    """The step's fallback as the service takes it ({"action", "settings"}), what is wrong
    with its form added to ``problems``."""
    if step.fallback is None:
        return None
    other = hub.registry.actions.get(step.fallback.action)
    prefix = f"{where}.fallback.settings"
    parsed = forms.parse(_specs(hub, step.fallback.action), step.fallback.values, prefix + ".")
    problems += parsed.errors
    if other is not None:
        kept = parsed.blank_secrets & step.fallback.secrets_set
        problems += _local_problems(other.settings, parsed, prefix, kept)
    return {"action": step.fallback.action, "settings": parsed.data}


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
    if action is not None and action.logic:
        return action_name.partition(".")[2]  # "delay", "filter"
    return action_name.partition(".")[0]


def _logic_summary(step: StepState) -> str:
    """A delay's or a filter's line: "Waits 24 hours", "Goes on only if 2 conditions hold"."""
    if step.action == DELAY:
        settings, _ = _delay_settings(step.values, "")
        try:
            return "Waits " + DelaySettings.model_validate(settings).describe()
        except ValueError:
            return "Waits (not set up yet)"
    count = len(step.conditions.rows) if step.conditions.json is None else 0
    how = "any of" if step.conditions.any else "all of"
    words = f"{how} {count} conditions" if count != 1 else "its condition"
    return f"Goes on only if {words} hold" if count else "Goes on only if its conditions hold"


def _fallback_view(hub: Hub, i: int, step: StepState) -> dict[str, Any] | None:
    """The fallback's settings form: its inputs, values and name prefix."""
    if step.fallback is None:
        return None
    action = hub.registry.actions.get(step.fallback.action)
    return {
        "action": step.fallback.action,
        "title": action.title if action else step.fallback.action,
        "fields": _specs(hub, step.fallback.action),
        "values": step.fallback.values,
        "secrets_set": step.fallback.secrets_set,
        "prefix": f"steps.{i}.fallback.settings.",
    }


def _step_view(
    hub: Hub, account: Standing, i: int, step: StepState, errors: dict[str, list[str]]
) -> dict[str, Any]:
    action = hub.registry.actions.get(step.action)
    specs = _specs(hub, step.action)
    failing = any(k == f"steps.{i}" or k.startswith(f"steps.{i}.") for k in errors)
    logic = action is not None and action.logic
    if logic:
        summary = _logic_summary(step)
    elif action is not None:
        summary = step_summary(step.action, specs, step.values)
        if step.when.rows or step.when.json is not None:
            summary += " · only when its conditions hold"
    else:
        summary = "Not installed"
    return {
        "logic": logic,
        "when": conditions_form.view(step.when, f"steps.{i}.when"),
        "conditions": conditions_form.view(step.conditions, f"steps.{i}.settings.conditions"),
        "fallback": _fallback_view(hub, i, step),
        "index": i,
        "action": step.action,
        "title": action_title(hub, step.action),
        "description": action.description if action else "",
        "origin": "" if step.origin is None else str(step.origin),
        "fields": specs,
        "values": step.values,
        "secrets_set": step.secrets_set,
        "prefix": f"steps.{i}.settings.",
        "summary": summary,
        "icon": _icon(step.action, action),
        "warnings": [] if logic else _warnings(hub, account, action, step.values),
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


def _on_its_input(
    state: EditorState, error: FieldError, lists: list[tuple[str, CondState]]
) -> FieldError:
    """The service's error moved to the input that shows it: a condition's row, a delay's
    minutes."""
    for prefix, listed in lists:
        error = conditions_form.place(error, prefix, listed)
    head, _, name = error.field.partition(".settings.")
    index = forms.whole_number(head.removeprefix("steps."))
    if index is not None and index < len(state.steps) and state.steps[index].action == DELAY:
        shown = DELAY_INPUTS.get(name)
        if shown:
            return FieldError(f"{head}.settings.{shown}", error.message)
    return error


def _editor_context(
    hub: Hub,
    state: EditorState,
    workflow: WorkflowOut | None,
    errors: list[FieldError],
    account: Standing,
) -> dict[str, Any]:
    known = {"name", "trigger", "offset", "steps", "enabled"}
    known |= {s.name for s in OPTION_SPECS}
    lists = [("conditions", state.conditions)]
    for i, step in enumerate(state.steps):
        known |= {f"steps.{i}", f"steps.{i}.action", f"steps.{i}.settings"}
        known |= {f"steps.{i}.settings.{s.name}" for s in _specs(hub, step.action)}
        known |= {f"steps.{i}.fallback", f"steps.{i}.fallback.action"}
        if step.fallback is not None:
            where = f"steps.{i}.fallback.settings"
            known |= {where} | {f"{where}.{s.name}" for s in _specs(hub, step.fallback.action)}
        lists += [
            (f"steps.{i}.when", step.when),
            (f"steps.{i}.settings.conditions", step.conditions),
        ]
    for prefix, listed in lists:
        known |= conditions_form.known(listed, prefix)
    # The offset is entered as a number and a unit: its errors go next to them.
    errors = [FieldError("offset", e.message) if e.field == "offset_minutes" else e for e in errors]
    errors = [_on_its_input(state, e, lists) for e in errors]
    placed, general = place_errors(errors, known)
    steps = [_step_view(hub, account, i, step, placed) for i, step in enumerate(state.steps)]
    labels, targets = _summary_links(steps, conditions_form.view(state.conditions, "conditions"))
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
        if not a.logic
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
        "logic_actions": [a for a in installed if a.logic],
        "condition_fields": conditions_form.catalogue_view(),
        "op_words": conditions_form.OP_WORDS,
        "workflow_conditions": conditions_form.view(state.conditions, "conditions"),
        "action_count": sum(1 for s in steps if not s["logic"]),
        "max_actions": MAX_ACTIONS,
        "max_steps": MAX_STEPS,
        "name_spec": FieldSpec("name", "Name", "text", required=True),
        "option_specs": OPTION_SPECS,
        "switch": account.switch(),
        "variables": VARIABLES,
        "test_panel": None,
        "unsaved": False,
    }


def _condition_labels(listed: dict[str, Any], where: str, labels: dict[str, str]) -> None:
    """The error summary's label for each input of a conditions list ("Step 2 · Only when ·
    condition 1 · Operator")."""
    prefix = listed["prefix"]
    labels[prefix] = labels[f"{prefix}.json"] = where
    for row in listed["rows"]:
        for name, label in CONDITION_INPUTS.items():
            labels[f"{prefix}.{row['index']}.{name}"] = (
                f"{where} · condition {row['index'] + 1} · {label}"
            )


CONDITION_INPUTS = {"field": "Field", "key": "Custom field key", "op": "Operator", "value": "Value"}


def _summary_links(
    steps: list[dict[str, Any]], workflow_conditions: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
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
        _condition_labels(step["when"], f"Step {i + 1} · Only when", labels)
        _condition_labels(step["conditions"], f"Step {i + 1} · Filter", labels)
        labels[f"steps.{i}.fallback"] = labels[f"steps.{i}.fallback.action"] = (
            f"Step {i + 1} · If it fails"
        )
        targets[f"steps.{i}.fallback"] = field_id(f"steps.{i}.fallback.action")
        fallback = step["fallback"]
        for spec in fallback["fields"] if fallback else ():
            labels[fallback["prefix"] + spec.name] = f"Step {i + 1} · If it fails · {spec.label}"
    _condition_labels(workflow_conditions, "Only for bookings that match", labels)
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


def _add_step(hub: Hub, state: EditorState, name: str) -> list[FieldError]:
    action = hub.registry.actions.get(name)
    if action is None:
        return [FieldError("steps", "Choose an action to add")]
    if len(state.steps) >= MAX_STEPS:
        return [FieldError("steps", f"A workflow has at most {MAX_STEPS} steps")]
    actions = sum(1 for s in state.steps if s.action not in (DELAY, FILTER))
    if not action.logic and actions >= MAX_ACTIONS:
        message = f"A workflow has at most {MAX_ACTIONS} actions (delays and filters not counted)"
        return [FieldError("steps", message)]
    state.steps.append(_new_step(hub, name))
    return []


def _edit_conditions(state: EditorState, arg: str) -> list[FieldError]:
    """Add or remove a conditions row (``arg`` "steps.1.when:add", "conditions:remove:0")."""
    prefix, _, what = arg.partition(":")
    lists = {"conditions": state.conditions}
    for i, step in enumerate(state.steps):
        lists[f"steps.{i}.when"] = step.when
        lists[f"steps.{i}.settings.conditions"] = step.conditions
    if prefix not in lists:
        return [FieldError("steps", "That step is no longer in the workflow")]
    conditions_form.edit(lists[prefix], what)
    return []


def _edit_steps(hub: Hub, state: EditorState, op: str, add_action: str) -> list[FieldError]:
    """Add, move or remove a step of the draft (``op`` "add", "add:logic.delay", "up:1",
    "down:0", "remove:2"), add or remove a conditions row ("cond:steps.1.when:add"), or show
    the fallback chosen ("fallback:1": read with the rest of the form)."""
    kind, _, arg = op.partition(":")
    if kind == "add":
        return _add_step(hub, state, arg or add_action)
    if kind == "cond":
        return _edit_conditions(state, arg)
    index = forms.whole_number(arg)
    if index is None or index >= len(state.steps):
        return [FieldError("steps", "That step is no longer in the workflow")]
    if kind == "fallback":
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


STEP_OPS = ("add", "up", "down", "remove", "cond", "fallback")
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
