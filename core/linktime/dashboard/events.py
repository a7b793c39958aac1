"""The Events page ("why didn't my workflow fire?"): recent events, searchable by booking uid,
invitee email or event id; and the event inspector, where each workflow's decision is a sentence
with the fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from markupsafe import Markup

from .. import activity, plans, runs, workflows
from ..engine import Hub
from ..errors import InputError
from ..models import Booking
from ..offload import offload
from ..plans import PlanUsage
from ..workflows import WorkflowOut
from .app import (
    AnyRequest,
    Me,
    action_title,
    page,
    sentence,
    trigger_text,
    usage,
)
from .wording import RUN_STATUS, trigger_words

PAGE_SIZE = 25
# How matching.verdict begins the reason of a workflow whose conditions did not hold.
CONDITIONS_FAILED = "its conditions did not hold: "
# The channels this project ships, by the distribution an operator installs for each.
DISTRIBUTIONS = {
    "email.send": "linktime-email",
    "sms.send": "linktime-sms-twilio",
    "slack.post": "linktime-slack",
    "webhook.call": "linktime-webhook",
    "voice.call": "linktime-voice",
}


def type_in_words(hub: Hub, name: str) -> str:
    """An event's type as the run log says its trigger: "Booking created"."""
    return trigger_words(hub, name, None)


def via(hub: Hub, source: str | None) -> str:
    """Where an event came from: "via Cal.com" (the source's title; its name when it is no
    longer installed) or "via the API"."""
    if source is None:
        return "via the API"
    found = hub.registry.sources.get(source)
    return f"via {found.title if found else source}"


def _found_first(people: list[activity.Invitee], q: str) -> list[activity.Invitee]:
    """A row's invitees, the one whose email was searched for first."""
    wanted = q.strip().casefold()
    return sorted(people, key=lambda p: (p.email or "").casefold() != wanted)


@get("/events")
async def events_page(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    q: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    errors: dict[str, str] = {}
    try:
        found = await offload(activity.list_events, hub, me.account_id, q, PAGE_SIZE, cursor)
    except InputError as exc:
        # The search box's own error under it; a page link only this page makes, said plainly.
        errors = {f.field: sentence(f.message) + "." for f in exc.fields}
        if "cursor" in errors:
            errors["cursor"] = "That page link is not valid: start again from the newest events."
        found = activity.EventPage(items=[], next_cursor=None)
    rows = [
        {
            "type_title": type_in_words(hub, e.type),
            "people": _found_first(e.invitees, q or ""),
            **e.model_dump(),
        }
        for e in found.items
    ]
    return page(
        request,
        "events.html",
        me=me,
        status=422 if errors else 200,
        q=(q or "").strip(),
        rows=rows,
        older=found.next_cursor,
        paged=cursor is not None,
        error=errors.get("q"),
        page_error=errors.get("cursor"),
    )


# -- the inspector -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fix:
    text: str
    href: str | None = None  # a link; None with enable: the toggle's form
    enable: bool = False


@dataclass(frozen=True)
class Why:
    sentence: Markup
    fix: Fix | None = None


def _em(value: str) -> Markup:
    return Markup("<em>{}</em>").format(value)


def _sentence(template: str, *parts: str) -> Markup:
    return Markup(template).format(*(_em(p) for p in parts))


def _roomier_plan(hub: Hub, limit: int) -> str | None:
    for name, plan in hub.settings.plans.items():
        if plan.active_workflows is None or plan.active_workflows > limit:
            return name
    return None


def _limit_fix(hub: Hub, plan: PlanUsage) -> Fix:
    roomier = _roomier_plan(hub, plan.limit or 0)
    upgrade = f", or move to the {roomier} plan" if roomier else ""
    return Fix(f"Turn another workflow off{upgrade}", "/workflows")


def _why_off(hub: Hub, wf: WorkflowOut | None, plan: PlanUsage) -> Why:
    said = Markup("This workflow was off when the event arrived.")
    if wf is None:
        return Why(said)
    if wf.enabled:
        return Why(said + Markup(" It is on now, so the next event will run it."))
    if plan.at_limit:
        full = _sentence(
            " Your {} plan allows {} active workflows and all are on.",
            plan.plan,
            str(plan.limit),
        )
        return Why(said + full, _limit_fix(hub, plan))
    return Why(said, Fix("Turn it on", enable=True))


def _one_of(names: list[str]) -> Markup:
    """``Intro call``, ``Intro call or Demo``, ``Intro call, Demo or Sales call``."""
    said = [_em(n) for n in names]
    if len(said) == 1:
        return said[0]
    return Markup(", ").join(said[:-1]) + Markup(" or ") + said[-1]


def another_kind(reason: str) -> bool:
    """Whether the workflow waits for another trigger than the event's: nothing held it back."""
    return reason.startswith("its trigger is ") or reason.endswith(
        "is planned from booking.created and booking.rescheduled"
    )


def explain(
    hub: Hub,
    reason: str,
    wf_id: str,
    wf: WorkflowOut | None,  # None: deleted since
    event: runs.EventInspection,
    booking: Booking,
    plan: PlanUsage,
    *,
    titles: Mapping[str, str],  # event types' titles by slug and id (activity.event_type_titles)
    anything_ran: bool,  # whether any workflow ran for the event
) -> Why:
    """The reason matching.verdict recorded, as a sentence with the fix."""

    def change(text: str, field: str) -> Fix | None:
        return Fix(text, f"/workflows/{wf_id}#{field}") if wf is not None else None

    if reason == "the workflow is disabled":
        return _why_off(hub, wf, plan)
    if reason.startswith("limited to event types "):
        wanted, _, this = reason.removeprefix("limited to event types ").partition(
            "; this booking's is "
        )
        et = booking.event_type
        this = (et.title if et else None) or this
        named = [titles.get(t, t) for t in wanted.split(", ")]
        return Why(
            Markup("This workflow only runs for {}; this booking is {}.").format(
                _one_of(named), _em(this)
            ),
            change("Edit its event types", "event-types"),
        )
    if reason.startswith("its trigger is "):
        waits = reason.removeprefix("its trigger is ").partition(";")[0]
        return Why(
            _sentence(
                "This workflow waits for {}; this event is {}.",
                type_in_words(hub, waits),
                type_in_words(hub, event.type),
            ),
            # Only when nothing ran might the trigger be the mistake.
            None if anything_ran else change("Change its trigger", "trigger"),
        )
    if reason.startswith("its trigger ") and reason.endswith(" is not installed"):
        return Why(
            Markup(
                "This workflow's trigger is not installed on this server. Ask your "
                "administrator to install the plugin that provides it."
            )
        )
    if reason.startswith("action ") and reason.endswith(" is not installed"):
        names = reason.removeprefix("action ").removesuffix(" is not installed").split(", ")
        packages = ", ".join(DISTRIBUTIONS.get(n, f"the plugin that provides {n}") for n in names)
        return Why(
            Markup(
                "A step of this workflow uses an action this server does not have. "
                "Ask your administrator to install {}."
            ).format(_em(packages))
        )
    if "plan allows" in reason and reason.endswith("beyond the limit"):
        return Why(
            _sentence(
                "Your {} plan allows {} active workflows; this one was beyond the limit when "
                "the event arrived.",
                plan.plan,
                str(plan.limit),
            ),
            _limit_fix(hub, plan),
        )
    if reason == "the booking was cancelled: its reminder is cancelled":
        return Why(Markup("The booking was cancelled, so its reminder was cancelled too."))
    if reason.endswith("is planned from booking.created and booking.rescheduled"):
        return Why(
            _sentence(
                "This workflow is a reminder ({}): it is planned when a booking is created or "
                "rescheduled, not on {}.",
                trigger_text(hub, wf.trigger, wf.offset_minutes) if wf else "a reminder",
                type_in_words(hub, event.type),
            )
        )
    if reason == "the booking is cancelled":
        return Why(Markup("The booking had been cancelled before this event arrived."))
    if reason.startswith(CONDITIONS_FAILED):
        # "booking.paid eq false did not hold: it was true": the condition and the value seen
        return Why(
            _sentence(
                "This workflow's conditions did not hold for this booking: {}.",
                reason.removeprefix(CONDITIONS_FAILED),
            ),
            change("Edit the workflow's conditions", "conditions"),
        )
    if reason.startswith("the event is older than"):
        return Why(
            Markup(
                "This event is older than the booking's latest change, so its reminder was "
                "not planned again from it."
            )
        )
    return Why(Markup.escape(sentence(reason) + "."))


def blocked_sentence(hub: Hub, plan: str, action: str) -> Markup:
    """A step of a run that the plan stopped (``blocked_by_plan``), with the plan that has it."""
    title = action_title(hub, action)
    found = hub.registry.actions.get(action)
    has_it = plans.first_including(hub.settings.plans, [found]) if found else None
    then = f" The {has_it} plan includes it." if has_it else ""
    return _sentence("Its step {} was blocked: your {} plan does not include it.", title, plan) + (
        Markup.escape(then)
    )


@dataclass(frozen=True)
class Inspected:
    found: runs.EventInspection
    booking: Booking
    current: dict[str, WorkflowOut]  # the account's workflows as they are now
    blocked: list[activity.BlockedStep]
    titles: dict[str, str]  # event types' titles by slug and id


def _inspect(hub: Hub, account_id: str, event_id: str) -> Inspected:
    found = runs.inspect_event(hub, account_id, event_id)
    return Inspected(
        found,
        activity.event_booking(hub, account_id, event_id),
        {w.id: w for w in workflows.list_all(hub, account_id)},
        activity.blocked_steps(hub, account_id, [r.id for r in found.runs]),
        activity.event_type_titles(hub, account_id),
    )


@get("/events/{event_id:str}")
async def event_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], event_id: FromPath[str]
) -> Template:
    read = await offload(_inspect, hub, me.account_id, event_id)
    plan = await usage(hub, me)
    found, current = read.found, read.current
    by_id = {r.id: r for r in found.runs}
    ran: list[dict[str, Any]] = []
    not_run: list[dict[str, Any]] = []
    other_kind: list[dict[str, Any]] = []
    anything_ran = any(d.reason is None for d in found.decisions)
    for d in found.decisions:
        wf = current.get(d.workflow_id)
        item: dict[str, Any] = {"workflow_id": d.workflow_id, "name": d.name, "exists": wf}
        if d.reason is None:
            run = item["run"] = by_id.get(d.run_id) if d.run_id else None
            # As the run log says them: "Scheduled for", "Retrying at" and "Waiting until" take
            # run.due_at.
            status = RUN_STATUS[run.status] if run else None
            item["status"] = "Waiting until" if run and run.delayed else status
            item["note"] = sentence(run.note) if run and run.note else None
            item["blocked"] = [
                blocked_sentence(hub, plan.plan, b.action)
                for b in read.blocked
                if b.run_id == d.run_id
            ]
            ran.append(item)
        else:
            item["why"] = explain(
                hub,
                d.reason,
                d.workflow_id,
                wf,
                found,
                read.booking,
                plan,
                titles=read.titles,
                anything_ran=anything_ran,
            )
            item["reason"] = d.reason
            (other_kind if another_kind(d.reason) else not_run).append(item)
    return page(
        request,
        "event.html",
        me=me,
        event=found,
        type_title=type_in_words(hub, found.type),
        via=via(hub, found.source),
        booking=read.booking,
        ran=ran,
        not_run=not_run,
        other_kind=other_kind,
    )


HANDLERS = [events_page, event_page]
