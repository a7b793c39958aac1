"""What a worker and a scheduler say at INFO: one line per run re-sent because it was lost, per
retry scheduled and per run that ends failed, each naming the run, the step and the account;
never a secret, the message sent, the receiver's answer or the error text."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.testing import HttpReceiver, Reply

from .conftest import Clock, System
from .test_delivery import SECRET


def test_a_failing_run_is_logged_by_ids_without_secrets_or_bodies(
    make_system: Callable[..., System],
    http_receiver: HttpReceiver,
    allow_loopback: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = "the receiver's private answer"
    http_receiver.default = Reply(status=503, body=answer)
    clock = Clock(datetime.now(UTC))
    # No worker: the run's first message is never picked up, and each step is driven by hand.
    system = make_system(clock=clock, retry_schedule=[0.1])
    hub = system.hub
    account = system.account()
    system.workflow(
        account,
        [
            {
                "action": "webhook.call",
                "settings": {"url": f"{http_receiver.url}/hook", "secret": SECRET},
            }
        ],
    )
    event = sample_event()
    run_id = hub.emit(event, account_id=account.id).run_ids[0]
    caplog.set_level(logging.INFO)

    clock.advance(seconds=hub.settings.requeue_after_seconds + 1)
    assert hub.due_runs() == [run_id]  # re-sent: its message was not picked up
    hub.process_run(run_id)
    clock.advance(seconds=1)
    assert hub.due_runs() == [run_id]  # the retry comes due: not a re-send
    hub.process_run(run_id)

    run = get_run(hub, account.id, run_id)
    assert run.status == "failed"
    step = run.steps[0]
    # The hub's clock stands still between the moves the test makes: the retry is due 0.1 s
    # after the first attempt started.
    retry_at = step.attempt_log[0].started_at + timedelta(seconds=0.1)
    ids = f"run {run_id} step {step.id} account {account.id}"
    lines = [r.getMessage() for r in caplog.records if r.name == "linktime.engine"]
    assert lines == [
        f"{ids}: re-enqueued by the sweeper (its message was not picked up)",
        f"{ids}: attempt 1 ended http_503 (http 503); retry 2 at "
        + retry_at.isoformat().replace("+00:00", "Z"),
        f"{ids}: attempt 2 ended http_503 (http 503); run failed",
    ]
    assert len(http_receiver.requests) == 2
    assert [r.levelno for r in caplog.records if r.name == "linktime.engine"] == [logging.INFO] * 3

    sent = http_receiver.requests[0].body.decode()
    said = step.attempt_log[0].error or ""
    for private in (SECRET, SECRET.removeprefix("whsec_"), answer, said, sent):
        assert private and private not in caplog.text
    for value in (event.booking.invitee.email, event.booking.notes):
        assert value and value not in caplog.text
