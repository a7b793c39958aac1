"""sms.send with the core's services: it asks Twilio for status callbacks at the account's
callback URL, and a number on the suppression list (or one Twilio answers 21610 for) is not
texted: the step ends opted_out and the run goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linktime import suppressions, workflows
from linktime.services import account_key
from linktime_twilio_testing import run_workflow

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime.storage import Run
    from linktime_twilio_testing import FakeTwilio

PUBLIC = "https://hub.example.com"
INVITEE, HOST = "+14155550101", "+14155550100"
STEPS = [
    workflows.StepIn(action="sms.send", settings={"text": "Hi {{ invitee.name }}"}),
    workflows.StepIn(action="sms.send", settings={"to": "host", "text": "Booked"}),
]


def run(hub: Hub, credentials: dict[str, str], *, stopped: str | None = None) -> Run:
    return run_workflow(hub, credentials, STEPS, plan="pro", stopped=stopped)


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
