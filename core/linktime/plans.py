"""Plan tiers: how many workflows may be active and which actions each plan may use.

Defaults are the product's table; an operator overrides them in ``linktime.toml``:

    [plans.free]
    active_workflows = 3
    capabilities = ["email", "slack", "webhook", "sms"]   # SMS on free, say
    sms_credits = 100                                      # segments a month

A ``[plans.NAME]`` table replaces that default plan whole: what it omits is unlimited
(``active_workflows``, ``sms_credits``) or not included (``capabilities``, ``actions``), so a
plan written before SMS credits existed keeps sending as it did.

An action is allowed when its capability is listed (``"*"`` allows all) or its name is listed
under ``actions``; an action that declares no capability is allowed on every plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from .actions import ActionType
from .storage import Account, Workflow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from sqlalchemy import Connection


class PlanConfig(BaseModel):
    active_workflows: int | None = Field(None, ge=0, description="None: unlimited")
    capabilities: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    # Text messages a month, one credit a segment (credits.py); None: unlimited.
    sms_credits: int | None = Field(
        None, ge=0, description="SMS segments a month; None (omitted): unlimited"
    )

    def credits(self, kind: str) -> int | None:
        """The monthly allowance of ``kind`` credits (None: unlimited; a kind the plan does
        not meter is unlimited)."""
        return self.sms_credits if kind == "sms" else None

    def allows(self, action: ActionType) -> bool:
        if action.capability is None or "*" in self.capabilities:
            return True
        return action.capability in self.capabilities or action.name in self.actions


BASIC = ["email", "slack", "webhook"]
DEFAULT_PLANS = {
    "free": PlanConfig(active_workflows=3, capabilities=BASIC, sms_credits=0),
    "pro": PlanConfig(
        active_workflows=10, capabilities=[*BASIC, "sms", "whatsapp"], sms_credits=500
    ),
    "business": PlanConfig(
        active_workflows=None,
        capabilities=[*BASIC, "sms", "whatsapp", "voice"],
        sms_credits=5000,
    ),
}


def why_not(plan_name: str, plan: PlanConfig, action: ActionType) -> str | None:
    """Why ``plan`` may not use ``action``, or None when it may."""
    if plan.allows(action):
        return None
    need = f" (capability {action.capability})" if action.capability else ""
    return f"the {plan_name} plan does not include {action.name}{need}"


def first_including(tiers: Mapping[str, PlanConfig], actions: Iterable[ActionType]) -> str | None:
    """The first of ``tiers`` (the operator's order, cheapest first) that allows every one of
    ``actions``: the plan to name when one is not allowed. None when no plan allows them all."""
    wanted = list(actions)
    return next((name for name, plan in tiers.items() if all(map(plan.allows, wanted))), None)


def including(tiers: Mapping[str, PlanConfig], action: ActionType) -> list[str]:
    """The names of the plans of ``tiers`` that allow ``action``, in the operator's order."""
    return [name for name, plan in tiers.items() if plan.allows(action)]


@dataclass(frozen=True)
class PlanUsage:
    plan: str
    active: int
    limit: int | None
    allowed_actions: list[str]

    @property
    def at_limit(self) -> bool:
        """No other workflow may be enabled: as many are active as the plan allows."""
        return self.limit is not None and self.active >= self.limit


def plan_of(conn: Connection, account_id: str) -> str:
    return str(conn.scalar(select(Account.plan).where(Account.id == account_id)))


def active_count(conn: Connection, account_id: str, excluding: str | None = None) -> int:
    query = select(func.count()).where(Workflow.account_id == account_id, Workflow.enabled)
    if excluding is not None:
        query = query.where(Workflow.id != excluding)
    return int(conn.scalar(query) or 0)


def limits(
    conn: Connection,
    account_id: str,
    plans: Callable[[str], PlanConfig],
    actions: Iterable[ActionType],
) -> PlanUsage:
    """The account's plan (configured by ``plans``, by name), its active workflows against the
    plan's limit, and which of ``actions`` it allows."""
    name = plan_of(conn, account_id)
    plan = plans(name)
    allowed = sorted(a.name for a in actions if plan.allows(a))
    return PlanUsage(name, active_count(conn, account_id), plan.active_workflows, allowed)
