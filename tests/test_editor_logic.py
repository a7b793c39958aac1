"""The workflow editor's logic, without a browser: conditions rows (the workflow's, a filter's,
a step's "Only when…"), delays, fallbacks, kept through the draft and saved as the API takes
them; the service's errors placed beside the row's input; and the Test dry run's path."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from linktime import testruns, workflows
from linktime.models import sample_event
from linktime.workflows import WorkflowIn

from .test_dashboard import Form, SignedIn, field_error, open_dash, signed_in

FIXTURES = (open_dash, signed_in)  # the dashboard's, used by name below

EMAIL = {"to_invitee": "on", "subject": "Your booking is not paid yet", "text": "Please pay."}


def lean(value: Any) -> Any:
    """Stored conditions without the keys left empty (null)."""
    if isinstance(value, list):
        return [lean(v) for v in value]
    if isinstance(value, dict):
        return {k: lean(v) for k, v in value.items() if v is not None}
    return value


def unpaid_reminder_form(**extra: Any) -> dict[str, Any]:
    """The editor's form for "Unpaid booking reminder", as a browser without JS posts it."""
    form: dict[str, Any] = {
        "name": "Unpaid booking reminder",
        "trigger": "booking.created",
        "op": "save",
        "conditions.0.field": "event_type.slug",
        "conditions.0.key": "",
        "conditions.0.op": "in",
        "conditions.0.value": "intro-call, demo",
        "steps.0.action": "logic.delay",
        "steps.0.settings.mode": "for",
        "steps.0.settings.amount": "24",
        "steps.0.settings.unit": "hours",
        "steps.1.action": "logic.filter",
        "steps.1.settings.conditions.0.field": "booking.paid",
        "steps.1.settings.conditions.0.op": "eq",
        "steps.1.settings.conditions.0.value": "false",
        "steps.2.action": "email.send",
        **{f"steps.2.settings.{k}": v for k, v in EMAIL.items()},
        "steps.2.when.0.field": "custom.*",
        "steps.2.when.0.key": "company_size",
        "steps.2.when.0.op": "gte",
        "steps.2.when.0.value": "50",
        "steps.2.when.1.field": "invitee.email",
        "steps.2.when.1.op": "contains",
        "steps.2.when.1.value": "@example.com",
        "steps.2.when.any": "on",
    }
    return {**form, **extra}


def test_unpaid_reminder_is_built_saved_and_shown_again(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    page = dash.edit("/workflows/new", unpaid_reminder_form())
    assert "Saved “Unpaid booking reminder”" in page.text, page.text[-3000:]
    (saved,) = workflows.list_all(system.hub, account.id)
    assert saved.conditions == [
        {"field": "event_type.slug", "op": "in", "value": ["intro-call", "demo"]}
    ]
    delay, flt, email = saved.steps
    assert delay.action == "logic.delay"
    assert (delay.settings["amount"], delay.settings["unit"]) == (24, "hours")
    assert lean(flt.settings["conditions"]) == [
        {"field": "booking.paid", "op": "eq", "value": False}
    ]
    assert email.when == [
        {
            "any": [
                {"field": "custom.company_size", "op": "gte", "value": 50},
                {"field": "invitee.email", "op": "contains", "value": "@example.com"},
            ]
        }
    ]
    shown = dash.get(f"/workflows/{saved.id}").text
    assert 'name="steps.0.settings.amount" value="24"' in shown
    assert re.search(r'<option value="booking.paid"[^>]* selected>', shown)
    assert 'name="steps.2.when.0.key" value="company_size"' in shown
    assert 'id="steps-2-when-any" name="steps.2.when.any" value="on" checked' in shown


def test_a_bad_value_is_named_beside_its_input_and_every_edit_is_kept(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    form = unpaid_reminder_form(
        **{
            "steps.1.settings.conditions.0.value": "maybe",  # a boolean's value
            "steps.2.when.0.op": "before",  # not an operator of a custom field
            "conditions.1.field": "guests.count",
            "conditions.1.op": "gt",
            "conditions.1.value": "",
            "conditions.2.field": "",  # a row left blank is left out
            "conditions.2.op": "eq",
            "conditions.2.value": "",
        }
    )
    page = dash.edit("/workflows/new", form).text
    assert "The workflow was not saved" in page
    assert "true or false" in field_error(page, "steps-1-settings-conditions-0-value")
    assert "'before' is not an op" in field_error(page, "steps-2-when-0-op")
    assert "a number" in field_error(page, "conditions-1-value")
    assert workflows.list_all(system.hub, account.id) == []
    # The draft came back whole: the delay, the other rows, the email.
    assert 'name="steps.0.settings.amount" value="24"' in page
    assert 'name="steps.2.when.1.value" value="@example.com"' in page
    assert 'name="conditions.0.value" value="intro-call, demo"' in page
    assert ">Your booking is not paid yet</textarea>" in page


def test_rows_and_a_fallback_are_added_without_js_and_saved(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    form = unpaid_reminder_form(op="cond:steps.1.settings.conditions:add")
    page = dash.edit("/workflows/new", form)
    assert 'name="steps.1.settings.conditions.1.field"' in page.text
    # A fallback chosen: its settings form is shown, the draft kept.
    form = {**form, "op": "fallback:2", "steps.2.fallback.action": "webhook.call"}
    page = dash.edit("/workflows/new", form | {"draft": _draft_token(page.text)})
    assert 'name="steps.2.fallback.settings.url"' in page.text
    form |= {
        "op": "save",
        "draft": _draft_token(page.text),
        "steps.2.fallback.shown": "webhook.call",
        "steps.2.fallback.settings.url": "https://example.com/unpaid",
        "steps.2.fallback.settings.method": "POST",
    }
    page = dash.edit("/workflows/new", form)
    assert "Saved “Unpaid booking reminder”" in page.text, page.text[-2000:]
    (saved,) = workflows.list_all(system.hub, account.id)
    fallback = saved.steps[2].fallback
    assert fallback is not None and fallback.action == "webhook.call"
    assert fallback.settings["url"] == "https://example.com/unpaid"
    shown = dash.get(f"/workflows/{saved.id}").text
    assert 'name="steps.2.fallback.settings.url" value="https://example.com/unpaid"' in shown


# Conditions saved through the API that rows would read back as other conditions: shown as
# JSON instead, so that saving the workflow unchanged keeps them.
AS_JSON: dict[str, list[dict[str, Any]]] = {
    "comma_in_a_listed_value": [
        {"field": "booking.location", "op": "in", "value": ["Berlin, Germany", "Paris"]}
    ],
    "number_for_a_custom_field": [{"field": "custom.company_size", "op": "eq", "value": 50}],
    "numbers_listed_for_a_custom_field": [{"field": "custom.seats", "op": "in", "value": [1, 2]}],
    "outer_spaces": [{"field": "booking.notes", "op": "contains", "value": " vip "}],
    "in_an_any_group": [
        {
            "any": [
                {"field": "invitee.email", "op": "contains", "value": "@example.com"},
                {"field": "custom.plan", "op": "ne", "value": 7},
            ]
        }
    ],
}
# And ones the rows show as they are.
AS_ROWS: dict[str, list[dict[str, Any]]] = {
    "time": [{"field": "booking.start", "op": "after", "value": "2026-12-01T15:00:00+01:00"}],
    "not_set": [{"field": "invitee.phone", "op": "exists", "value": False}],
    "large_amount": [{"field": "payment.amount", "op": "gte", "value": 1e15}],
    "small_amount": [{"field": "payment.amount", "op": "gte", "value": 0.0001}],
    "custom_text": [{"field": "custom.company_size", "op": "eq", "value": "50"}],
    "custom_order": [{"field": "custom.company_size", "op": "gte", "value": 50}],
}


@pytest.mark.parametrize("name", [*AS_JSON, *AS_ROWS])
def test_a_workflow_saved_unchanged_keeps_its_conditions(signed_in: SignedIn, name: str) -> None:
    system, account, dash = signed_in
    conds = AS_JSON.get(name) or AS_ROWS[name]
    flt = {"action": "logic.filter", "settings": {"conditions": conds}}
    email = {"action": "email.send", "settings": {**EMAIL, "to_invitee": True}, "when": conds}
    wf_id = system.workflow(account, [flt, email], enabled=False, conditions=conds)
    page = dash.get(f"/workflows/{wf_id}").text
    for prefix in ("conditions", "steps.0.settings.conditions", "steps.1.when"):
        assert (f'name="{prefix}.json"' in page) == (name in AS_JSON), prefix
    assert "Saved" in dash.edit(f"/workflows/{wf_id}", Form(page).values() | {"op": "save"}).text
    (saved,) = workflows.list_all(system.hub, account.id)
    assert saved.conditions == conds
    assert lean(saved.steps[0].settings["conditions"]) == conds
    assert saved.steps[1].when == conds


def test_logic_steps_offer_no_only_when(signed_in: SignedIn) -> None:
    system, account, dash = signed_in
    dash.get("/workflows/new")
    page = dash.edit("/workflows/new", unpaid_reminder_form(op="test")).text
    shown = Form(page).controls  # not the cards kept for editor.js to add (<template>)
    assert "steps.2.when.0.field" in shown
    assert not [n for n in shown if n.startswith(("steps.0.when.", "steps.1.when."))]
    # A stray "Only when…" posted for a delay or a filter is not sent (the API refuses it).
    stray = {"steps.1.when.0.field": "booking.paid", "steps.1.when.0.op": "eq"}
    page = dash.edit("/workflows/new", unpaid_reminder_form(**stray)).text
    assert "Saved “Unpaid booking reminder”" in page, page[-2000:]
    (saved,) = workflows.list_all(system.hub, account.id)
    assert saved.steps[1].when is None


def _draft_token(page: str) -> str:
    found = re.search(r'name="draft" value="([^"]*)"', page)
    assert found
    return found.group(1)


# -- the Test dry run: the path a run would take --------------------------------------------


def _paths(out: testruns.TestRunOut) -> list[tuple[str, str]]:
    return [(s.outcome, s.path) for s in out.steps]


def _unpaid(
    paid: bool,
    when: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> WorkflowIn:
    email = {"action": "email.send", "settings": {**EMAIL, "to_invitee": True}, "when": when}
    return WorkflowIn(
        name="Unpaid booking reminder",
        trigger="booking.created",
        conditions=conditions or [],
        steps=[
            {"action": "logic.delay", "settings": {"amount": 3, "unit": "days"}},
            {
                "action": "logic.filter",
                "settings": {"conditions": [{"field": "booking.paid", "op": "eq", "value": paid}]},
            },
            email,
        ],
    )


def test_the_dry_run_goes_on_past_a_filter_that_holds(signed_in: SignedIn) -> None:
    system, account, _ = signed_in
    out = testruns.dry_run_draft(system.hub, account.id, _unpaid(paid=False))
    assert _paths(out) == [
        ("waits", "Waits 3 days (a test send does not wait)"),
        ("goes_on", "Filter: goes on — every condition held"),
        ("runs", "Runs"),
    ]


def test_the_dry_run_stops_at_a_filter_that_does_not_hold(signed_in: SignedIn) -> None:
    system, account, _ = signed_in
    out = testruns.dry_run_draft(system.hub, account.id, _unpaid(paid=True))
    assert _paths(out)[1:] == [
        ("stops", "Filter: stops here: booking.paid eq true did not hold: it was false"),
        ("not_reached", "Not reached: the run stops at step 2"),
    ]


def test_the_dry_run_skips_a_step_whose_conditions_do_not_hold(signed_in: SignedIn) -> None:
    system, account, _ = signed_in
    when = [{"field": "invitee.email", "op": "eq", "value": "ada@example.com"}]
    out = testruns.dry_run_draft(system.hub, account.id, _unpaid(paid=False, when=when))
    assert _paths(out)[2] == (
        "skipped",
        'Skipped: its conditions did not hold: invitee.email eq "ada@example.com" did not '
        'hold: it was "grace@example.com"',
    )


def test_the_dry_run_of_a_saved_workflow_names_the_fallback(signed_in: SignedIn) -> None:
    system, account, _ = signed_in
    hook = {
        "action": "webhook.call",
        "settings": {"url": "https://example.com/hook"},
        "fallback": {"action": "email.send", "settings": {**EMAIL, "to_invitee": True}},
    }
    workflow = system.workflow(account, [hook])
    (step,) = testruns.dry_run(system.hub, account.id, workflow).steps
    assert (step.outcome, step.path) == ("runs", "Runs")
    assert step.fallback is not None
    assert step.fallback.path == "If it fails: email.send to Grace Hopper <grace@example.com>"


def test_a_given_booking_is_seen_as_it_stands_now(signed_in: SignedIn) -> None:
    system, account, _ = signed_in
    for kind in ("booking.created", "payment.received"):
        event = sample_event(kind, id=f"evt_{kind}")
        system.hub.emit(event, account_id=account.id)
    sample = sample_event("booking.created")
    spec = _unpaid(paid=False)
    # The sample as its event says (not paid); the stored booking as it stands (paid).
    assert _paths(testruns.dry_run_draft(system.hub, account.id, spec, event=sample))[1][0] == (
        "goes_on"
    )
    standing = testruns.dry_run_draft(system.hub, account.id, spec, event=sample, standing=True)
    assert _paths(standing)[1] == (
        "stops",
        "Filter: stops here: booking.paid eq false did not hold: it was true",
    )


NOT_GRACE = [{"field": "invitee.email", "op": "eq", "value": "ada@example.com"}]
NOT_GRACE_SAID = (
    "the workflow's conditions did not hold: "
    'invitee.email eq "ada@example.com" did not hold: it was "grace@example.com"'
)


def test_the_dry_run_runs_no_step_when_the_workflows_conditions_do_not_hold(
    signed_in: SignedIn,
) -> None:
    system, account, dash = signed_in
    spec = _unpaid(paid=False, conditions=NOT_GRACE)
    out = testruns.dry_run_draft(system.hub, account.id, spec)
    assert not out.would_run
    assert out.path == f"Would not run: {NOT_GRACE_SAID}"
    assert _paths(out) == [("not_run", f"Not run: {NOT_GRACE_SAID}")] * 3
    # The saved workflow's Test page says it above the steps.
    email = {"action": "email.send", "settings": {**EMAIL, "to_invitee": True}}
    wf_id = system.workflow(account, [email], conditions=NOT_GRACE)
    page = html.unescape(dash.get(f"/workflows/{wf_id}/test").text)
    assert f'id="test-run-path">Would not run: {NOT_GRACE_SAID}</p>' in page
    assert f'path-not-run">Not run: {NOT_GRACE_SAID}</p>' in page


def test_the_dry_run_says_a_reminder_checks_its_conditions_when_it_fires(
    signed_in: SignedIn,
) -> None:
    system, account, _ = signed_in
    email = {"action": "email.send", "settings": {**EMAIL, "to_invitee": True}}
    fires = (
        "the workflow's conditions are checked when the reminder fires, against the booking "
        "as it is then; for this booking they"
    )
    for conds, would_run, said in (
        ([{"field": "invitee.email", "op": "eq", "value": "grace@example.com"}], True, "hold"),
        (
            NOT_GRACE,
            False,
            'do not hold: invitee.email eq "ada@example.com" did not hold: '
            'it was "grace@example.com"',
        ),
    ):
        wf_id = system.workflow(
            account, [email], trigger="meeting.before", offset_minutes=60, conditions=conds
        )
        out = testruns.dry_run(system.hub, account.id, wf_id)
        assert out.would_run is would_run
        assert out.path == ("Runs: " if would_run else "Would not run: ") + f"{fires} {said}"
        assert _paths(out)[0][0] == ("runs" if would_run else "not_run")
