"""Test before you enable: a dry run renders every step against a sample (or given) booking and
shows what would be sent, sending nothing; a live run sends to test recipients, marked as a
test in the run log and counted against no limit."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import conditions, credits, plans
from .actions import ActionContext, ActionType, Problem, WorkflowRef
from .crypto import MASK, with_kept_secrets
from .engine import Hub
from .errors import FieldError, InputError, NotFound, pydantic_fields
from .inputs import validate_input
from .matching import StepSpec
from .models import EVENT_TYPES, BookingEvent, sample_event
from .services import DryRunServices
from .storage import Account, Integration, Workflow, WorkflowStep
from .template_budget import TemplateBudgetError
from .templating import TemplateError, is_template
from .workflows import StepIn, WorkflowIn


class ProblemOut(BaseModel):
    """Why a step would not be sent, and how to fix it (``link``: the page to fix it on)."""

    message: str
    fix: str
    link: str | None = None


class StepPreview(BaseModel):
    position: int
    action: str
    title: str
    # How to draw ``output``: an ActionType.preview_kind ("email", "sms"…), None for a list.
    kind: str | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    # The code a send would fail with, where the dry run knows it: "template_budget".
    error_code: str | None = None
    # Would a live run send it? Never true while there is a problem or an error.
    ready: bool = False
    problems: list[ProblemOut] = Field(default_factory=list)


class TestRunOut(BaseModel):
    workflow_id: str | None
    mode: str
    event: dict[str, Any]
    steps: list[StepPreview] = Field(default_factory=list)
    run_id: str | None = None


MAX_EMAIL = 320  # RFC 3696's longest address
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
NO_RECIPIENT = "Enter an email address or a phone number to send to."


def phone_digits(text: str) -> str:
    """A phone number as typed ("+1 (415) 555-0100") as it is stored and dialled."""
    return re.sub(r"[\s().-]", "", text)


def email_problem(email: str) -> str | None:
    """What is wrong with a test recipient's email address, in words, or None."""
    if len(email) > MAX_EMAIL:
        return f"An email address has at most {MAX_EMAIL} characters."
    if not EMAIL.fullmatch(email):
        return "Enter an email address like you@example.com."
    return None


def phone_problem(phone: str) -> str | None:
    """What is wrong with a test recipient's phone number (its digits), in words, or None."""
    if not PHONE.fullmatch(phone):
        return "Enter the phone number in international format, like +14155550123."
    return None


def recipient_errors(email: str | None, phone: str | None) -> list[FieldError]:
    """What is wrong with test recipients (the phone as ``phone_digits``), each naming its
    field as the dashboard's forms do (``test_email``, ``test_phone``)."""
    problems = [
        ("test_email", email_problem(email) if email is not None else None),
        ("test_phone", phone_problem(phone) if phone is not None else None),
    ]
    return [FieldError(name, message) for name, message in problems if message]


class TestRecipients(BaseModel):
    """Who a live test reaches: they replace the booking's invitee and host contacts, and
    every person a step names itself (``ActionType.for_test``). A live test needs one of
    ``email`` and ``phone``."""

    email: str | None = Field(None, description="An email address like you@example.com")
    phone: str | None = Field(None, description="In international format, like +14155550123")
    name: str = Field("Test Recipient", max_length=200)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        problem = email_problem(value) if value is not None else None
        if problem:
            raise PydanticCustomError("email", problem)
        return value

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # not a string: pydantic names it
        digits = phone_digits(value)
        problem = phone_problem(digits)
        if problem:
            raise PydanticCustomError("phone", problem)
        return digits


def _workflow(session: Session, account_id: str, workflow_id: str) -> Workflow:
    wf = session.get(Workflow, workflow_id)
    if wf is None or wf.account_id != account_id:
        raise NotFound(f"no workflow {workflow_id!r}")
    return wf


def sample_for(trigger: str) -> BookingEvent:
    """A sample booking event for a workflow's trigger (time triggers plan from a booking)."""
    return sample_event(trigger if trigger in EVENT_TYPES else "booking.created")


def _generic_preview(settings: BaseModel, ctx: ActionContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, str) and is_template(field):
            out[name] = ctx.render(value, html=name == "html")
        else:
            out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return out


def _masked(value: Any) -> Any:
    """A preview with every secret in it (a signing secret, a header value…) masked, whichever
    plugin made it."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def _plan_problem(hub: Hub, plan_name: str, action: ActionType) -> Problem | None:
    if hub.settings.plan(plan_name).allows(action):
        return None
    including = plans.including(hub.settings.plans, action)
    fix = (
        f"Upgrade to {' or '.join(name.capitalize() for name in including)} to use it."
        if including
        else "No plan on this server includes it; remove the step."
    )
    return Problem(
        f"Your {plan_name.capitalize()} plan does not include {action.title}.", fix, "/account#plan"
    )


def _credits_problem(hub: Hub, plan_name: str, action: ActionType) -> Problem | None:
    """A step that takes credits its plan has none of would end blocked by plan every time."""
    kind = credits.kind_of(action)
    plan = hub.settings.plan(plan_name)
    if kind is None or not plan.allows(action) or plan.credits(kind) != 0:
        return None
    having = [
        name.capitalize()
        for name, p in hub.settings.plans.items()
        if p.allows(action) and p.credits(kind) != 0
    ]
    fix = (
        f"Move to a plan with SMS credits: {' or '.join(having)}."
        if having
        else "No plan on this server includes SMS credits; remove the step."
    )
    return Problem(
        f"Your {plan_name.capitalize()} plan includes no SMS credits, so this step would end "
        "blocked by plan.",
        fix,
        "/account#plan",
    )


def _not_connected(integration: str, message: str) -> Problem:
    title = integration.capitalize()
    return Problem(
        message.format(title=title),
        f"Connect {title} in Settings.",
        f"/settings/integrations#{integration}",
    )


@dataclass(frozen=True)
class _Account:
    """What readiness reads of the account: its plan and its integrations as stored."""

    plan: str
    integrations: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, session: Session, account_id: str) -> _Account:
        account = session.get(Account, account_id)
        if account is None:
            raise NotFound(f"no account {account_id!r}")
        rows = session.execute(
            select(Integration.name, Integration.settings).where(
                Integration.account_id == account_id
            )
        )
        return cls(account.plan, {row.name: row.settings for row in rows})


def _credentials(
    hub: Hub, action: ActionType, account: _Account
) -> tuple[BaseModel | None, Problem | None]:
    stored = account.integrations.get(action.integration or "")
    if action.credentials is None or action.integration is None or stored is None:
        return None, None
    try:
        return hub.sealer.open(action.credentials, stored), None
    except ValueError:
        return None, _not_connected(
            action.integration, "The {title} connection can no longer be read."
        )


def _check(
    hub: Hub, action: ActionType, account: _Account, ctx: ActionContext
) -> tuple[ActionContext, list[Problem]]:
    """Everything that would stop this step from being sent: the plan, the integration, and
    what the plugin's own ``check`` finds. Returns the context with the credentials in it."""
    found = [_plan_problem(hub, account.plan, action), _credits_problem(hub, account.plan, action)]
    problems = [p for p in found if p]
    credentials, unreadable = _credentials(hub, action, account)
    ctx = replace(ctx, credentials=credentials)
    if unreadable:
        problems.append(unreadable)
    elif action.integration and credentials is None and action.needs_connection(ctx.settings):
        problems.append(_not_connected(action.integration, "{title} is not connected."))
    if action.check is not None:
        problems += action.check(ctx)
    return ctx, problems


def preview(
    hub: Hub, action: ActionType, settings: BaseModel, account: _Account, ctx: ActionContext
) -> StepPreview:
    """One step's dry run: what it would send and whether it is ready to be sent."""
    step = StepPreview(
        position=ctx.position, action=action.name, title=action.title, kind=action.preview_kind
    )
    try:
        ctx, problems = _check(hub, action, account, replace(ctx, settings=settings))
        step.problems = [ProblemOut(**asdict(p)) for p in problems]
        output = action.preview(ctx) if action.preview else _generic_preview(settings, ctx)
        step.output = _masked(output)
    except TemplateBudgetError as exc:
        step.error, step.error_code = str(exc), "template_budget"
    except (TemplateError, ValueError) as exc:
        step.error = str(exc)
    step.ready = step.error is None and not step.problems
    return step


def _not_installed(position: int, action: str) -> StepPreview:
    return StepPreview(
        position=position,
        action=action,
        title=action,
        error=f"action {action!r} is not installed",
        problems=[
            ProblemOut(
                message="This kind of step is not installed on this server.",
                fix="Contact your administrator, or remove the step.",
            )
        ],
    )


def _context(
    hub: Hub,
    event: BookingEvent,
    trigger: str,
    workflow: WorkflowRef,
    account_id: str,
    plan: str,
    i: int,
) -> ActionContext:
    services = DryRunServices(
        hub,
        account_id=account_id,
        plan=plan,
        step_id=f"stp_dry{i}",
        booking_uid=event.booking.uid,
        occurred_at=event.occurred_at,
    )
    return ActionContext(
        event=event,
        trigger=trigger,
        workflow=workflow,
        account_id=account_id,
        plan=plan,
        run_id="run_dry",
        step_id=f"stp_dry{i}",
        position=i,
        attempt=1,
        settings=None,
        test=True,
        services=services,
    )


def dry_run(
    hub: Hub, account_id: str, workflow_id: str, event: BookingEvent | None = None
) -> TestRunOut:
    """The saved workflow's dry run."""
    with Session(hub.db) as session:
        wf = _workflow(session, account_id, workflow_id)
        account = _Account.load(session, account_id)
        event = event or sample_for(wf.trigger)
        out = TestRunOut(workflow_id=wf.id, mode="dry_run", event=event.model_dump(mode="json"))
        ref = WorkflowRef(wf.id, wf.name)
        for step in wf.steps:
            action = hub.registry.actions.get(step.action)
            if action is None:
                out.steps.append(_not_installed(step.position, step.action))
                continue
            ctx = _context(hub, event, wf.trigger, ref, account_id, account.plan, step.position)
            try:
                settings = hub.sealer.open(action.settings, step.settings)
            except ValueError as exc:
                out.steps.append(
                    StepPreview(
                        position=step.position,
                        action=action.name,
                        title=action.title,
                        error=f"the step's settings are no longer valid: {exc}",
                    )
                )
                continue
            out.steps.append(preview(hub, action, settings, account, ctx))
    return out


def _draft_settings(
    hub: Hub, action: ActionType, step: StepIn, stored: WorkflowStep | None, where: str
) -> BaseModel:
    """A draft step's settings, a secret left out keeping the stored step's (raises
    ValueError saying what is wrong)."""
    kept = hub.sealer.secrets(action.settings, stored.settings) if stored else None
    given, masks = with_kept_secrets(action.settings, step.settings, kept, where)
    if masks:
        raise ValueError(masks[0].message)
    try:
        return validate_input(action.settings, given)
    except ValidationError as exc:
        raise ValueError("; ".join(e.message for e in pydantic_fields(exc))) from None


def dry_run_draft(
    hub: Hub,
    account_id: str,
    spec: WorkflowIn,
    workflow_id: str | None = None,
    event: BookingEvent | None = None,
) -> TestRunOut:
    """The dry run of a workflow as edited, not saved. ``workflow_id``: the stored workflow it
    edits, whose steps (matched by ``id``) keep their secrets where the draft leaves them out."""
    with Session(hub.db) as session:
        before = _workflow(session, account_id, workflow_id).steps if workflow_id else []
        account = _Account.load(session, account_id)
    stored = {s.id: s for s in before}
    event = event or sample_for(spec.trigger)
    out = TestRunOut(workflow_id=workflow_id, mode="dry_run", event=event.model_dump(mode="json"))
    ref = WorkflowRef(workflow_id or "wf_draft", spec.name)
    for i, step in enumerate(spec.steps):
        action = hub.registry.actions.get(step.action)
        if action is None:
            out.steps.append(_not_installed(i, step.action))
            continue
        edits = stored.get(step.id) if step.id else None
        try:
            settings = _draft_settings(
                hub,
                action,
                step,
                edits if edits and edits.action == step.action else None,
                f"steps.{i}.settings",
            )
        except ValueError as exc:
            out.steps.append(
                StepPreview(position=i, action=action.name, title=action.title, error=str(exc))
            )
            continue
        ctx = _context(hub, event, spec.trigger, ref, account_id, account.plan, i)
        out.steps.append(preview(hub, action, settings, account, ctx))
    return out


def _reaching_the_tester(hub: Hub, action: ActionType, settings: BaseModel) -> dict[str, Any]:
    """A step's settings sealed for a live test: every person it names itself (fixed
    addresses, a fixed number) replaced by the booking's people, who are the tester."""
    if action.for_test is not None:
        settings = action.for_test(settings)
    return hub.sealer.seal(action.settings, settings)


def _live_steps(hub: Hub, stored: list[WorkflowStep], draft: WorkflowIn | None) -> list[StepSpec]:
    """The (action, sealed settings) a live test runs: the draft's (a secret it leaves out
    kept from the stored step it edits), else the saved steps. Raises InputError naming a
    draft step that cannot be sent as it is."""
    steps: list[StepSpec] = []
    if draft is None:
        for saved in stored:
            action = hub.registry.actions.get(saved.action)
            try:
                opened = hub.sealer.open(action.settings, saved.settings) if action else None
            except ValueError:
                opened = None  # the run fails this step as a real run would, saying why
            sealed = _reaching_the_tester(hub, action, opened) if action and opened else None
            steps.append(StepSpec(saved.action, sealed or saved.settings, saved.when))
        return steps
    by_id = {s.id: s for s in stored}
    for i, step in enumerate(draft.steps):
        action = hub.registry.actions.get(step.action)
        where = f"steps.{i}.settings"
        if action is None:
            missing = FieldError(f"steps.{i}.action", "This kind of step is not installed.")
            raise InputError("the draft cannot be sent", [missing])
        edits = by_id.get(step.id) if step.id else None
        try:
            settings = _draft_settings(
                hub, action, step, edits if edits and edits.action == step.action else None, where
            )
        except ValueError as exc:
            raise InputError("the draft cannot be sent", [FieldError(where, str(exc))]) from None
        when = conditions.to_json(step.when) if step.when else None
        steps.append(StepSpec(step.action, _reaching_the_tester(hub, action, settings), when))
    return steps


def live(
    hub: Hub,
    account_id: str,
    workflow_id: str,
    recipients: TestRecipients,
    event: BookingEvent | None = None,
    draft: WorkflowIn | None = None,
) -> TestRunOut:
    """Run the workflow now, for real, with the booking's people and every person a step names
    replaced by ``recipients``; ``draft``: the workflow as edited (not saved) to run instead of
    the saved version. Raises InputError when there is nobody to send to."""
    if recipients.email is None and recipients.phone is None:
        raise InputError("a live test needs a recipient", [FieldError("recipients", NO_RECIPIENT)])
    with Session(hub.db) as session:
        wf = _workflow(session, account_id, workflow_id)
        trigger, name = wf.trigger, wf.name
        steps = _live_steps(hub, list(wf.steps), draft)
    if draft is not None:
        trigger, name = draft.trigger, draft.name
    base = event or sample_for(trigger)
    person = {"name": recipients.name, "email": recipients.email, "phone": recipients.phone}
    booking = base.booking.model_dump(mode="json")
    for role in ("invitee", "host"):
        booking[role] = {**(booking.get(role) or {}), **person}
    booking["invitees"], booking["hosts"] = [], []
    test_event = BookingEvent.model_validate({**base.model_dump(mode="json"), "booking": booking})
    run_id = hub.start_test_run(account_id, workflow_id, name, trigger, test_event, steps)
    return TestRunOut(
        workflow_id=workflow_id,
        mode="live",
        event=test_event.model_dump(mode="json"),
        run_id=run_id,
    )
