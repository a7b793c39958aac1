"""What an operator does to accounts: list them with their plan and usage, and move one to
any plan of the operator's settings (``linktime.toml`` ``[plans.NAME]``). Used by the
``linktime accounts`` commands and the admin API (``/v1/admin``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from . import credits, workflows
from .engine import Hub
from .errors import FieldError, InputError, NotFound
from .storage import Account, Workflow

# Longer than any plan name an operator writes; what a request may send as one.
PLAN_NAME_MAX = 64


class AccountOut(BaseModel):
    id: str
    name: str
    plan: str
    created_at: datetime
    active: int = Field(description="Enabled workflows")
    limit: int | None = Field(description="Active workflows the plan allows; null: unlimited")
    plan_defined: bool = Field(
        description="false: the plan is not in the operator's settings (removed from "
        "linktime.toml?), so it allows nothing: no active workflow, no action"
    )


class Allowance(BaseModel):
    action: str
    capability: str | None
    allowed: bool


class UsageOut(AccountOut):
    actions: list[Allowance] = Field(description="Installed actions: whether the plan allows each")
    sms_credits: credits.CreditsOut = Field(description="This month's SMS credits")


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    plan: str = Field(
        min_length=1,
        max_length=PLAN_NAME_MAX,
        description="A plan of the operator's settings, e.g. pro",
    )


class PausedWorkflow(BaseModel):
    id: str
    name: str


class PlanChange(BaseModel):
    account_id: str
    previous_plan: str
    plan: str
    limit: int | None
    active: int = Field(description="Active workflows after the change")
    paused: list[PausedWorkflow] = Field(
        description="Disabled because the new plan allows fewer active workflows (the newest "
        "go; the oldest stay active)"
    )


def _limit(hub: Hub, plan: str) -> int | None:
    return hub.settings.plan(plan).active_workflows


def _summaries(hub: Hub, *where: ColumnElement[bool]) -> list[AccountOut]:
    """The accounts matching ``where`` (all without), oldest first, with their active
    workflows against their plan's limit."""
    active = (
        select(Workflow.account_id, func.count().label("n"))
        .where(Workflow.enabled)
        .group_by(Workflow.account_id)
        .subquery()
    )
    with hub.db.connect() as conn:
        rows = conn.execute(
            select(
                Account.id,
                Account.name,
                Account.plan,
                Account.created_at,
                func.coalesce(active.c.n, 0).label("active"),
            )
            .outerjoin(active, active.c.account_id == Account.id)
            .where(*where)
            .order_by(Account.created_at, Account.id)
        ).all()
    return [
        AccountOut(
            **r._asdict(), limit=_limit(hub, r.plan), plan_defined=r.plan in hub.settings.plans
        )
        for r in rows
    ]


def list_accounts(hub: Hub) -> list[AccountOut]:
    """Every account, oldest first, with its active workflows against its plan's limit."""
    return _summaries(hub)


def account_usage(hub: Hub, account_id: str) -> UsageOut:
    """One account: its plan, active workflows against the limit, and which installed actions
    the plan allows (the logic steps, which send nothing, are no plan's to allow)."""
    found = _summaries(hub, Account.id == account_id)
    if not found:
        raise NotFound(f"no account {account_id!r}")
    plan = hub.settings.plan(found[0].plan)
    return UsageOut(
        **found[0].model_dump(),
        actions=[
            Allowance(action=a.name, capability=a.capability, allowed=plan.allows(a))
            for a in sorted(hub.registry.actions.values(), key=lambda a: a.name)
            if not a.logic
        ],
        sms_credits=credits.sms_usage(hub, account_id).out(),
    )


def set_plan(hub: Hub, account_id: str, plan: str) -> PlanChange:
    """Move an account to ``plan``. When the new plan allows fewer active workflows than are
    enabled, the oldest stay active and the rest are disabled in the same transaction, exactly
    as disabling them one by one would (their pending reminders cancelled). An upgrade needs
    nothing more: the engine reads the plan again for every step."""
    if plan not in hub.settings.plans:
        known = ", ".join(hub.settings.plans)
        # A prefix: whatever length was sent, the answer stays short.
        shown = repr(plan[:PLAN_NAME_MAX]) + ("…" if len(plan) > PLAN_NAME_MAX else "")
        message = f"unknown plan {shown}; the operator's plans: {known}"
        raise InputError(message, [FieldError("plan", message)])
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        # Locked as enabling a workflow locks it: no enable slips in between count and pause.
        account = session.get(Account, account_id, with_for_update=True)
        if account is None:
            raise NotFound(f"no account {account_id!r}")
        previous, account.plan = account.plan, plan
        limit = _limit(hub, plan)
        active = session.scalars(
            select(Workflow)
            .where(Workflow.account_id == account_id, Workflow.enabled)
            .order_by(Workflow.created_at, Workflow.id)
        ).all()
        over = active[limit:] if limit is not None else []
        reason = (
            f"Paused when the plan changed from {previous} to {plan}, which allows {limit} "
            f"active workflow{'' if limit == 1 else 's'}"
        )
        for wf in over:
            # a disabled one has nothing due
            workflows.switch(hub, session, wf, False, paused_reason=reason)
    return PlanChange(
        account_id=account_id,
        previous_plan=previous,
        plan=plan,
        limit=limit,
        active=len(active) - len(over),
        paused=[PausedWorkflow(id=wf.id, name=wf.name) for wf in over],
    )
