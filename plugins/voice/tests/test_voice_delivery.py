"""voice.call with the core's services: it asks Twilio for the call's progress (initiated,
ringing, answered, completed) at the account's callback URL, and does not call a number on the
suppression list: the step ends opted_out and the run goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linktime import workflows
from linktime.services import account_key
from linktime_twilio_testing import run_workflow

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime.storage import Run
    from linktime_twilio_testing import FakeTwilio

PUBLIC = "https://hub.example.com"
INVITEE, HOST = "+14155550101", "+14155550100"
STEPS = [
    workflows.StepIn(action="voice.call", settings={"script": "Hello {{ invitee.name }}"}),
    workflows.StepIn(action="voice.call", settings={"to": "host", "script": "Booked"}),
]


def run(hub: Hub, credentials: dict[str, str], *, stopped: str | None = None) -> Run:
    return run_workflow(hub, credentials, STEPS, plan="business", stopped=stopped)


def test_each_call_asks_for_its_progress(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    linktime_hub.settings.public_url = PUBLIC
    done = run(linktime_hub, credentials)
    key = account_key(linktime_hub.secret_key(), done.account_id)
    [first, _] = twilio.calls
    assert first.status_callback == f"{PUBLIC}/v1/callbacks/twilio/{key}"
    assert first.status_callback_event == ("initiated", "ringing", "answered", "completed")


def test_without_a_public_url_no_progress_is_asked_for(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    run(linktime_hub, credentials)
    assert [(c.status_callback, c.status_callback_event) for c in twilio.calls] == [(None, ())] * 2


def test_a_suppressed_number_is_not_called_and_the_run_goes_on(
    linktime_hub: Hub, twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    done = run(linktime_hub, credentials, stopped=INVITEE)
    assert [s.status for s in done.steps] == ["opted_out", "succeeded"]
    assert [c.to for c in twilio.calls] == [HOST]
