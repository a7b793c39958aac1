"""sms.send with the core's services: it asks Twilio for status callbacks at the account's
callback URL, and a number on the suppression list (or one Twilio answers 21610 for) is not
texted: the step ends opted_out and the run goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linktime import integrations, suppressions, workflows
from linktime.accounts import create_account
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.services import account_key

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime.runs import RunOut
    from linktime_twilio_testing import FakeTwilio

PUBLIC = "https://hub.example.com"
INVITEE, HOST = "+14155550101", "+14155550100"
STEPS = [
    workflows.StepIn(action="sms.send", settings={"text": "Hi {{ invitee.name }}"}),
    workflows.StepIn(action="sms.send", settings={"to": "host", "text": "Booked"}),
]


def run(hub: Hub, credentials: dict[str, str], *, stopped: str | None = None) -> RunOut:
    """Connect Twilio, save a two-text workflow, put ``stopped`` on the list, emit a booking."""
    account = create_account(hub, "Acme", "pro")
    integrations.connect(hub, account.id, "twilio", credentials)
    spec = workflows.WorkflowIn(name="Texts", trigger="booking.created", enabled=True, steps=STEPS)
    workflows.create(hub, account.id, spec)
    if stopped is not None:
        with hub.db.begin() as conn:
            suppressions.add(
                conn, account.id, stopped, "replied STOP", suppressions.SMS_STOP, hub.clock()
            )
    [run_id] = hub.emit(sample_event(), account_id=account.id).run_ids
    hub.process_run(run_id)
    return get_run(hub, account.id, run_id)


def test_each_text_asks_for_status_callbacks(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    linktime_hub.settings.public_url = PUBLIC
    done = run(linktime_hub, credentials)
    key = account_key(linktime_hub.secret_key(), done.account_id)
    assert [s.status_callback for s in twilio.sent] == [f"{PUBLIC}/v1/callbacks/twilio/{key}"] * 2


def test_without_a_public_url_no_callback_is_asked_for(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    run(linktime_hub, credentials)
    assert [s.status_callback for s in twilio.sent] == [None, None]


def test_a_suppressed_number_is_not_texted_and_the_run_goes_on(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    done = run(linktime_hub, credentials, stopped=INVITEE)
    assert [s.status for s in done.steps] == ["opted_out", "succeeded"]
    assert done.steps[0].error is not None and "replied STOP" in done.steps[0].error
    assert [s.to for s in twilio.sent] == [HOST]
    assert not any(INVITEE[1:] in r.body.decode() for r in twilio.receiver.requests)


def test_twilio_answering_21610_puts_the_number_on_the_list(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    twilio.unsubscribed.add(INVITEE)
    done = run(linktime_hub, credentials)
    assert [(s.status, s.error_code) for s in done.steps] == [
        ("opted_out", "twilio_21610"),
        ("succeeded", None),
    ]
    with linktime_hub.db.connect() as conn:
        entry = suppressions.lookup(conn, done.account_id, INVITEE)
    assert entry is not None and entry.source == suppressions.PROVIDER
