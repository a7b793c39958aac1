"""The built-in logic steps, ``logic.delay`` and ``logic.filter``: actions like any channel's,
registered by the core's default plugin, built on the two result kinds any plugin may use
(``Result.wait_until`` and ``Result.stop``). Nothing here sleeps: a delay is a due time on the
step's row, handed back by the scheduler as a retry is."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from . import conditions
from .actions import ActionContext, ActionType, Result
from .conditions import Conditions

# As far as a reminder may be planned from its meeting (workflows.MAX_OFFSET_MINUTES).
MAX_DELAY = timedelta(days=90)
_UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 60 * 24}
# A logic step reads the booking at most: far below any step lease an operator may set (a
# worker refuses to start with an action whose timeout is not below it).
TIMEOUT = 2.0


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class DelaySettings(BaseModel):
    """Wait a duration (``amount`` ``unit``), or until a moment relative to the meeting
    (``until`` start or end, ``offset_minutes`` before (negative) or after it)."""

    model_config = ConfigDict(extra="forbid")
    # In this order: ``amount``'s check reads the others (and names ``amount`` when the two
    # ways are mixed or neither is given).
    until: Literal["start", "end"] | None = Field(
        None, description="Wait until the meeting's start or end (moves when it is rescheduled)"
    )
    offset_minutes: int = Field(
        0,
        ge=-MAX_DELAY.days * 24 * 60,
        le=MAX_DELAY.days * 24 * 60,
        description="With `until`: minutes after (positive) or before (negative) that moment",
    )
    unit: Literal["minutes", "hours", "days"] = "minutes"
    amount: int | None = Field(
        None, ge=1, validate_default=True, description="How long to wait, in `unit`s"
    )

    @field_validator("amount")
    @classmethod
    def _one_way(cls, amount: int | None, info: ValidationInfo) -> int | None:
        until = info.data.get("until")
        if (amount is None) == (until is None):
            raise ValueError("give either amount (with unit) or until (start or end)")
        if amount is not None:
            if info.data.get("offset_minutes"):
                raise ValueError("offset_minutes goes with until, not with amount")
            unit = info.data.get("unit", "minutes")
            if amount * _UNIT_MINUTES[unit] > MAX_DELAY.total_seconds() / 60:
                raise ValueError(f"a delay is at most {MAX_DELAY.days} days")
        return amount

    def describe(self) -> str:
        if self.amount is not None:
            unit = self.unit if self.amount != 1 else self.unit.removesuffix("s")
            return f"{self.amount} {unit}"
        if not self.offset_minutes:
            return f"the meeting's {self.until}"
        side = "before" if self.offset_minutes < 0 else "after"
        return f"{abs(self.offset_minutes)} minutes {side} the meeting's {self.until}"


def _delay(ctx: ActionContext) -> Result:
    settings: DelaySettings = ctx.settings
    if ctx.test:  # "Send example" shows the steps after the delay now, not in three days
        waits = f"a test run does not wait ({settings.describe()})"
        return Result.skip(waits, error_code="test_run")
    now = ctx.services.now()
    if settings.until is not None:
        # The booking as it stands: a reschedule moves the end of the wait (the engine wakes
        # a parked run when its booking moves, and this works it out again).
        live = ctx.services.booking_now(ctx.event)
        anchor = live.start if settings.until == "start" else live.end
        target = anchor + timedelta(minutes=settings.offset_minutes)
    else:
        assert settings.amount is not None  # DelaySettings: amount or until
        amount = timedelta(minutes=settings.amount * _UNIT_MINUTES[settings.unit])
        target = ctx.waited_until or now + amount
    if target <= now:
        return Result.ok()
    waiting = f"waiting until {_iso(target)} ({settings.describe()})"
    return Result.wait_until(target, waiting, follows_booking=settings.until is not None)


class FilterSettings(BaseModel):
    """The run goes on only if these conditions hold for the booking as it is when the step
    is reached; otherwise it stops there, succeeded."""

    model_config = ConfigDict(extra="forbid")
    conditions: Conditions = Field(min_length=1)


def _filter(ctx: ActionContext) -> Result:
    settings: FilterSettings = ctx.settings
    verdict = conditions.evaluate(settings.conditions, ctx.facts(), prefix="settings.conditions")
    if verdict.held:
        return Result.ok(response_excerpt="every condition held")
    return Result.stop(verdict.reason() or "the conditions did not hold", error_code="filtered")


def _delay_preview(ctx: ActionContext) -> dict[str, Any]:
    settings: DelaySettings = ctx.settings
    return {"waits": settings.describe()}


def _filter_preview(ctx: ActionContext) -> dict[str, Any]:
    settings: FilterSettings = ctx.settings
    verdict = conditions.evaluate(settings.conditions, ctx.facts(), prefix="settings.conditions")
    return {"goes on": "yes" if verdict.held else f"no: {verdict.reason()}"}


ACTIONS = (
    ActionType(
        name="logic.delay",
        title="Delay",
        description="Wait a duration, or until a moment relative to the meeting",
        settings=DelaySettings,
        execute=_delay,
        preview=_delay_preview,
        logic=True,
        timeout=TIMEOUT,
    ),
    ActionType(
        name="logic.filter",
        title="Filter",
        description="Go on only if the booking matches the conditions; otherwise stop here",
        settings=FilterSettings,
        execute=_filter,
        preview=_filter_preview,
        logic=True,
        timeout=TIMEOUT,
    ),
)
