"""A booking's timeline: what was received and run for it, and what is planned, in one vertical
sequence with "now" marked; a reminder's moment shown in the host's and the invitee's zones as
well as the viewer's."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from .. import activity
from ..engine import Hub
from ..offload import offload
from ..statuses import RUN_UNFINISHED, RunStatus
from .app import AnyRequest, Me, page, sentence
from .events import type_in_words, via
from .runs import StepView, step_view
from .wording import RUN_STATUS

# Why a reminder is due when it is, by the event it was last planned from.
PLANNED_BY = {
    "booking.created": "Planned when the booking was made.",
    "booking.rescheduled": "Moved to this time when the booking was rescheduled.",
}


def in_zone(moment: datetime, zone: str) -> str:
    """``Tue 1 Dec 2026, 15:00 CET``: a moment as someone in ``zone`` reads it."""
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local.strftime('%a %-d %b %Y, %H:%M')} {local.tzname() or zone}"


def _entry(hub: Hub, e: activity.Entry, zones: list[tuple[str, str]]) -> dict[str, Any]:
    run = e.run
    steps = [step_view(hub, s) for s in (run.steps if run else [])]
    retry_at = next((s.retry_at for s in steps if s.retry_at), None)
    status = None
    if run is not None:
        delayed = run.status == RunStatus.WAITING and retry_at is None
        status = "Waiting" if delayed else RUN_STATUS[run.status]
    return {
        "at": e.at,
        "kind": e.kind,
        "event": e.event,
        "run": run,
        "title": type_in_words(hub, e.event.type) if e.event else run.workflow_name if run else "",
        "via": via(hub, e.event.source) if e.event else None,
        # A retry's or a delay's step: its position, and its title ("Send email").
        "step": e.step,
        "retried": next((s.title for s in steps if s.step.position == e.step), None),
        # Words as the run log has them; "Retrying at" is followed by the step's next attempt;
        # a run waiting with nothing to retry waits for a delay's end (its step says when).
        "status": status,
        "retry_at": retry_at,
        "note": sentence(run.note) if run and run.note else None,
        "stands": _stands(run, steps) if run else None,
        "planned_by": PLANNED_BY.get(run.planned_by_type or "") if run else None,
        "zones": [(who, in_zone(e.at, zone)) for who, zone in zones],
        "steps": steps,
    }


def _stands(run: activity.TimelineRun, steps: list[StepView]) -> str | None:
    """Where a run not over yet stands: "At step 2, Delay" (how it ended, its steps say)."""
    if run.status not in RUN_UNFINISHED or run.at_step is None:
        return None
    title = next(s.title for s in steps if s.step.position == run.at_step)
    return f"At step {run.at_step + 1}, {title}"


@get("/bookings/{uid:str}")
async def timeline_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], uid: FromPath[str]
) -> Template:
    found = await offload(activity.timeline, hub, me.account_id, uid)
    booking = found.booking
    zones = [
        (f"{who} ({zone})", zone)
        for who, zone in (("Host", booking.host_timezone), ("Invitee", booking.invitee_timezone))
        if zone
    ]
    entries = [(e.future, _entry(hub, e, zones)) for e in found.entries]
    return page(
        request,
        "timeline.html",
        me=me,
        booking=booking,
        now=found.now,
        past=[e for future, e in entries if not future],
        future=[e for future, e in entries if future],
    )


HANDLERS = [timeline_page]
