"""Test before you enable: the dry run of a workflow (the editor's draft, or the saved version
on /workflows/{id}/test), each step with its readiness and a preview as its recipient sees it,
and "send a test to me" (the live test run of the saved version to the account's remembered
test recipients)."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from .. import accounts, testruns, workflows
from ..engine import Hub
from ..errors import FieldError
from ..models import BookingEvent, sample_event
from ..offload import offload
from ..workflows import WorkflowIn
from .account import phone_digits, recipient_errors
from .app import AnyRequest, Me, page, see_other, trigger_text

# GSM 03.38: a text of only these characters is sent 7 bits a character (160 to a message,
# 153 to each part of a longer one); the extension characters take two. Any other character
# makes the whole text UCS-2 (70, then 67 to a part), counted in UTF-16 units.
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsCount:
    characters: int
    segments: int
    encoding: str  # "GSM-7" or "UCS-2"


def sms_count(text: str) -> SmsCount:
    """How many characters a text has and how many messages it is sent as."""
    if all(c in GSM7 or c in GSM7_EXTENSION for c in text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, part, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else math.ceil(units / part)
    return SmsCount(len(text), segments, encoding)


def email_document(body: str, subject: str) -> str:
    """The email's HTML as a document for the preview frame: a fragment gets the language and
    title a page needs (screen readers announce the frame by them)."""
    if re.search(r"<html[\s>]", body, re.IGNORECASE):
        return body
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head><body>{body}</body></html>"
    )


def _send_errors(email: str | None, phone: str | None) -> list[FieldError]:
    errors = []
    if email is None and phone is None:
        errors.append(
            FieldError("test_email", "Enter an email address or a phone number to send to.")
        )
    return errors + recipient_errors(email, phone)


def _what_is_sent(out: testruns.TestRunOut) -> list[tuple[str, dict[str, Any]]]:
    return [(s.action, s.output) for s in out.steps]


async def _panel(
    hub: Hub,
    me: Me,
    out: testruns.TestRunOut,
    workflow_id: str | None,
    *,
    form: str,
    retest: dict[str, str],
    unsaved: bool,
    event_type: str | None = None,
    entered: dict[str, str | None] | None = None,
    errors: list[FieldError] | None = None,
) -> dict[str, Any]:
    """The panel's context (``_test_panel.html`` reads it as ``test_panel``). ``form``: the id
    of the form the send fields belong to; ``retest``: the form (``form``), field name
    (``field``) and ``op`` (if any) that test again with another sample booking; ``unsaved``:
    the draft differs from what a live test would send (the saved version)."""
    prefs = await offload(accounts.get_preferences, hub, me.account_id)
    steps = []
    for s in out.steps:
        text = s.output.get("text") if s.kind == "sms" else None
        body = s.output.get("html") if s.kind == "email" else None
        steps.append(
            {
                "step": s,
                "sms": sms_count(text) if isinstance(text, str) else None,
                "document": email_document(body, s.output["subject"])
                if isinstance(body, str)
                else None,
            }
        )
    given = entered or {"test_email": prefs.test_email, "test_phone": prefs.test_phone}
    placed: dict[str, list[str]] = {}
    for e in errors or []:
        placed.setdefault(e.field, []).append(e.message)
    return {
        "steps": steps,
        "event": out.event,
        "ready": all(s.ready for s in out.steps),
        "send_url": f"/workflows/{workflow_id}/test/send" if workflow_id else None,
        "form": form,
        "unsaved": unsaved,
        "email": given.get("test_email") or "",
        "phone": given.get("test_phone") or "",
        "errors": placed,
        "retest": retest,
        "event_types": _event_types(hub),
        "event_type": event_type,
    }


async def draft_panel(
    hub: Hub, me: Me, spec: WorkflowIn, workflow_id: str | None, event_type: str | None
) -> dict[str, Any]:
    """The Test panel for the editor's draft as it is on screen (not saved): the context the
    editor renders with ``{% include "_test_panel.html" %}``, inside or beside its form (whose
    id is ``editor``: the send fields belong to it). ``workflow_id`` is the stored workflow
    the draft edits (its kept secrets), None for a new one."""
    chosen, event = _sample(hub, event_type)
    draft = await offload(testruns.dry_run_draft, hub, me.account_id, spec, workflow_id, event)
    unsaved = False
    if workflow_id is not None:
        saved = await offload(testruns.dry_run, hub, me.account_id, workflow_id, event)
        unsaved = _what_is_sent(saved) != _what_is_sent(draft)
    # The editor's own form and its Test button's op.
    retest = {"form": "editor", "field": "test_event_type", "op": "test"}
    return await _panel(
        hub,
        me,
        draft,
        workflow_id,
        form="editor",
        retest=retest,
        unsaved=unsaved,
        event_type=chosen,
    )


def _event_types(hub: Hub) -> list[str]:
    return [t.name for t in hub.registry.triggers.values() if t.kind == "event"]


def _sample(hub: Hub, event_type: str | None) -> tuple[str | None, BookingEvent | None]:
    """The event type asked for, if there is one, and its sample (None: the trigger's)."""
    if event_type not in _event_types(hub):
        return None, None
    return event_type, sample_event(event_type)


async def _test_page(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    workflow_id: str,
    event_type: str | None,
    *,
    run_id: str | None = None,
    entered: dict[str, str | None] | None = None,
    errors: list[FieldError] | None = None,
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    chosen, event = _sample(hub, event_type)
    out = await offload(testruns.dry_run, hub, me.account_id, workflow_id, event)
    panel = await _panel(
        hub,
        me,
        out,
        wf.id,
        form="send-test",
        retest={"form": "retest", "field": "event_type"},
        unsaved=False,
        event_type=chosen,
        entered=entered,
        errors=errors,
    )
    return page(
        request,
        "test.html",
        me=me,
        status=422 if errors else 200,
        workflow=wf,
        test_panel=panel,
        run_id=run_id,
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
    return await _test_page(request, hub, me, workflow_id, event_type, run_id=run)


@post("/workflows/{workflow_id:str}/test/send")
async def send_test(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Template | Redirect:
    """The live test run of the saved version to the address and phone entered (remembered
    for next time). The editor's form may post here too: only these two fields are read."""
    form = await request.form()
    email = str(form.get("test_email", "")).strip()[:320]
    # Spaces, dashes and brackets are how people write numbers, not part of them.
    phone = phone_digits(str(form.get("test_phone", "")))[:40]
    entered = {"test_email": email or None, "test_phone": phone or None}
    errors = _send_errors(entered["test_email"], entered["test_phone"])
    if errors:
        return await _test_page(request, hub, me, workflow_id, None, entered=entered, errors=errors)
    await offload(workflows.get, hub, me.account_id, workflow_id)  # another's: 404, nothing kept
    await offload(accounts.set_preferences, hub, me.account_id, **entered)
    recipients = testruns.TestRecipients(email=entered["test_email"], phone=entered["test_phone"])
    out = await offload(testruns.live, hub, me.account_id, workflow_id, recipients)
    return see_other(f"/workflows/{workflow_id}/test?run={out.run_id}")


HANDLERS = [test_workflow, send_test]
