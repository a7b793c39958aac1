"""Which of an account's workflows an event applies to, and for each one it does not, why.

The verdicts are stored with the event, so "why didn't my workflow fire?" is answered as it
was decided, not as the workflows stand later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select

from . import conditions
from .bookings import Applied
from .models import BookingEvent
from .plans import PlanConfig
from .plugins import Registry
from .storage import Account, Workflow, WorkflowStep

PLANNING_EVENTS = ("booking.created", "booking.rescheduled")


class StepSpec(NamedTuple):
    """A workflow step as a run copies it: its action, stored (sealed) settings, ``when``
    conditions and fallback ({"action", "settings"})."""

    action: str
    settings: dict[str, Any]
    when: list[dict[str, Any]] | None = None
    fallback: dict[str, Any] | None = None


@dataclass(frozen=True)
class Candidate:
    id: str
    name: str
    trigger: str
    offset_minutes: int
    enabled: bool
    event_types: list[str]
    continue_when_blocked: bool
    created_at: datetime
    conditions: list[dict[str, Any]]
    steps: list[StepSpec]  # in order

    @property
    def actions(self) -> list[str]:
        """Every action its steps may run, fallbacks included."""
        return [s.action for s in self.steps] + [
            s.fallback["action"] for s in self.steps if s.fallback is not None
        ]


_WORKFLOW_COLUMNS = (
    Workflow.id,
    Workflow.name,
    Workflow.trigger,
    Workflow.offset_minutes,
    Workflow.enabled,
    Workflow.event_types,
    Workflow.continue_when_blocked,
    Workflow.created_at,
    Workflow.conditions,
)
# One row per step (or per account, or workflow, without any), in the order workflows rank.
_WORKFLOWS = (
    select(
        Account.plan,
        *_WORKFLOW_COLUMNS,
        WorkflowStep.action,
        WorkflowStep.settings,
        WorkflowStep.when,
        WorkflowStep.fallback,
    )
    .select_from(Account)
    .outerjoin(Workflow, Workflow.account_id == Account.id)
    .outerjoin(WorkflowStep, WorkflowStep.workflow_id == Workflow.id)
    .where(Account.id == bindparam("b_account"))
    .order_by(Workflow.created_at, Workflow.id, WorkflowStep.position)
)
_FIELDS = [c.key for c in _WORKFLOW_COLUMNS]


def candidates(conn: Connection, account_id: str) -> tuple[str, list[Candidate]]:
    """The account's plan, and every workflow of the account with its steps."""
    rows = conn.execute(_WORKFLOWS, {"b_account": account_id}).all()
    if not rows:
        raise LookupError(f"no account {account_id!r}")
    found: dict[str, Candidate] = {}
    for r in rows:
        if r.id is None:
            continue
        wf = found.get(r.id)
        if wf is None:
            wf = found[r.id] = Candidate(**{k: getattr(r, k) for k in _FIELDS}, steps=[])
        if r.action is not None:
            wf.steps.append(StepSpec(r.action, r.settings, r.when, r.fallback))
    return rows[0].plan, list(found.values())


def _event_type_matches(wf: Candidate, event: BookingEvent) -> bool:
    et = event.booking.event_type
    keys = {str(et.id), et.slug} if et is not None else set()
    return not wf.event_types or bool(keys & set(wf.event_types))


def verdict(
    wf: Candidate,
    event: BookingEvent,
    applied: Applied,
    registry: Registry,
    plan_name: str,
    plan: PlanConfig,
    rank: int | None,
    now: datetime,
) -> str | None:
    """None when the event applies to ``wf`` (it runs, or its reminder is planned); otherwise
    the reason it does not. ``rank`` is its place among the account's active workflows."""
    trigger = registry.triggers.get(wf.trigger)
    if not wf.enabled:
        return "the workflow is disabled"
    if trigger is None:
        return f"its trigger {wf.trigger} is not installed"
    if trigger.kind == "event" and wf.trigger != event.type:
        return f"its trigger is {wf.trigger}; this event is {event.type}"
    if trigger.kind == "time" and event.type not in PLANNING_EVENTS:
        if event.type == "booking.cancelled":
            return "the booking was cancelled: its reminder is cancelled"
        return f"{wf.trigger} is planned from booking.created and booking.rescheduled"
    if not _event_type_matches(wf, event):
        et = event.booking.event_type
        this = (et.slug or et.id) if et is not None else "none"
        return f"limited to event types {', '.join(wf.event_types)}; this booking's is {this}"
    missing = [a for a in wf.actions if a not in registry.actions]
    if missing:
        return f"action {', '.join(missing)} is not installed"
    if plan.active_workflows is not None and rank is not None and rank >= plan.active_workflows:
        return (
            f"the {plan_name} plan allows {plan.active_workflows} active workflows; "
            "this one is beyond the limit"
        )
    if applied.cancelled and event.type != "booking.cancelled":
        return "the booking is cancelled"
    if trigger.kind == "time" and not applied.fresh:
        return "the event is older than the booking's latest change: nothing re-planned"
    # A reminder's conditions are checked when it fires, against the booking as it is then.
    if wf.conditions and trigger.kind == "event":
        facts = conditions.Facts(event, applied.live, now)
        held = conditions.evaluate(conditions.parse(wf.conditions), facts)
        if not held.held:
            return f"its conditions did not hold: {held.reason()}"
    return None


def judge(
    wfs: list[Candidate],
    event: BookingEvent,
    applied: Applied,
    registry: Registry,
    plan_name: str,
    plan: PlanConfig,
    now: datetime,
) -> list[tuple[Candidate, str | None]]:
    ranks = {wf.id: i for i, wf in enumerate(w for w in wfs if w.enabled)}
    return [
        (wf, verdict(wf, event, applied, registry, plan_name, plan, ranks.get(wf.id), now))
        for wf in wfs
    ]
