"""How the dashboard words SMS credits: the month's count on the Account page, and what one send
of an SMS step costs in the Test panel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..credits import Credits


def renews(day: date) -> str:
    """``1 January``: credits renew on the first of a month, UTC."""
    return f"{day.day} {day.strftime('%B')}"


def month_text(c: Credits) -> str:
    """``120 of 500 used (380 left, renews on 1 January)``."""
    if c.allowance is None:
        return f"{c.used} used (unlimited on your plan)"
    if c.allowance == 0:
        return "None: your plan includes no SMS credits"
    return f"{c.used} of {c.allowance} used ({c.left} left, renews on {renews(c.renews_on)})"


@dataclass(frozen=True)
class SendCost:
    """What one send of an SMS step costs, and whether this month's credits cover it."""

    text: str
    warning: str | None


def send_cost(c: Credits, segments: int) -> SendCost:
    """``costs 2 credits a send · 380 left this month``, and a warning when fewer are left."""
    cost = f"costs {segments} {'credit' if segments == 1 else 'credits'} a send"
    if c.left is None:
        return SendCost(f"{cost} · unlimited on your plan", None)
    text = f"{cost} · {c.left} left this month"
    if c.enough_for(segments):
        return SendCost(text, None)
    warning = (
        f"Not enough SMS credits: this step would end blocked by plan (it needs {segments}, "
        f"{c.left} {'is' if c.left == 1 else 'are'} left this month; "
        f"they renew on {renews(c.renews_on)})."
    )
    return SendCost(text, warning)
