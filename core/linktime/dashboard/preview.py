"""Test before you enable: the dry run of a workflow (the editor's draft, or the saved version
on /workflows/{id}/test) against a sample or one of the account's recent bookings, each step
with its readiness and a preview as its recipient sees it, and "send a test to me" (the live
test run of the draft, or of the saved version, to the account's remembered test
recipients)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from litestar import get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from .. import accounts, activity, credits, testruns, workflows
from ..engine import Hub
from ..errors import FieldError, InputError, NotFound
from ..models import BookingEvent, sample_event
from ..offload import offload
from ..segments import sms_count
from ..workflows import WorkflowIn
from . import credit_words
from .app import AnyRequest, Me, page, see_other, trigger_text
from .forms import label_for


def email_document(body: str, subject: str) -> str:
    """The email's HTML as a document for the preview frame: a fragment gets the language and
    title a page needs (screen readers announce the frame by them)."""
    if re.search(r"<html[\s>]", body, re.IGNORECASE):
        return body
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head><body>{body}</body></html>"
    )


# Where the error summary links each send field's error.
SEND_TARGETS = {"test_email": "test-email", "test_phone": "test-phone"}
SEND_LABELS = {"test_email": "Your email address", "test_phone": "Your phone number"}
RECENT_BOOKINGS = 10  # the last events whose bookings the sample chooser offers
BOOKING_CHOICE = "booking:"  # a sample choice naming an event: "booking:evt_…"


@dataclass
class Sending:
    """What "send a test to me" was given and came to: the fields as entered, what is wrong
    with them, and the test run it started."""

    entered: dict[str, str | None]
    errors: list[FieldError]
    run_id: str | None = None


def read_recipients(form: FormMultiDict) -> Sending:
    """The send fields as posted, with what is wrong with them (nothing is cut to fit)."""
    email = str(form.get("test_email", "")).strip()
    # Spaces, dashes and brackets are how people write numbers, not part of them.
    phone = testruns.phone_digits(str(form.get("test_phone", "")))
    entered = {"test_email": email or None, "test_phone": phone or None}
    errors = testruns.recipient_errors(email or None, phone or None)
    if not (email or phone):
        errors.append(FieldError("test_email", testruns.NO_RECIPIENT))
    return Sending(entered, errors)


async def send(
    hub: Hub,
    me: Me,
    form: FormMultiDict,
    workflow_id: str,
    draft: WorkflowIn | None = None,
    event: BookingEvent | None = None,
) -> Sending:
    """The live test run of ``draft`` (None: the saved version) to the recipients posted, who
    are remembered for next time; nothing is started or remembered when they are wrong, and
    another account's workflow is a 404 (raised by ``testruns.live``)."""
    sending = read_recipients(form)
    if sending.errors:
        return sending
    recipients = testruns.TestRecipients(
        email=sending.entered["test_email"], phone=sending.entered["test_phone"]
    )
    try:
        out = await offload(
            testruns.live, hub, me.account_id, workflow_id, recipients, event, draft
        )
    except InputError as exc:
        sending.errors = exc.fields or [FieldError("test_email", exc.message)]
        return sending
    await offload(accounts.set_preferences, hub, me.account_id, **sending.entered)
    sending.run_id = out.run_id
    return sending


def _also_posts(hub: Hub, out: testruns.TestRunOut) -> list[str]:
    """Where a live test posts that is no person (a step without ``for_test``): "#sales
    (Slack)", "https://… (Webhook)"."""
    found = []
    for s in out.steps:
        action = hub.registry.actions.get(s.action)
        if action is None or action.for_test is not None:
            continue
        where = s.output.get("url") or s.output.get("to")
        channel = label_for(s.action.partition(".")[0])
        found.append(f"{where} ({channel})" if isinstance(where, str) and where else channel)
    return found


async def _panel(
    hub: Hub,
    me: Me,
    out: testruns.TestRunOut,
    workflow_id: str | None,
    *,
    form: str,
    retest: dict[str, str],
    send: dict[str, str] | None,
    choices: list[tuple[str, str]],
    event_type: str | None = None,
    sending: Sending | None = None,
) -> dict[str, Any]:
    """The panel's context (``_test_panel.html`` reads it as ``test_panel``). ``form``: the id
    of the form the send fields belong to; ``retest``: the form (``form``), field name
    (``field``) and ``op`` (if any) that test again with another sample booking; ``send``:
    the send button's ``url`` (its form's action) and ``op``, None when the workflow is not
    saved; ``choices``: the account's recent bookings to test with (value, words)."""
    prefs = await offload(accounts.get_preferences, hub, me.account_id)
    month: credits.Credits | None = None
    steps = []
    for s in out.steps:
        text = s.output.get("text") if s.kind == "sms" else None
        body = s.output.get("html") if s.kind == "email" else None
        count = sms_count(text) if isinstance(text, str) else None
        cost = None
        if count is not None and credits.kind_of(hub.registry.actions.get(s.action)):
            if month is None:  # read once, for the first SMS step
                month = await offload(credits.sms_usage, hub, me.account_id)
            cost = credit_words.send_cost(month, count.segments)
        steps.append(
            {
                "step": s,
                "sms": count,
                "cost": cost,
                "document": email_document(body, s.output["subject"])
                if isinstance(body, str)
                else None,
            }
        )
    remembered = {"test_email": prefs.test_email, "test_phone": prefs.test_phone}
    # After a send the fields stay as entered; a refused send's errors go by its fields.
    given = sending.entered if sending and sending.entered else remembered
    placed: dict[str, list[str]] = {}
    for e in sending.errors if sending else []:
        placed.setdefault(e.field, []).append(e.message)
    return {
        "steps": steps,
        "event": out.event,
        "ready": all(s.ready for s in out.steps),
        "path": out.path,  # the workflow's own conditions for this booking
        "would_run": out.would_run,
        "send": send,
        "form": form,
        "email": given.get("test_email") or "",
        "phone": given.get("test_phone") or "",
        "errors": placed,
        "run_id": sending.run_id if sending else None,
        "also_posts": _also_posts(hub, out),
        "retest": retest,
        "event_types": _event_types(hub),
        "bookings": choices,
        "event_type": event_type,
    }


async def draft_panel(
    hub: Hub,
    me: Me,
    spec: WorkflowIn,
    workflow_id: str | None,
    form: FormMultiDict,
    *,
    send_draft: bool = False,
) -> dict[str, Any]:
    """The Test panel for the editor's draft as it is on screen (not saved): the context the
    editor renders with ``{% include "_test_panel.html" %}``, inside or beside its form (whose
    id is ``editor``: the send fields belong to it). ``workflow_id`` is the stored workflow
    the draft edits (its kept secrets), None for a new one. ``send_draft``: "send a test to
    me" was pressed: the draft's live test run to the recipients in ``form``."""
    choices = await offload(_recent_bookings, hub, me.account_id)
    chosen, event = await offload(
        _sample, hub, me.account_id, str(form.get("test_event_type", "")), spec.trigger, choices
    )
    sending = None
    if send_draft and workflow_id is not None:
        sending = await send(hub, me, form, workflow_id, spec, event)
    draft = await offload(
        testruns.dry_run_draft,
        hub,
        me.account_id,
        spec,
        workflow_id,
        event,
        standing=_is_booking(chosen),
    )
    # The editor's own form and its Test button's op.
    retest = {"form": "editor", "field": "test_event_type", "op": "test"}
    return await _panel(
        hub,
        me,
        draft,
        workflow_id,
        form="editor",
        retest=retest,
        send={"url": f"/workflows/{workflow_id}#test-panel", "op": "send"} if workflow_id else None,
        choices=choices,
        event_type=chosen,
        sending=sending,
    )


def _event_types(hub: Hub) -> list[str]:
    return [t.name for t in hub.registry.triggers.values() if t.kind == "event"]


def _is_booking(choice: str | None) -> bool:
    """Whether the sample chosen is one of the account's bookings (seen as it stands now)."""
    return choice is not None and choice.startswith(BOOKING_CHOICE)


def _recent_bookings(hub: Hub, account_id: str) -> list[tuple[str, str]]:
    """The bookings of the account's last events, newest first, each once: the sample
    chooser's value for it and its words ("Intro call · Grace Hopper")."""
    seen: set[str] = set()
    choices = []
    for e in activity.list_events(hub, account_id, limit=RECENT_BOOKINGS).items:
        if e.booking_uid in seen:
            continue
        seen.add(e.booking_uid)
        words = " · ".join(filter(None, [e.booking_title or e.event_type, e.invitee_name]))
        choices.append((BOOKING_CHOICE + e.id, words or e.booking_uid))
    return choices


def _sample(
    hub: Hub, account_id: str, choice: str, trigger: str, bookings: list[tuple[str, str]]
) -> tuple[str | None, BookingEvent | None]:
    """The sample chosen and the event to test with (None: the trigger's sample): an event
    type's sample, or one of the account's ``bookings`` as the trigger would send it."""
    if choice in _event_types(hub):
        return choice, sample_event(choice)
    if choice not in {value for value, _ in bookings}:
        return None, None
    try:
        booking = activity.event_booking(hub, account_id, choice.removeprefix(BOOKING_CHOICE))
    except NotFound:
        return None, None
    sample = testruns.sample_for(trigger).model_dump(mode="json")
    event = BookingEvent.model_validate({**sample, "booking": booking.model_dump(mode="json")})
    return choice, event


async def _test_page(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    workflow_id: str,
    choice: str | None,
    *,
    sending: Sending | None = None,
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    choices = await offload(_recent_bookings, hub, me.account_id)
    chosen, event = await offload(_sample, hub, me.account_id, choice or "", wf.trigger, choices)
    out = await offload(
        testruns.dry_run, hub, me.account_id, workflow_id, event, standing=_is_booking(chosen)
    )
    panel = await _panel(
        hub,
        me,
        out,
        wf.id,
        form="send-test",
        retest={"form": "retest", "field": "event_type"},
        send={"url": f"/workflows/{wf.id}/test/send", "op": ""},
        choices=choices,
        event_type=chosen,
        sending=sending,
    )
    return page(
        request,
        "test.html",
        me=me,
        status=422 if sending and sending.errors else 200,
        workflow=wf,
        test_panel=panel,
        trigger=trigger_text(hub, wf.trigger, wf.offset_minutes),
    )


@get("/workflows/{workflow_id:str}/test")
async def test_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    event_type: FromQuery[str | None] = None,
    run: FromQuery[str | None] = None,
) -> Template:
    shown = Sending({}, [], run) if run else None
    return await _test_page(request, hub, me, workflow_id, event_type, sending=shown)


@post("/workflows/{workflow_id:str}/test/send")
async def send_test(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Template | Redirect:
    """The live test run of the saved version to the address and phone entered (remembered
    for next time)."""
    sending = await send(hub, me, await request.form(), workflow_id)
    if sending.errors:
        return await _test_page(request, hub, me, workflow_id, None, sending=sending)
    return see_other(f"/workflows/{workflow_id}/test?run={sending.run_id}")


HANDLERS = [test_workflow, send_test]
