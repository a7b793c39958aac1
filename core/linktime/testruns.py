"""Test before you enable: a dry run renders every step against a sample (or given) booking and
shows what would be sent, sending nothing; a live run sends to test recipients, marked as a
test in the run log and counted against no limit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.orm import Session

from .actions import ActionContext, ActionType, WorkflowRef
from .crypto import MASK
from .engine import Hub
from .errors import NotFound
from .models import EVENT_TYPES, BookingEvent, sample_event
from .storage import Account, Workflow
from .template_budget import TemplateBudgetError
from .templating import TemplateError, is_template


class StepPreview(BaseModel):
    position: int
    action: str
    title: str
    output: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    # The code a send would fail with, where the dry run knows it: "template_budget".
    error_code: str | None = None


class TestRunOut(BaseModel):
    workflow_id: str
    mode: str
    event: dict[str, Any]
    steps: list[StepPreview] = Field(default_factory=list)
    run_id: str | None = None


class TestRecipients(BaseModel):
    """Who a live test reaches: they replace the booking's invitee and host contacts."""

    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=40)
    name: str = Field("Test Recipient", max_length=200)


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


def preview(
    hub: Hub, action: ActionType, stored: dict[str, Any], ctx: ActionContext
) -> StepPreview:
    step = StepPreview(position=ctx.position, action=action.name, title=action.title)
    try:
        settings = hub.sealer.open(action.settings, stored)
        ctx = replace(ctx, settings=settings)
        output = action.preview(ctx) if action.preview else _generic_preview(settings, ctx)
        step.output = _masked(output)
    except TemplateBudgetError as exc:
        step.error, step.error_code = str(exc), "template_budget"
    except (TemplateError, ValueError) as exc:
        step.error = str(exc)
    return step


def dry_run(
    hub: Hub, account_id: str, workflow_id: str, event: BookingEvent | None = None
) -> TestRunOut:
    with Session(hub.db) as session:
        wf = _workflow(session, account_id, workflow_id)
        plan = session.get(Account, account_id).plan  # type: ignore[union-attr]
        event = event or sample_for(wf.trigger)
        out = TestRunOut(workflow_id=wf.id, mode="dry_run", event=event.model_dump(mode="json"))
        for step in wf.steps:
            action = hub.registry.actions.get(step.action)
            if action is None:
                out.steps.append(
                    StepPreview(
                        position=step.position,
                        action=step.action,
                        title=step.action,
                        error=f"action {step.action!r} is not installed",
                    )
                )
                continue
            ctx = ActionContext(
                event=event,
                trigger=wf.trigger,
                workflow=WorkflowRef(wf.id, wf.name),
                account_id=account_id,
                plan=plan,
                run_id="run_dry",
                step_id=f"stp_dry{step.position}",
                position=step.position,
                attempt=1,
                settings=None,
                test=True,
            )
            out.steps.append(preview(hub, action, step.settings, ctx))
    return out


def live(
    hub: Hub,
    account_id: str,
    workflow_id: str,
    recipients: TestRecipients,
    event: BookingEvent | None = None,
) -> TestRunOut:
    """Run the workflow now, for real, with the booking's people replaced by ``recipients``."""
    with Session(hub.db) as session:
        wf = _workflow(session, account_id, workflow_id)
        trigger, name = wf.trigger, wf.name
    base = event or sample_for(trigger)
    person = {"name": recipients.name, "email": recipients.email, "phone": recipients.phone}
    booking = base.booking.model_dump(mode="json")
    for role in ("invitee", "host"):
        booking[role] = {**(booking.get(role) or {}), **person}
    booking["invitees"], booking["hosts"] = [], []
    test_event = BookingEvent.model_validate({**base.model_dump(mode="json"), "booking": booking})
    run_id = hub.start_test_run(account_id, workflow_id, name, trigger, test_event)
    return TestRunOut(
        workflow_id=workflow_id,
        mode="live",
        event=test_event.model_dump(mode="json"),
        run_id=run_id,
    )
