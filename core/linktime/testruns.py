"""Test before you enable: a dry run renders every step against a sample (or given) booking and
shows what would be sent, sending nothing; a live run sends to test recipients, marked as a
test in the run log and counted against no limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import bookings, conditions, credits, plans
from .actions import ActionContext, ActionType, Problem, WorkflowRef
from .conditions import Facts, Live, Node
from .crypto import MASK, with_kept_secrets
from .engine import Hub
from .errors import FieldError, InputError, NotFound, pydantic_fields
from .inputs import validate_input
from .logic import DelaySettings, FilterSettings
from .matching import StepSpec
from .models import EVENT_TYPES, BookingEvent, sample_event
from .services import DryRunServices
from .storage import Account, Integration, Workflow, WorkflowStep
from .template_budget import TemplateBudgetError
from .templating import TemplateError, is_template
from .workflows import FallbackIn, WorkflowIn


class ProblemOut(BaseModel):
    """Why a step would not be sent, and how to fix it (``link``: the page to fix it on)."""

    message: str
    fix: str
    link: str | None = None


Outcome = Literal["runs", "waits", "goes_on", "stops", "skipped", "not_reached", "not_run"]


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
    # The path a run would take for this booking: what happens at this step and why.
    outcome: Outcome = "runs"
    path: str = ""
    # What the step sends instead if it fails for good (``path``: "If it fails: …").
    fallback: StepPreview | None = None


class TestRunOut(BaseModel):
    workflow_id: str | None
    mode: str
    event: dict[str, Any]
    steps: list[StepPreview] = Field(default_factory=list)
    run_id: str | None = None
    # The workflow's own conditions for this booking, in words ("" when it has none), and
    # whether a run would start at all (false when they do not hold).
    path: str = ""
    would_run: bool = True


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


def facts_for(hub: Hub, account_id: str, event: BookingEvent, standing: bool) -> Facts:
    """What a dry run's conditions see: one of the account's bookings (``standing``) as it
    stands now, else the sample as its event describes it."""
    now = None
    if standing:
        with hub.db.connect() as conn:
            now = bookings.now_standing(conn, account_id, event.booking.uid)
    return Facts(event, now.live if now else Live.of_event(event), hub.clock())


@dataclass
class _Path:
    """The path a run would take, step after step: the workflow's own conditions that do not
    hold start none, a filter that does not hold stops it."""

    facts: Facts
    stopped_at: int | None = None
    not_run: str | None = None  # why no step runs: the workflow's conditions did not hold

    def start(self, hub: Hub, out: TestRunOut, trigger: str, nodes: list[Node]) -> None:
        """Say in ``out.path`` whether a run would start for this booking: ingest checks an
        event trigger's conditions; a reminder checks them when it fires, against the booking
        as it is then, so for one the dry run checks them against this booking and says so."""
        if not nodes:
            return
        verdict = conditions.evaluate(nodes, self.facts, "conditions")
        trigger_type = hub.registry.triggers.get(trigger)
        said = "the workflow's conditions"
        if trigger_type is not None and trigger_type.kind == "time":
            said += (
                " are checked when the reminder fires, against the booking as it is then;"
                " for this booking they"
            )
            said += " hold" if verdict.held else f" do not hold: {verdict.reason()}"
        else:
            said += " hold" if verdict.held else f" did not hold: {verdict.reason()}"
        if verdict.held:
            out.path = f"Runs: {said}"
            return
        self.not_run = f"the workflow's conditions did not hold: {verdict.reason()}"
        out.would_run = False
        out.path = f"Would not run: {said}"

    def mark(self, step: StepPreview, settings: BaseModel | None, when: list[Node] | None) -> None:
        """Say what happens at ``step`` (``settings``: its own, None when they are not valid)."""
        if self.not_run is not None:
            step.outcome, step.path = "not_run", f"Not run: {self.not_run}"
        elif self.stopped_at is not None:
            step.outcome = "not_reached"
            step.path = f"Not reached: the run stops at step {self.stopped_at + 1}"
        elif isinstance(settings, DelaySettings):
            step.outcome = "waits"
            step.path = f"Waits {settings.describe()} (a test send does not wait)"
        elif isinstance(settings, FilterSettings):
            where = f"steps.{step.position}.settings.conditions"
            verdict = conditions.evaluate(settings.conditions, self.facts, where)
            if verdict.held:
                step.outcome, step.path = "goes_on", "Filter: goes on — every condition held"
            else:
                self.stopped_at = step.position
                step.outcome, step.path = "stops", f"Filter: stops here: {verdict.reason()}"
        elif when:
            verdict = conditions.evaluate(when, self.facts, f"steps.{step.position}.when")
            if verdict.held:
                step.path = "Runs: its conditions held"
            else:
                step.outcome = "skipped"
                step.path = f"Skipped: its conditions did not hold: {verdict.reason()}"
        else:
            step.path = "Runs"
        if settings is not None and isinstance(settings, DelaySettings | FilterSettings):
            step.output = {}  # the path says it


def _fallback_preview(
    hub: Hub,
    account: _Account,
    ctx: ActionContext,
    name: str,
    opened: Opener,
) -> StepPreview:
    """The dry run of a step's fallback (``opened``: its settings, or ValueError), its path
    "If it fails: email.send to …"."""
    action = hub.registry.actions.get(name)
    if action is None:
        step = _not_installed(ctx.position, name)
    else:
        try:
            step = preview(hub, action, opened(action), account, ctx)
        except ValueError as exc:
            step = StepPreview(
                position=ctx.position, action=name, title=action.title, error=str(exc)
            )
    to = step.output.get("to")
    shown = ", ".join(map(str, to)) if isinstance(to, list) else str(to or "")
    step.path = f"If it fails: {name}" + (f" to {shown}" if shown else "")
    return step


def dry_run(
    hub: Hub,
    account_id: str,
    workflow_id: str,
    event: BookingEvent | None = None,
    *,
    standing: bool = False,
) -> TestRunOut:
    """The saved workflow's dry run, each step with the path a run would take for ``event``
    (``standing``: one of the account's bookings, its conditions seen as it stands now)."""
    with Session(hub.db) as session:
        wf = _workflow(session, account_id, workflow_id)
        account = _Account.load(session, account_id)
        event = event or sample_for(wf.trigger)
        out = TestRunOut(workflow_id=wf.id, mode="dry_run", event=event.model_dump(mode="json"))
        path = _Path(facts_for(hub, account_id, event, standing))
        path.start(hub, out, wf.trigger, conditions.parse(wf.conditions or []))
        ref = WorkflowRef(wf.id, wf.name)
        for step in wf.steps:
            action = hub.registry.actions.get(step.action)
            if action is None:
                out.steps.append(_not_installed(step.position, step.action))
                path.mark(out.steps[-1], None, None)
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
                path.mark(out.steps[-1], None, None)
                continue
            shown = preview(hub, action, settings, account, ctx)
            path.mark(shown, settings, conditions.parse(step.when) if step.when else None)
            fallback = step.fallback
            if fallback is not None:
                shown.fallback = _fallback_preview(
                    hub,
                    account,
                    ctx,
                    fallback["action"],
                    _sealed_opener(hub, fallback["settings"]),
                )
            out.steps.append(shown)
    return out


def _draft_settings(
    hub: Hub,
    action: ActionType,
    settings: dict[str, Any],
    stored: dict[str, Any] | None,
    where: str,
) -> BaseModel:
    """A draft step's (or fallback's) ``settings``, a secret left out keeping the ``stored``
    (sealed) ones' (raises ValueError saying what is wrong)."""
    kept = hub.sealer.secrets(action.settings, stored) if stored else None
    given, masks = with_kept_secrets(action.settings, settings, kept, where)
    if masks:
        raise ValueError(masks[0].message)
    try:
        return validate_input(action.settings, given)
    except ValidationError as exc:
        raise ValueError("; ".join(e.message for e in pydantic_fields(exc))) from None


Opener = Callable[[ActionType], BaseModel]


def _sealed_opener(hub: Hub, sealed: dict[str, Any]) -> Opener:
    """Stored settings opened for the action they belong to (ValueError when unreadable)."""
    return lambda action: hub.sealer.open(action.settings, sealed)


def _draft_opener(
    hub: Hub, settings: dict[str, Any], stored: dict[str, Any] | None, where: str
) -> Opener:
    """A draft's settings validated for the action they belong to (``_draft_settings``)."""
    return lambda action: _draft_settings(hub, action, settings, stored, where)


def _stored_of(stored: WorkflowStep | None, action: str) -> dict[str, Any] | None:
    """The stored step's settings when it is of ``action`` (a draft step editing it)."""
    return stored.settings if stored is not None and stored.action == action else None


def _stored_fallback(stored: WorkflowStep | None, fallback: FallbackIn) -> dict[str, Any] | None:
    """The stored step's fallback settings when the draft's fallback is the same action."""
    before = stored.fallback if stored is not None else None
    return before["settings"] if before and before["action"] == fallback.action else None


def dry_run_draft(
    hub: Hub,
    account_id: str,
    spec: WorkflowIn,
    workflow_id: str | None = None,
    event: BookingEvent | None = None,
    *,
    standing: bool = False,
) -> TestRunOut:
    """The dry run of a workflow as edited, not saved. ``workflow_id``: the stored workflow it
    edits, whose steps (matched by ``id``) keep their secrets where the draft leaves them out;
    ``standing`` as for ``dry_run``."""
    with Session(hub.db) as session:
        before = _workflow(session, account_id, workflow_id).steps if workflow_id else []
        account = _Account.load(session, account_id)
    stored = {s.id: s for s in before}
    event = event or sample_for(spec.trigger)
    out = TestRunOut(workflow_id=workflow_id, mode="dry_run", event=event.model_dump(mode="json"))
    path = _Path(facts_for(hub, account_id, event, standing))
    path.start(hub, out, spec.trigger, spec.conditions)
    ref = WorkflowRef(workflow_id or "wf_draft", spec.name)
    for i, step in enumerate(spec.steps):
        action = hub.registry.actions.get(step.action)
        if action is None:
            out.steps.append(_not_installed(i, step.action))
            path.mark(out.steps[-1], None, None)
            continue
        edits = stored.get(step.id) if step.id else None
        try:
            settings = _draft_settings(
                hub, action, step.settings, _stored_of(edits, step.action), f"steps.{i}.settings"
            )
        except ValueError as exc:
            out.steps.append(
                StepPreview(position=i, action=action.name, title=action.title, error=str(exc))
            )
            path.mark(out.steps[-1], None, step.when)
            continue
        ctx = _context(hub, event, spec.trigger, ref, account_id, account.plan, i)
        shown = preview(hub, action, settings, account, ctx)
        path.mark(shown, settings, step.when)
        fallback = step.fallback
        if fallback is not None:
            shown.fallback = _fallback_preview(
                hub,
                account,
                ctx,
                fallback.action,
                _draft_opener(
                    hub,
                    fallback.settings,
                    _stored_fallback(edits, fallback),
                    f"steps.{i}.fallback.settings",
                ),
            )
        out.steps.append(shown)
    return out


def _reaching_the_tester(hub: Hub, action: ActionType, settings: BaseModel) -> dict[str, Any]:
    """A step's settings sealed for a live test: every person it names itself (fixed
    addresses, a fixed number) replaced by the booking's people, who are the tester."""
    if action.for_test is not None:
        settings = action.for_test(settings)
    return hub.sealer.seal(action.settings, settings)


def _saved_for_tester(hub: Hub, name: str, sealed: dict[str, Any]) -> dict[str, Any]:
    """A saved step's (or fallback's) sealed settings made to reach the tester; as stored when
    they cannot be read (the run fails the step as a real run would, saying why)."""
    action = hub.registry.actions.get(name)
    try:
        opened = hub.sealer.open(action.settings, sealed) if action else None
    except ValueError:
        opened = None
    return _reaching_the_tester(hub, action, opened) if action and opened else sealed


def _draft_for_tester(
    hub: Hub, name: str, settings: dict[str, Any], stored: dict[str, Any] | None, where: str
) -> dict[str, Any]:
    """A draft step's (or fallback's) settings sealed to reach the tester (raises InputError
    naming the step's field when it cannot be sent as it is)."""
    action = hub.registry.actions.get(name)
    if action is None:
        missing = FieldError(
            where.rpartition(".")[0] + ".action", "This kind of step is not installed."
        )
        raise InputError("the draft cannot be sent", [missing])
    try:
        opened = _draft_settings(hub, action, settings, stored, where)
    except ValueError as exc:
        raise InputError("the draft cannot be sent", [FieldError(where, str(exc))]) from None
    return _reaching_the_tester(hub, action, opened)


def _live_steps(hub: Hub, stored: list[WorkflowStep], draft: WorkflowIn | None) -> list[StepSpec]:
    """The steps a live test runs, with their ``when`` and fallback: the draft's (a secret it
    leaves out kept from the stored step it edits), else the saved steps; every step's and
    fallback's settings made to reach the tester. Raises InputError naming a draft step that
    cannot be sent as it is."""
    steps: list[StepSpec] = []
    if draft is None:
        for saved in stored:
            fallback = saved.fallback
            if fallback is not None:
                name = fallback["action"]
                fallback = {
                    "action": name,
                    "settings": _saved_for_tester(hub, name, fallback["settings"]),
                }
            sealed = _saved_for_tester(hub, saved.action, saved.settings)
            steps.append(StepSpec(saved.action, sealed, saved.when, fallback))
        return steps
    by_id = {s.id: s for s in stored}
    for i, step in enumerate(draft.steps):
        edits = by_id.get(step.id) if step.id else None
        sealed = _draft_for_tester(
            hub, step.action, step.settings, _stored_of(edits, step.action), f"steps.{i}.settings"
        )
        fallback = None
        if step.fallback is not None:
            settings = _draft_for_tester(
                hub,
                step.fallback.action,
                step.fallback.settings,
                _stored_fallback(edits, step.fallback),
                f"steps.{i}.fallback.settings",
            )
            fallback = {"action": step.fallback.action, "settings": settings}
        when = conditions.to_json(step.when) if step.when else None
        steps.append(StepSpec(step.action, sealed, when, fallback))
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
