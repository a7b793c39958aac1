"""Monthly credits of the account's plan (``PlanConfig.sms_credits``: one credit an SMS
segment). A step takes its credits once, before it sends, in a transaction of its own so that
concurrent workers see it; a retry finds its charge and takes nothing more; a step that ends
without sending gives them back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update

from .plans import PlanConfig
from .storage import CreditCharge, CreditUsage, insert_ignoring

SMS = "sms"


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


def refund(conn: Connection, step_id: str) -> None:
    """Give back what ``step_id`` took, if anything: it ended without sending."""
    charged = conn.execute(
        delete(CreditCharge)
        .where(CreditCharge.step_id == step_id)
        .returning(
            CreditCharge.account_id, CreditCharge.period, CreditCharge.kind, CreditCharge.amount
        )
    ).first()
    if charged is None:
        return
    conn.execute(
        update(CreditUsage)
        .where(
            CreditUsage.account_id == charged.account_id,
            CreditUsage.period == charged.period,
            CreditUsage.kind == charged.kind,
        )
        .values(used=CreditUsage.used - charged.amount)
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
