"""Workflows: validated against the installed plugins when saved, so a run never meets a step
it cannot understand (unless a plugin is uninstalled later; the step then fails, logged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy import update as update_rows
from sqlalchemy.orm import Session

from . import bookings, conditions, drafts, endpoints, plans
from .actions import ActionType
from .conditions import Conditions
from .crypto import masked, revealed, secret_fields, with_kept_secrets
from .engine import Hub
from .errors import FieldError, InputError, NotFound, pydantic_fields
from .inputs import is_hidden, validate_input
from .statuses import RUN_UNFINISHED, STEP_OPEN
from .storage import Account, Run, RunStep, Workflow, WorkflowStep, new_id
from .templating import checks_of_one_save

MAX_ACTIONS = 5  # steps that send (the plan's "actions per workflow")
MAX_STEPS = 10  # with the logic steps (delay, filter), which do not count as actions
MAX_OFFSET_MINUTES = 60 * 24 * 90  # a reminder up to 90 days before or after


class FallbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(description="An installed action that sends (not a logic step)")
    settings: dict[str, Any] = Field(default_factory=dict)


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(
        None,
        description="On PUT, the stored step this one edits (its id from GET): its secrets are "
        "kept unless new values are given. Without it, the stored step at the same position "
        "with the same action, whose secrets are kept only if it is the workflow's one step of "
        "that action and its other settings are unchanged (else a 422 naming this field)",
    )
    action: str = Field(description="An installed action, e.g. webhook.call, or logic.delay")
    settings: dict[str, Any] = Field(default_factory=dict)
    when: Conditions | None = Field(
        None,
        description="The step runs only when these conditions hold for the booking as it is "
        "when the step is reached; otherwise it is skipped and the run goes on",
    )
    fallback: FallbackIn | None = Field(
        None,
        description="Another action to send instead when this step fails for good (e.g. an "
        "email when an SMS cannot be delivered); recorded as its own attempts",
    )


class WorkflowIn(BaseModel):
    # strict: "enabled": "yes" is a mistake to name, not a true
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200)
    trigger: str
    offset_minutes: int = Field(
        0, ge=0, le=MAX_OFFSET_MINUTES, description="For meeting.before / meeting.after only"
    )
    enabled: bool = False
    event_types: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Limit to bookings of these event types (slug or id); empty: all",
    )
    continue_when_blocked: bool = Field(
        False, description="When the plan blocks a step at run time: go on (true) or stop"
    )
    conditions: Conditions = Field(
        default_factory=list,
        description="The workflow runs only for bookings that match (GET /v1/conditions/fields "
        "lists the fields); a reminder's are checked when it fires",
    )
    steps: list[StepIn] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description=f"Run in order: up to {MAX_ACTIONS} actions, and with the logic steps "
        f"(logic.delay, logic.filter) up to {MAX_STEPS} steps",
    )


class FallbackOut(BaseModel):
    action: str
    settings: dict[str, Any]


class StepOut(BaseModel):
    id: str
    position: int
    action: str
    settings: dict[str, Any]
    when: list[dict[str, Any]] | None = None
    fallback: FallbackOut | None = None


class WorkflowOut(BaseModel):
    id: str
    name: str
    trigger: str
    offset_minutes: int
    enabled: bool
    event_types: list[str]
    continue_when_blocked: bool
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    paused_reason: str | None = Field(
        default=None,
        description="Why the workflow was switched off when its account's plan changed; "
        "null when it was not, and again once it is enabled",
    )
    created_at: datetime
    updated_at: datetime
    steps: list[StepOut]


class GeneratedSecret(BaseModel):
    """A secret the save generated (a new step left it out): shown this once."""

    step: int
    field: str
    value: str


@dataclass(frozen=True)
class _Saving:
    """What a save stores: each step's id (the stored one it edits, or new) and settings as
    stored (secrets sealed), and the secrets it generated."""

    steps: list[tuple[str, dict[str, Any], dict[str, Any] | None]]  # id, sealed, fallback
    generated: list[GeneratedSecret]


def _stored_steps(
    spec: WorkflowIn, before: Sequence[WorkflowStep], by_position: bool
) -> tuple[list[WorkflowStep | None], list[FieldError]]:
    """The stored step each step of ``spec`` edits, or None for a new one: the one its ``id``
    names, else (``by_position``) the unclaimed one at its position with its action."""
    by_id = {s.id: s for s in before}
    claimed = {step.id for step in spec.steps if step.id is not None}
    matched: list[WorkflowStep | None] = []
    problems: list[FieldError] = []
    for i, step in enumerate(spec.steps):
        if step.id is None:
            same = next((s for s in before if s.position == i), None) if by_position else None
            keep = same is not None and same.action == step.action and same.id not in claimed
            matched.append(same if keep else None)
            continue
        stored = by_id.get(step.id)
        if stored is None:
            problems.append(FieldError(f"steps.{i}.id", f"this workflow has no step {step.id!r}"))
        elif stored.action != step.action:
            problems.append(
                FieldError(f"steps.{i}.id", f"step {step.id!r} is a {stored.action} step")
            )
            stored = None
        elif any(other.id == step.id for other in spec.steps[:i]):
            problems.append(FieldError(f"steps.{i}.id", f"step {step.id!r} is given twice"))
        matched.append(stored)
    return matched, problems


def _unsafe_by_position(
    model: type[BaseModel],
    step: StepIn,
    given: dict[str, Any],
    sealed: dict[str, Any],
    stored: WorkflowStep,
    before: Sequence[WorkflowStep],
) -> str | None:
    """Why a step matched by position only (no ``id``) may not keep a stored secret, or None.
    A position says little: steps reordered without ids would carry one step's secrets to
    another's URL. So a kept secret needs the match to be unambiguous (one stored step of that
    action) and the step's other settings unchanged."""
    secrets = secret_fields(model)
    if all(given.get(n) in (None, {}, step.settings.get(n)) for n in secrets):
        return None  # every secret is given anew (or none is stored): nothing is carried over
    if sum(s.action == step.action for s in before) > 1:
        return f"the workflow has more than one {step.action} step"

    def public(settings: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings.items() if k not in secrets}

    if public(sealed) != public(stored.settings):
        return "its other settings changed"
    return None


@checks_of_one_save()  # every template of a save checked within one time allowance
def _validate(
    hub: Hub, spec: WorkflowIn, before: Sequence[WorkflowStep] = (), by_position: bool = True
) -> _Saving:
    """Validate ``spec`` against the installed plugins, keeping the secrets of the stored steps
    (``before``) its steps edit; every problem named at once."""
    matched, problems = _stored_steps(spec, before, by_position)
    trigger = hub.registry.triggers.get(spec.trigger)
    if trigger is None:
        known = ", ".join(sorted(hub.registry.triggers))
        problems.append(FieldError("trigger", f"unknown trigger {spec.trigger!r}; known: {known}"))
    elif trigger.kind == "event" and spec.offset_minutes:
        problems.append(
            FieldError("offset_minutes", f"{spec.trigger} fires when the event arrives; no offset")
        )
    problems += _counted(hub, spec)
    saving = _Saving([], [])
    for i, (step, stored) in enumerate(zip(spec.steps, matched, strict=True)):
        action = _installed(hub, step.action, f"steps.{i}.action", problems)
        if action is None:
            continue
        if action.logic and step.when is not None:
            message = "a delay or filter step has no `when`: put the condition in a filter"
            problems.append(FieldError(f"steps.{i}.when", message))
        where = f"steps.{i}.settings"
        opened = _opened(hub, action, step.settings, stored.settings if stored else None, where)
        problems += opened.problems
        if opened.sealed is None:
            continue
        saving.generated.extend(
            GeneratedSecret(step=i, field=name, value=value) for name, value in opened.generated
        )
        if stored is not None and step.id is None:
            unsafe = _unsafe_by_position(
                action.settings, step, opened.given, opened.sealed, stored, before
            )
            if unsafe:
                problems.append(
                    FieldError(f"steps.{i}.id", f"send the step's id to keep its secrets: {unsafe}")
                )
                continue
        fallback = _fallback(hub, i, step, stored, saving, problems)
        saving.steps.append((stored.id if stored else new_id("wfs"), opened.sealed, fallback))
    if problems:
        raise InputError("the workflow is not valid", problems)
    return saving


def _counted(hub: Hub, spec: WorkflowIn) -> list[FieldError]:
    """At most MAX_ACTIONS steps that send; the logic steps come on top (MAX_STEPS in all)."""
    sending = [
        s for s in spec.steps if not getattr(hub.registry.actions.get(s.action), "logic", False)
    ]
    if len(sending) <= MAX_ACTIONS:
        return []
    message = (
        f"at most {MAX_ACTIONS} actions per workflow, got {len(sending)} "
        f"(delay and filter steps do not count; {MAX_STEPS} steps in all)"
    )
    return [FieldError("steps", message)]


def _installed(hub: Hub, name: str, where: str, problems: list[FieldError]) -> ActionType | None:
    action = hub.registry.actions.get(name)
    if action is None:
        installed = ", ".join(sorted(hub.registry.actions)) or "none"
        problems.append(
            FieldError(where, f"action {name!r} is not installed; installed actions: {installed}")
        )
    return action


@dataclass(frozen=True)
class _Opened:
    """One step's (or fallback's) settings as a save stores them: ``sealed`` (None when they
    are not valid: see ``problems``), the settings as given with the kept secrets filled in,
    and the (field, value) of each secret generated."""

    sealed: dict[str, Any] | None
    given: dict[str, Any]
    generated: list[tuple[str, str]]
    problems: list[FieldError]


def _opened(
    hub: Hub,
    action: ActionType,
    settings: dict[str, Any],
    stored: dict[str, Any] | None,
    where: str,
) -> _Opened:
    """Validate and seal ``settings`` for ``action``, keeping the secrets of the ``stored``
    settings it edits (None: new)."""
    try:
        kept = hub.sealer.secrets(action.settings, stored) if stored else None
    except ValueError as exc:
        # The secret key changed: the stored secrets are lost; a step giving every secret
        # anew is saved, any other would silently lose or regenerate one.
        # (A secret stored empty, e.g. no rotated-out webhook secret, has nothing to lose.)
        assert stored is not None  # only stored secrets are decrypted
        lost = [n for n in secret_fields(action.settings) if stored.get(n) is not None]
        if not all(name in settings for name in lost):
            return _Opened(None, settings, [], [FieldError(where, str(exc))])
        kept = None
    given, problems = with_kept_secrets(action.settings, settings, kept, where)
    try:
        valid = validate_input(action.settings, given)
    except ValidationError as exc:
        return _Opened(None, given, [], problems + pydantic_fields(exc, where))
    clear = revealed(valid)
    generated = [
        (name, clear[name])
        for name in secret_fields(action.settings)
        if name not in given and isinstance(clear[name], str)
    ]
    return _Opened(hub.sealer.seal(action.settings, valid), given, generated, problems)


def _fallback(
    hub: Hub,
    i: int,
    step: StepIn,
    stored: WorkflowStep | None,
    saving: _Saving,
    problems: list[FieldError],
) -> dict[str, Any] | None:
    """The step's fallback as stored ({"action", "settings" sealed}), keeping the secrets of
    the stored step's fallback of the same action."""
    if step.fallback is None:
        return None
    where = f"steps.{i}.fallback"
    action = _installed(hub, step.fallback.action, f"{where}.action", problems)
    if action is None:
        return None
    if action.logic or getattr(hub.registry.actions.get(step.action), "logic", False):
        message = "a fallback sends in a step's place: neither it nor its step is a logic step"
        problems.append(FieldError(f"{where}.action", message))
        return None
    before = stored.fallback if stored is not None else None
    kept = before["settings"] if before and before.get("action") == action.name else None
    opened = _opened(hub, action, step.fallback.settings, kept, f"{where}.settings")
    problems += opened.problems
    if opened.sealed is None:
        return None
    saving.generated.extend(
        GeneratedSecret(step=i, field=f"fallback.{name}", value=value)
        for name, value in opened.generated
    )
    return {"action": action.name, "settings": opened.sealed}


def _enforce_plan(
    hub: Hub, session: Session, account_id: str, spec: WorkflowIn, workflow_id: str | None
) -> None:
    """The plan's limits, on save and on enable: its actions, and its active workflows.
    The account row is locked so two enables cannot both take the last place."""
    account = session.get(Account, account_id, with_for_update=True)
    assert account is not None
    plan = hub.settings.plan(account.plan)
    problems = []
    named = [(f"steps.{i}.action", step.action) for i, step in enumerate(spec.steps)] + [
        (f"steps.{i}.fallback.action", step.fallback.action)
        for i, step in enumerate(spec.steps)
        if step.fallback is not None
    ]
    for where, name in named:
        action = hub.registry.actions.get(name)
        reason = (
            f"action {name!r} is not installed"
            if action is None
            else plans.why_not(account.plan, plan, action)
        )
        if reason:
            problems.append(FieldError(where, reason))
    if problems:
        raise InputError("the plan does not allow this workflow", problems, 403, "plan_limit")
    if spec.enabled and plan.active_workflows is not None:
        active = plans.active_count(session.connection(), account_id, excluding=workflow_id)
        if active >= plan.active_workflows:
            message = (
                f"the {account.plan} plan allows {plan.active_workflows} active workflows; "
                f"{active} are active"
            )
            raise InputError(message, [FieldError("enabled", message)], 403, "plan_limit")


def _spec_of(wf: Workflow) -> WorkflowIn:
    return WorkflowIn(
        name=wf.name,
        trigger=wf.trigger,
        offset_minutes=wf.offset_minutes,
        enabled=wf.enabled,
        event_types=wf.event_types,
        continue_when_blocked=wf.continue_when_blocked,
        steps=[
            StepIn(
                action=s.action,
                fallback=FallbackIn(action=s.fallback["action"]) if s.fallback else None,
            )
            for s in wf.steps
        ],
    )


def to_out(hub: Hub, wf: Workflow) -> WorkflowOut:
    steps = []
    for s in wf.steps:
        action = hub.registry.actions.get(s.action)
        fallback = None
        if s.fallback is not None:
            other = hub.registry.actions.get(s.fallback["action"])
            fallback = FallbackOut(
                action=s.fallback["action"],
                settings=masked(other.settings if other else None, s.fallback["settings"]),
            )
        steps.append(
            StepOut(
                id=s.id,
                position=s.position,
                action=s.action,
                settings=masked(action.settings if action else None, s.settings),
                when=s.when,
                fallback=fallback,
            )
        )
    return WorkflowOut(
        id=wf.id,
        name=wf.name,
        trigger=wf.trigger,
        offset_minutes=wf.offset_minutes,
        enabled=wf.enabled,
        event_types=wf.event_types,
        continue_when_blocked=wf.continue_when_blocked,
        conditions=wf.conditions,
        paused_reason=wf.paused_reason,
        created_at=wf.created_at,
        updated_at=wf.updated_at,
        steps=steps,
    )


def create(
    hub: Hub, account_id: str, spec: WorkflowIn, draft: str | None = None
) -> tuple[WorkflowOut, list[GeneratedSecret]]:
    """Store a workflow. Also returns the secrets generated for it (a signing secret left out):
    they must reach the user somehow, and this is the only time they are shown. ``draft``: the
    editor's draft it is created from, which creates one at most (drafts.AlreadyCreated)."""
    saving = _validate(hub, spec)
    now = hub.clock()
    wf = Workflow(
        id=new_id("wf"),
        account_id=account_id,
        name=spec.name,
        trigger=spec.trigger,
        offset_minutes=spec.offset_minutes,
        enabled=spec.enabled,
        event_types=spec.event_types,
        continue_when_blocked=spec.continue_when_blocked,
        conditions=conditions.to_json(spec.conditions),
        created_at=now,
        updated_at=now,
        steps=_steps(spec, saving),
    )
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        _enforce_plan(hub, session, account_id, spec, None)
        session.add(wf)
        session.flush()
        if draft is not None:
            drafts.claim(session, draft, wf.id)
        due_now = _replan(hub, session, wf)
    hub.enqueue(due_now)
    return to_out(hub, wf), saving.generated


def _steps(spec: WorkflowIn, saving: _Saving) -> list[WorkflowStep]:
    return [
        WorkflowStep(
            id=step_id,
            position=i,
            action=step.action,
            settings=sealed,
            when=conditions.to_json(step.when) if step.when else None,
            fallback=fallback,
        )
        for i, (step, (step_id, sealed, fallback)) in enumerate(
            zip(spec.steps, saving.steps, strict=True)
        )
    ]


def _replan(hub: Hub, session: Session, wf: Workflow) -> list[str]:
    """Keep a workflow's planned runs in line with it; returns runs due at once."""
    return bookings.replan_workflow(
        session.connection(), wf, hub.registry.triggers.get(wf.trigger), hub.clock()
    )


def _owned(session: Session, account_id: str, workflow_id: str) -> Workflow:
    wf = session.get(Workflow, workflow_id)
    if wf is None or wf.account_id != account_id:
        raise NotFound(f"no workflow {workflow_id!r}")
    return wf


def get(hub: Hub, account_id: str, workflow_id: str) -> WorkflowOut:
    with Session(hub.db) as session:
        return to_out(hub, _owned(session, account_id, workflow_id))


def exists(hub: Hub, workflow_id: str) -> bool:
    """Whether any account has workflow ``workflow_id`` (one not found for an account was
    deleted, or is another account's)."""
    with Session(hub.db) as session:
        return session.get(Workflow, workflow_id) is not None


def list_all(hub: Hub, account_id: str) -> list[WorkflowOut]:
    with Session(hub.db) as session:
        rows = session.scalars(
            select(Workflow).where(Workflow.account_id == account_id).order_by(Workflow.created_at)
        )
        return [to_out(hub, wf) for wf in rows]


def set_enabled(hub: Hub, account_id: str, workflow_id: str, enabled: bool) -> WorkflowOut:
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        wf = _owned(session, account_id, workflow_id)
        if enabled:
            _enforce_plan(
                hub, session, account_id, _spec_of(wf).model_copy(update={"enabled": True}), wf.id
            )
        due_now = switch(hub, session, wf, enabled)
    hub.enqueue(due_now)
    return to_out(hub, wf)


def switch(
    hub: Hub, session: Session, wf: Workflow, enabled: bool, paused_reason: str | None = None
) -> list[str]:
    """Enable or disable ``wf`` within ``session``'s transaction (no plan check: the caller's);
    its planned reminders follow (a disabled one's pending ones are cancelled). Enabling clears
    why it was paused; disabling records ``paused_reason`` when given (a user's own disable keeps
    the reason of an earlier pause). Returns the runs due at once, for the caller to enqueue
    after commit."""
    wf.enabled = enabled
    if enabled or paused_reason is not None:
        wf.paused_reason = paused_reason
    wf.updated_at = hub.clock()
    session.flush()
    return _replan(hub, session, wf)


def update(
    hub: Hub, account_id: str, workflow_id: str, spec: WorkflowIn, by_position: bool = True
) -> tuple[WorkflowOut, list[GeneratedSecret]]:
    """Replace a workflow's definition. A step that edits a stored one (see ``_stored_steps``)
    keeps its id and the secrets not given anew; a new step's generated secrets are returned,
    as by ``create``. Planned runs follow (a new offset moves them); runs already under way
    keep the steps they started with."""
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        wf = _owned(session, account_id, workflow_id)
        saving = _validate(hub, spec, wf.steps, by_position)
        _enforce_plan(hub, session, account_id, spec, wf.id)
        wf.steps.clear()
        session.flush()  # old positions go before new ones arrive
        wf.name, wf.trigger, wf.offset_minutes = spec.name, spec.trigger, spec.offset_minutes
        wf.enabled, wf.updated_at = spec.enabled, hub.clock()
        if wf.enabled:
            wf.paused_reason = None  # saved enabled: the pause is over
        wf.event_types, wf.continue_when_blocked = spec.event_types, spec.continue_when_blocked
        wf.conditions = conditions.to_json(spec.conditions)
        wf.steps.extend(_steps(spec, saving))
        session.flush()
        due_now = _replan(hub, session, wf)
    hub.enqueue(due_now)
    return to_out(hub, wf), saving.generated


class RotatedSecret(BaseModel):
    """A step's new signing secret (shown this once) and until when the old one still signs."""

    workflow_id: str
    position: int
    field: str = Field(description="The settings field that holds the secret")
    secret: str = Field(description="The new secret: shown this once, stored encrypted")
    previous_valid_until: datetime = Field(
        description="Until then deliveries carry a signature with the old secret too"
    )


def rotate_secret(
    hub: Hub, account_id: str, workflow_id: str, position: int, until: datetime | None = None
) -> RotatedSecret:
    """Give the step at ``position`` a new signing secret (``ActionType.rotate_secret``), the
    old one kept signing until ``until`` (default: ``endpoints.ROTATION_WINDOW`` from now);
    stored sealed like any save. A 409 for a step whose action has no secret to rotate."""
    until = until or hub.clock() + endpoints.ROTATION_WINDOW
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        # Locked: two rotations at once must not both start from the same old secret.
        wf = session.get(Workflow, workflow_id, with_for_update=True)
        if wf is None or wf.account_id != account_id:
            raise NotFound(f"no workflow {workflow_id!r}")
        step = next((s for s in wf.steps if s.position == position), None)
        if step is None:
            raise NotFound(f"workflow {workflow_id!r} has no step at position {position}")
        action = hub.registry.actions.get(step.action)
        if action is None or action.rotate_secret is None:
            message = f"a {step.action} step has no signing secret to rotate"
            raise InputError(message, [FieldError("position", message)], 409, "nothing_to_rotate")
        opened = hub.sealer.open(action.settings, step.settings)
        before = revealed(opened)
        # Validated as a save validates, then sealed as a save seals.
        settings = validate_input(action.settings, revealed(action.rotate_secret(opened, until)))
        after = revealed(settings)
        [(name, secret)] = [
            (name, value)
            for name in secret_fields(action.settings)
            if isinstance(value := after.get(name), str)
            and value != before.get(name)
            and value not in before.values()
        ]
        step.settings = hub.sealer.seal(action.settings, settings)
        wf.updated_at = hub.clock()
        # Runs under way copied the step when they started: their next attempts sign as a
        # new delivery would, with both secrets.
        conn = session.connection()
        copies = conn.execute(
            select(RunStep.id, RunStep.settings)
            .join(Run, Run.id == RunStep.run_id)
            .where(
                Run.workflow_id == wf.id,
                Run.status.in_(RUN_UNFINISHED),
                RunStep.position == position,
                RunStep.action == step.action,
                RunStep.status.in_(STEP_OPEN),
            )
        ).all()
        for copy in copies:
            refreshed = with_current_secrets(hub, step.action, copy.settings, step.settings)
            conn.execute(
                update_rows(RunStep).where(RunStep.id == copy.id).values(settings=refreshed)
            )
    return RotatedSecret(
        workflow_id=workflow_id,
        position=position,
        field=name,
        secret=secret,
        previous_valid_until=until,
    )


def with_current_secrets(
    hub: Hub, action_name: str, copy: dict[str, Any], current: dict[str, Any]
) -> dict[str, Any]:
    """A run's copy of a step's stored settings with the workflow step's ``current`` secrets,
    and the fields only an action of its own sets (hidden from the form: a rotated-out secret
    and its end), when the action rotates secrets and both go to the same endpoint: a retry or
    a replay after "Rotate secret" is signed as a new delivery would be, never with a secret
    the account replaced only."""
    action = hub.registry.actions.get(action_name)
    if action is None or action.rotate_secret is None:
        return copy
    try:
        copied = hub.sealer.open(action.settings, copy)
        now = hub.sealer.open(action.settings, current)
    except ValueError:  # no longer valid: the engine reports it when it runs
        return copy
    if action.endpoint is not None and action.endpoint(copied) != action.endpoint(now):
        return copy
    managed = set(secret_fields(action.settings)) | {
        name for name, info in action.settings.model_fields.items() if is_hidden(info)
    }
    merged = copied.model_copy(update={name: getattr(now, name) for name in managed})
    return hub.sealer.seal(action.settings, merged)


def delete(hub: Hub, account_id: str, workflow_id: str) -> None:
    """Delete a workflow; its pending runs are cancelled, its run log stays."""
    with Session(hub.db) as session, session.begin():
        wf = _owned(session, account_id, workflow_id)
        bookings.cancel(
            session.connection(), Run.workflow_id == wf.id, "the workflow was deleted", hub.clock()
        )
        session.delete(wf)


class TemplateOut(BaseModel):
    name: str
    title: str
    description: str
    trigger: str
    offset_minutes: int
    actions: list[str]


def plan_usage(hub: Hub, account_id: str) -> plans.PlanUsage:
    """The account's plan against this hub's plan settings and installed actions."""
    with hub.db.connect() as conn:
        return plans.limits(conn, account_id, hub.settings.plan, hub.registry.actions.values())


def list_templates(hub: Hub, account_id: str) -> list[TemplateOut]:
    """The ready-made workflows whose actions are installed and the account's plan allows."""
    usage = plan_usage(hub, account_id)
    return [
        TemplateOut(
            name=t.name,
            title=t.title,
            description=t.description,
            trigger=t.trigger,
            offset_minutes=t.offset_minutes,
            actions=[s.action for s in t.steps],
        )
        for t in hub.registry.templates.values()
        if all(s.action in usage.allowed_actions for s in t.steps)
    ]


def create_from_template(
    hub: Hub, account_id: str, template_name: str
) -> tuple[WorkflowOut, list[GeneratedSecret]]:
    """An ordinary workflow, disabled, from a template: edit it, test it, then enable it."""
    if template_name not in {t.name for t in list_templates(hub, account_id)}:
        raise NotFound(f"no template {template_name!r} for this account")
    t = hub.registry.templates[template_name]
    spec = WorkflowIn(
        name=t.title,
        trigger=t.trigger,
        offset_minutes=t.offset_minutes,
        steps=[StepIn(action=s.action, settings=dict(s.settings)) for s in t.steps],
    )
    return create(hub, account_id, spec)
