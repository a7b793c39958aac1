"""Monthly credits of the account's plan (``PlanConfig.sms_credits``: one credit an SMS
segment). A step takes its credits once, before it sends, in a transaction of its own so that
concurrent workers see it; a retry finds its charge and takes nothing more; a step that ends
without sending gives them back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, delete, insert, select, update

from .plans import PlanConfig, plan_of
from .storage import CreditCharge, CreditUsage, insert_ignoring

if TYPE_CHECKING:
    from .actions import ActionType
    from .engine import Hub

SMS = "sms"
# The capabilities whose steps take credits of the same name (sms.send: one a segment).
KINDS = (SMS,)


def kind_of(action: ActionType | None) -> str | None:
    """The credits a step of ``action`` takes, if any."""
    capability = action.capability if action is not None else None
    return capability if capability in KINDS else None


def period_of(moment: datetime) -> str:
    """The month credits are counted in, UTC: ``"2026-12"``."""
    return moment.strftime("%Y-%m")


def take(
    db: Engine,
    account_id: str,
    plan: PlanConfig,
    step_id: str,
    kind: str,
    amount: int,
    now: datetime,
) -> bool:
    """Charge ``step_id`` ``amount`` ``kind`` credits this month, once; False (nothing
    charged) when fewer are left."""
    period = period_of(now)
    allowance = plan.credits(kind)
    with db.begin() as conn:
        if conn.scalar(select(CreditCharge.amount).where(CreditCharge.step_id == step_id)):
            return True
        insert_ignoring(
            conn,
            CreditUsage,
            {"account_id": account_id, "period": period, "kind": kind, "used": 0},
        )
        charge = update(CreditUsage).where(
            CreditUsage.account_id == account_id,
            CreditUsage.period == period,
            CreditUsage.kind == kind,
        )
        if allowance is not None:
            # One conditional UPDATE: the row lock (SQLite: the write lock) makes two workers
            # racing for the last credits take them one after the other.
            charge = charge.where(CreditUsage.used + amount <= allowance)
        if conn.execute(charge.values(used=CreditUsage.used + amount)).rowcount != 1:
            return False
        conn.execute(
            insert(CreditCharge).values(
                step_id=step_id,
                account_id=account_id,
                period=period,
                kind=kind,
                amount=amount,
                created_at=now,
            )
        )
    return True


def refund(conn: Connection, *step_ids: str) -> None:
    """Give back what the ``step_ids`` took, if anything: they ended without sending."""
    if not step_ids:
        return
    charged = conn.execute(
        delete(CreditCharge)
        .where(CreditCharge.step_id.in_(step_ids))
        .returning(
            CreditCharge.account_id, CreditCharge.period, CreditCharge.kind, CreditCharge.amount
        )
    ).all()
    for charge in charged:
        conn.execute(
            update(CreditUsage)
            .where(
                CreditUsage.account_id == charge.account_id,
                CreditUsage.period == charge.period,
                CreditUsage.kind == charge.kind,
            )
            .values(used=CreditUsage.used - charge.amount)
        )


@dataclass(frozen=True)
class Credits:
    kind: str
    period: str
    used: int
    allowance: int | None  # None: unlimited

    @property
    def left(self) -> int | None:
        return None if self.allowance is None else max(self.allowance - self.used, 0)

    @property
    def renews_on(self) -> date:
        """The first day of the next month (UTC), when ``used`` starts again from 0."""
        year, month = map(int, self.period.split("-"))
        return date(year + month // 12, month % 12 + 1, 1)

    def enough_for(self, amount: int) -> bool:
        """Whether ``amount`` more may be taken this month."""
        return self.left is None or self.left >= amount

    def out(self) -> CreditsOut:
        return CreditsOut(
            used=self.used,
            allowance=self.allowance,
            left=self.left,
            period=self.period,
            renews_on=self.renews_on,
        )


class CreditsOut(BaseModel):
    """A month's credits as the API shows them."""

    used: int = Field(description="Credits taken this month (one an SMS segment)")
    allowance: int | None = Field(description="The plan's credits a month; null: unlimited")
    left: int | None = Field(description="Credits left this month; null: unlimited")
    period: str = Field(description="The month counted, UTC, e.g. 2026-12")
    renews_on: date = Field(description="When the month's count starts again (UTC)")


def usage(conn: Connection, account_id: str, plan: PlanConfig, now: datetime) -> Credits:
    """The account's SMS credits this month: used, allowed, left."""
    period = period_of(now)
    used = conn.scalar(
        select(CreditUsage.used).where(
            CreditUsage.account_id == account_id,
            CreditUsage.period == period,
            CreditUsage.kind == SMS,
        )
    )
    return Credits(SMS, period, int(used or 0), plan.credits(SMS))


def sms_usage(hub: Hub, account_id: str) -> Credits:
    """The account's SMS credits this month by the hub's clock and its plan settings."""
    with hub.db.connect() as conn:
        plan = hub.settings.plan(plan_of(conn, account_id))
        return usage(conn, account_id, plan, hub.clock())
