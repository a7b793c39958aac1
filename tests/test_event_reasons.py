"""Every reason the matcher records for a workflow that did not run reads, in the event
inspector, as a sentence for people with its fix; none falls through to the recorded words.

The reasons are made by ``matching.verdict`` itself, so a change of its wording that the
inspector does not follow fails here, not on a user's screen."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from linktime import activity
from linktime.accounts import create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.bookings import Applied
from linktime.conditions import Live
from linktime.dashboard.events import Fix, Why, blocked_sentence, explain
from linktime.engine import Hub
from linktime.matching import Candidate, StepSpec, verdict
from linktime.models import sample_event
from linktime.plans import DEFAULT_PLANS, PlanUsage
from linktime.runs import EventInspection
from linktime.workflows import WorkflowOut

from .conftest import NoSettings, fast_settings, registry_with

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
FREE_ROOM = PlanUsage("free", 1, 3, ["email.send"])
FREE_FULL = PlanUsage("free", 3, 3, ["email.send"])


def sent(_: ActionContext) -> Result:
    return Result.ok()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    email = ActionType("email.send", "Send Email", NoSettings, sent, capability="email")
    sms = ActionType("sms.send", "Send SMS", NoSettings, sent, capability="sms")
    made = Hub(fast_settings(data_dir=tmp_path), registry=registry_with(email, sms))
    yield made
    made.close()


def candidate(**changes: Any) -> Candidate:
    values: dict[str, Any] = {
        "id": "wf_1",
        "name": "Follow-up",
        "trigger": "booking.created",
        "offset_minutes": 0,
        "enabled": True,
        "event_types": [],
        "continue_when_blocked": False,
        "created_at": NOW,
        "conditions": [],
        "steps": [StepSpec("email.send", {})],
        **changes,
    }
    return Candidate(**values)


def why(
    hub: Hub,
    wf: Candidate,
    event_type: str = "booking.created",
    *,
    fresh: bool = True,
    cancelled: bool = False,
    rank: int = 0,
    enabled_now: bool | None = None,
    usage: PlanUsage = FREE_ROOM,
    titles: dict[str, str] | None = None,
    anything_ran: bool = False,
    **event: Any,
) -> Why:
    sample = sample_event(event_type, **event)
    live = Live.of_event(sample)
    applied = Applied(fresh, cancelled, sample.booking.start, sample.booking.end, live)
    reason = verdict(wf, sample, applied, hub.registry, "free", DEFAULT_PLANS["free"], rank, NOW)
    assert reason is not None, "the case was meant not to run"
    now = WorkflowOut(
        id=wf.id,
        name=wf.name,
        trigger=wf.trigger,
        offset_minutes=wf.offset_minutes,
        enabled=wf.enabled if enabled_now is None else enabled_now,
        event_types=wf.event_types,
        continue_when_blocked=False,
        created_at=NOW,
        updated_at=NOW,
        steps=[],
    )
    inspected = EventInspection(
        id=sample.id,
        type=sample.type,
        booking_uid=sample.booking.uid,
        occurred_at=NOW,
        received_at=NOW,
        runs=[],
        decisions=[],
    )
    found = explain(
        hub,
        reason,
        wf.id,
        now,
        inspected,
        sample.booking,
        usage,
        titles=titles or {},
        anything_ran=anything_ran,
    )
    assert str(found.sentence) != reason[:1].upper() + reason[1:] + ".", reason
    return found


def test_each_reason_is_a_sentence_with_its_fix(hub: Hub) -> None:
    demo = sample_event().booking.model_dump(mode="json")
    demo["event_type"] = {"id": "et_2", "slug": "demo", "title": "Demo"}
    # Event types by their titles where the account's events told them, else as given.
    filtered = why(
        hub,
        candidate(event_types=["intro-call", "et_9", "sales"]),
        titles={"intro-call": "Intro call", "et_9": "Onboarding"},
        booking=demo,
    )
    assert str(filtered.sentence) == (
        "This workflow only runs for <em>Intro call</em>, <em>Onboarding</em> or "
        "<em>sales</em>; this booking is <em>Demo</em>."
    )
    assert filtered.fix is not None
    assert filtered.fix.href == "/workflows/wf_1#event-types"
    untitled = why(hub, candidate(event_types=["intro-call"]), booking=demo)
    assert "only runs for <em>intro-call</em>;" in str(untitled.sentence)

    other = why(hub, candidate(trigger="booking.cancelled"))
    assert str(other.sentence) == (
        "This workflow waits for <em>Booking cancelled</em>; this event is "
        "<em>Booking created</em>."
    )
    # Its trigger may be the mistake only when nothing ran for the event.
    assert other.fix is not None and other.fix.href == "/workflows/wf_1#trigger"
    assert why(hub, candidate(trigger="booking.cancelled"), anything_ran=True).fix is None

    off = why(hub, candidate(enabled=False))
    assert off.fix is not None and off.fix.enable
    full = why(hub, candidate(enabled=False), usage=FREE_FULL)
    assert "all are on" in str(full.sentence)
    assert (
        full.fix is not None
        and full.fix.text == "Turn another workflow off, or move to the pro plan"
    )
    already = why(hub, candidate(enabled=False), enabled_now=True)
    assert already.fix is None and "It is on now" in str(already.sentence)

    limit = why(hub, candidate(), rank=3, usage=FREE_FULL)
    assert "plan allows <em>3</em> active workflows" in str(limit.sentence)

    missing = why(hub, candidate(steps=[StepSpec("voice.call", {})]))
    assert "install <em>linktime-voice</em>" in str(missing.sentence)
    unknown = why(hub, candidate(trigger="meeting.never"))
    assert "trigger is not installed" in str(unknown.sentence)

    reminder = candidate(trigger="meeting.before", offset_minutes=60)
    assert "cancelled" in str(why(hub, reminder, "booking.cancelled").sentence)
    paid = why(hub, reminder, "payment.received")
    assert "not on <em>Payment received</em>" in str(paid.sentence)
    assert "older than" in str(why(hub, reminder, fresh=False).sentence)
    gone = why(hub, candidate(), cancelled=True)
    assert str(gone.sentence) == "The booking had been cancelled before this event arrived."

    # The condition that did not hold is named with the value it saw.
    unpaid = why(hub, candidate(conditions=[{"field": "booking.paid", "op": "eq", "value": True}]))
    assert str(unpaid.sentence) == (
        "This workflow's conditions did not hold for this booking: "
        "<em>booking.paid eq true did not hold: it was false</em>."
    )
    assert unpaid.fix == Fix("Edit the workflow's conditions", "/workflows/wf_1#conditions")


def test_a_step_the_plan_blocked_names_the_plan_that_includes_it(hub: Hub) -> None:
    assert str(blocked_sentence(hub, "free", "sms.send")) == (
        "Its step <em>Send SMS</em> was blocked: your <em>free</em> plan does not include it. "
        "The pro plan includes it."
    )


def test_event_types_are_named_by_the_titles_the_latest_events_gave_them(hub: Hub) -> None:
    hub.migrate()
    account = create_account(hub, "a", "free").id
    for n, title in enumerate(("Demo", "Product demo")):
        booking = sample_event().booking.model_dump(mode="json")
        booking["event_type"] = {"id": 7, "slug": "demo", "title": title}  # an id as a number
        hub.emit(sample_event(id=f"evt_{n}", booking=booking), account_id=account)
    assert activity.event_type_titles(hub, account) == {"demo": "Product demo", "7": "Product demo"}
    assert activity.event_type_titles(hub, create_account(hub, "b", "free").id) == {}
