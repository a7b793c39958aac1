"""The slack.post action, with the real slack-sdk clients against a loopback stand-in for Slack."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import linktime_slack
import pytest
from linktime import accounts, integrations, workflows
from linktime.actions import Outcome, Result
from linktime.errors import InputError
from linktime.models import BookingEvent, sample_event
from linktime.runs import get_run
from linktime.testing import Reply, RunAction
from pydantic import ValidationError

if TYPE_CHECKING:
    from linktime.engine import Hub
    from linktime_slack_testing import FakeSlack

TEXT = "New booking: {{ attendee_name }} for {{ event_name }}"


def channel_step(channel: str = "#sales", text: str = TEXT) -> dict[str, Any]:
    return {"channel": channel, "text": text}


def api_reply(status: int, data: dict[str, Any], **headers: str) -> Reply:
    """A Web API answer as Slack sends it: JSON, errors as ``{"ok": false, "error": …}``."""
    return Reply(status, json.dumps(data), {"Content-Type": "application/json", **headers})


def creds(slack: FakeSlack) -> dict[str, str]:
    return {"bot_token": slack.token}


def fields_of(message: dict[str, Any]) -> dict[str, str]:
    """The details section as label -> value."""
    [details] = [b for b in message["blocks"] if "fields" in b]
    pairs = (f["text"].split("\n", 1) for f in details["fields"])
    return {label.strip("*"): value for label, value in pairs}


# --- posting to a channel ------------------------------------------------------------------------


def test_posts_the_message_to_the_channel(
    run_action: RunAction, slack: FakeSlack, booking_event: BookingEvent
) -> None:
    result = run_action("slack.post", channel_step(), booking_event, credentials=creds(slack))

    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert (result.external_id, result.http_status) == ("C0SALES01/1764601201.000100", 200)
    assert result.delivery_status == "delivered"  # posted: it is in the channel
    [request] = slack.receiver.requests
    assert (request.method, request.path) == ("POST", "/api/chat.postMessage")
    assert request.headers["authorization"] == f"Bearer {slack.token}"
    text = "New booking: Grace Hopper for Intro call between Ada Lovelace and Grace Hopper"
    assert request.json() == {
        "channel": "#sales",
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Event type*\nIntro call"},
                    # 15:00 UTC in the host's timezone (Europe/Berlin), not the invitee's
                    {"type": "mrkdwn", "text": "*When*\nTuesday, December 1, 2026 4:00 PM CET"},
                    {"type": "mrkdwn", "text": "*Invitee*\nGrace Hopper (grace@example.com)"},
                    {"type": "mrkdwn", "text": "*Where*\nOnline\nhttps://meet.example.com/abc"},
                ],
            },
        ],
        "unfurl_links": False,
        "unfurl_media": False,
    }


def test_channel_id_and_ts_recorded_per_message(run_action: RunAction, slack: FakeSlack) -> None:
    first = run_action("slack.post", channel_step("C0SALES01"), credentials=creds(slack))
    second = run_action("slack.post", channel_step("#sales"), credentials=creds(slack))
    assert [first.external_id, second.external_id] == [
        "C0SALES01/1764601201.000100",
        "C0SALES01/1764601202.000100",
    ]


def test_booking_text_cannot_inject_mentions_or_links(
    run_action: RunAction, slack: FakeSlack
) -> None:
    event = sample_event()
    data = event.model_dump(mode="json")
    data["booking"]["invitee"]["name"] = "<!channel> Eve & <https://evil.example|click>"
    data["booking"]["location"] = "<@U024BE7LH>"
    event = BookingEvent.model_validate(data)

    result = run_action(
        "slack.post",
        channel_step(text="*{{ attendee_name }}* booked"),
        event,
        credentials=creds(slack),
    )

    assert result.outcome is Outcome.SUCCEEDED
    [sent] = slack.received()
    escaped = "&lt;!channel&gt; Eve &amp; &lt;https://evil.example|click&gt;"
    # Formatting written in the template stays; what the booking brought is only text.
    assert sent["text"] == f"*{escaped}* booked"
    assert sent["blocks"][0]["text"]["text"] == f"*{escaped}* booked"
    assert fields_of(sent)["Invitee"] == f"{escaped} (grace@example.com)"
    assert fields_of(sent)["Where"] == "&lt;@U024BE7LH&gt;\nhttps://meet.example.com/abc"
    assert "<" not in json.dumps(sent)


@pytest.mark.parametrize(
    ("xs", "expected_end"),
    [(2994, "x&amp;…"), (2995, "xx…")],  # the second would split "&amp;": it is dropped whole
)
def test_long_text_is_cut_to_slacks_limit_without_splitting_an_escape(
    run_action: RunAction, slack: FakeSlack, xs: int, expected_end: str
) -> None:
    run_action("slack.post", channel_step(text="x" * xs + "&&&&"), credentials=creds(slack))
    [sent] = slack.received()
    assert sent["text"].endswith(expected_end)
    assert len(sent["text"]) <= 3000
    assert sent["blocks"][0]["text"]["text"] == sent["text"]


def test_blank_text_falls_back_to_the_event_name(run_action: RunAction, slack: FakeSlack) -> None:
    event = sample_event()
    data = event.model_dump(mode="json")
    data["booking"].update(notes=None, location=None, meeting_url=None)
    event = BookingEvent.model_validate(data)

    run_action(
        "slack.post", channel_step(text="{{ additional_notes }}"), event, credentials=creds(slack)
    )

    [sent] = slack.received()
    assert sent["text"] == "Intro call between Ada Lovelace and Grace Hopper"
    assert "Where" not in fields_of(sent)


def test_template_that_breaks_on_this_booking_fails_permanently(
    run_action: RunAction, slack: FakeSlack
) -> None:
    data = sample_event().model_dump(mode="json")
    data["booking"]["payment"] = None  # the sample bookings the template was checked on pay
    event = BookingEvent.model_validate(data)
    step = channel_step(text="Paid {{ payment.amount + 1 }}")
    result = run_action("slack.post", step, event, credentials=creds(slack))
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "template_error")
    assert result.error is not None
    assert result.error.startswith("the message cannot be rendered for this booking: line 1:")
    assert slack.receiver.requests == []


def test_not_connected_fails_without_calling_slack(run_action: RunAction, slack: FakeSlack) -> None:
    result = run_action("slack.post", channel_step())
    assert result.outcome is Outcome.FAILED
    assert result.error == "Slack is not connected: connect it in Settings."
    assert result.error_code == "not_connected"
    assert slack.receiver.requests == []


@pytest.mark.parametrize(
    "error",
    [
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "account_inactive",
        "token_revoked",
        "no_permission",
        "invalid_blocks",
    ],
)
def test_slack_errors_fail_permanently_with_slacks_code(
    run_action: RunAction, slack: FakeSlack, error: str
) -> None:
    slack.channel_errors["#refused"] = error
    result = run_action("slack.post", channel_step("#refused"), credentials=creds(slack))
    assert result.outcome is Outcome.FAILED
    assert (result.error_code, result.http_status) == (f"slack_{error}", 200)
    assert result.error is not None
    assert error in result.error
    assert result.response_excerpt == json.dumps({"ok": False, "error": error})


def test_unknown_channel_is_slacks_channel_not_found(
    run_action: RunAction, slack: FakeSlack
) -> None:
    result = run_action("slack.post", channel_step("#nowhere"), credentials=creds(slack))
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "slack_channel_not_found")
    assert result.error is not None
    assert "cannot see it" in result.error


def test_wrong_token_is_invalid_auth(run_action: RunAction, slack: FakeSlack) -> None:
    result = run_action("slack.post", channel_step(), credentials={"bot_token": "xoxb-other"})
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "slack_invalid_auth")
    assert result.error is not None
    assert "reconnect Slack" in result.error


def test_rate_limit_returns_retry_after_without_sleeping(
    run_action: RunAction, slack: FakeSlack
) -> None:
    slack.receiver.script(
        "/api/chat.postMessage",
        api_reply(429, {"ok": False, "error": "ratelimited"}, **{"Retry-After": "30"}),
    )
    started = time.monotonic()
    result = run_action("slack.post", channel_step(), credentials=creds(slack))
    limited = time.monotonic() - started

    assert result.outcome is Outcome.RETRY
    assert (result.error_code, result.http_status, result.retry_after) == (
        "slack_ratelimited",
        429,
        30,
    )
    assert len(slack.receiver.requests) == 1  # slack-sdk's own retry handlers are off

    started = time.monotonic()
    again = run_action("slack.post", channel_step(), credentials=creds(slack), attempt=2)
    plain = time.monotonic() - started
    assert again.outcome is Outcome.SUCCEEDED
    # The engine waits, in the database, not the worker: the 429 took about as long as this
    # plain post to the same server, nowhere near its Retry-After of 30 s.
    assert limited - plain < 30 / 2


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply(503, "<html>down</html>", {"Content-Type": "text/html"}), "http_503"),
        (api_reply(500, {"ok": False, "error": "internal_error"}), "slack_internal_error"),
        (
            api_reply(200, {"ok": False, "error": "service_unavailable"}),
            "slack_service_unavailable",
        ),
        (api_reply(200, {"ok": False, "error": "fatal_error"}), "slack_fatal_error"),
        # Not Slack at all (a captive proxy, a wrong API_BASE)
        (Reply(200, "<html>login</html>", {"Content-Type": "text/html"}), "bad_response"),
    ],
)
def test_slack_outages_retry(
    run_action: RunAction, slack: FakeSlack, reply: Reply, code: str
) -> None:
    slack.receiver.script("/api/chat.postMessage", reply)
    result = run_action("slack.post", channel_step(), credentials=creds(slack))
    assert (result.outcome, result.error_code, result.http_status) == (
        Outcome.RETRY,
        code,
        reply.status,
    )
    assert result.retry_after is None


def test_timeout_retries(
    run_action: RunAction, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_SLACK_TIMEOUT", "0.3")
    slack.receiver.script("/api/chat.postMessage", Reply(200, "{}", delay=2))
    result = run_action("slack.post", channel_step(), credentials=creds(slack))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")
    assert result.error == f"no answer from 127.0.0.1:{slack.receiver.port} within 0.3s"


def test_connection_refused_retries(
    run_action: RunAction, slack: FakeSlack, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_SLACK_API_BASE", f"http://127.0.0.1:{closed_port}/api/")
    result = run_action("slack.post", channel_step(), credentials=creds(slack))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connection_error")
    assert result.error is not None
    assert f"127.0.0.1:{closed_port}" in result.error


# --- posting to an incoming webhook --------------------------------------------------------------


def test_posts_to_the_incoming_webhook(run_action: RunAction, slack: FakeSlack) -> None:
    result = run_action("slack.post", {"webhook_url": slack.webhook_url(), "text": TEXT})

    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert (result.external_id, result.http_status, result.response_excerpt) == (None, 200, "ok")
    assert result.delivery_status == "delivered"
    [request] = slack.receiver.requests
    assert request.path == "/services/T0001/B0001/Zx9s3cr3tWebhookPart"
    assert "authorization" not in request.headers
    sent = request.json()
    assert sent["text"].startswith("New booking: Grace Hopper")
    assert sent["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": sent["text"]},
    }
    assert fields_of(sent)["When"] == "Tuesday, December 1, 2026 4:00 PM CET"
    assert "channel" not in sent


def test_webhook_needs_no_integration_even_when_connected(
    run_action: RunAction, slack: FakeSlack
) -> None:
    result = run_action(
        "slack.post", {"webhook_url": slack.webhook_url(), "text": "hi"}, credentials=creds(slack)
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert "authorization" not in slack.receiver.requests[0].headers


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (404, "no_service", Outcome.FAILED, "slack_no_service"),
        (403, "action_prohibited", Outcome.FAILED, "slack_action_prohibited"),
        (410, "channel_is_archived", Outcome.FAILED, "slack_channel_is_archived"),
        (400, "invalid_payload", Outcome.FAILED, "slack_invalid_payload"),
        (500, "rollup_error", Outcome.RETRY, "slack_rollup_error"),
        (502, "<html>bad gateway</html>", Outcome.RETRY, "http_502"),
    ],
)
def test_webhook_errors(
    run_action: RunAction,
    slack: FakeSlack,
    status: int,
    body: str,
    outcome: Outcome,
    code: str,
) -> None:
    slack.webhooks["/services/T0001/B0001/Other"] = (status, body)
    url = slack.webhook_url("/services/T0001/B0001/Other")
    result = run_action("slack.post", {"webhook_url": url, "text": "hi"})
    assert (result.outcome, result.error_code, result.http_status) == (outcome, code, status)
    assert result.response_excerpt == body


def test_unknown_webhook_is_no_service(run_action: RunAction, slack: FakeSlack) -> None:
    url = slack.webhook_url("/services/T0001/B0001/Gone")
    result = run_action("slack.post", {"webhook_url": url, "text": "hi"})
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "slack_no_service")
    assert result.error == (
        "Slack answered no_service (HTTP 404): the incoming webhook was removed or disabled"
    )


def test_webhook_rate_limit_retries_after(run_action: RunAction, slack: FakeSlack) -> None:
    slack.receiver.script(
        "/services/T0001/B0001/Zx9s3cr3tWebhookPart",
        Reply(429, "rate_limited", {"Retry-After": "12"}),
    )
    result = run_action("slack.post", {"webhook_url": slack.webhook_url(), "text": "hi"})
    assert (result.outcome, result.error_code, result.retry_after) == (
        Outcome.RETRY,
        "slack_ratelimited",
        12,
    )
    assert len(slack.receiver.requests) == 1


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"text": "hi"}, "either channel"),
        (
            {
                "channel": "#a",
                "webhook_url": "https://hooks.slack.com/services/T/B/X",
                "text": "hi",
            },
            "either channel",
        ),
        ({"channel": "#two words", "text": "hi"}, "channel must be a channel name"),
        ({"channel": "<!channel>", "text": "hi"}, "channel must be a channel name"),
        ({"channel": "#a", "text": ""}, "at least 1 character"),
        ({"channel": "#a", "text": "{{ invitee.shoe_size }}"}, "unknown field 'shoe_size'"),
        ({"channel": "#a", "text": "hi", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        linktime_slack.SlackStepSettings.model_validate(settings)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0001/B0001/XXXX",
        "https://HOOKS.slack.com/services/T0001/B0001/XXXX",
    ],
)
def test_slack_webhook_urls_accepted_by_default(url: str) -> None:
    settings = linktime_slack.SlackStepSettings.model_validate({"webhook_url": url, "text": "hi"})
    assert settings.webhook_url is not None
    assert settings.webhook_url.get_secret_value() == url


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T0001/B0001/Zx9s3cr3t",
        "https://hooks.slack.com.evil.example/services/T0001/B0001/Zx9s3cr3t",
        "https://hooks.slack.com:8443/services/T0001/B0001/Zx9s3cr3t",
        "https://user:Zx9s3cr3t@hooks.slack.com/services/T0001/B0001/X",
        "https://evil.example/services/T0001/B0001/Zx9s3cr3t",
        "http://127.0.0.1:9/services/T0001/B0001/Zx9s3cr3t",
    ],
)
def test_other_webhook_bases_refused_without_echoing_the_url(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        linktime_slack.SlackStepSettings.model_validate({"webhook_url": url, "text": "hi"})
    shown = str(caught.value)
    assert "webhook_url must be an incoming-webhook URL under https://hooks.slack.com/" in shown
    assert "LINKTIME_SLACK_ALLOWED_WEBHOOK_BASES" in shown
    assert "Zx9s3cr3t" not in shown


@pytest.mark.parametrize(
    ("url", "base", "under"),
    [
        ("http://127.0.0.1:8080/services/T/B/X", "http://127.0.0.1:8080/services/", True),
        ("http://127.0.0.1:8080/services/T/B/X", "http://127.0.0.1:8080/services", True),
        ("http://127.0.0.1:8080/servicesX/T", "http://127.0.0.1:8080/services", False),
        ("http://127.0.0.1:8080/services/../admin", "http://127.0.0.1:8080/services/", False),
        ("http://127.0.0.1:8080/services/%2e%2e/admin", "http://127.0.0.1:8080/services/", False),
        ("http://127.0.0.1:8081/services/T/B/X", "http://127.0.0.1:8080/services/", False),
        ("http://127.0.0.1:bad/services/T/B/X", "http://127.0.0.1:8080/services/", False),
    ],
)
def test_is_under(url: str, base: str, under: bool) -> None:
    assert linktime_slack.is_under(url, base) is under


def test_operator_can_allow_another_webhook_base(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://chat.example.com/hooks/abc"
    with pytest.raises(ValidationError):
        linktime_slack.SlackStepSettings.model_validate({"webhook_url": url, "text": "hi"})
    monkeypatch.setenv("LINKTIME_SLACK_ALLOWED_WEBHOOK_BASES", "https://chat.example.com/hooks/")
    linktime_slack.SlackStepSettings.model_validate({"webhook_url": url, "text": "hi"})
    # Slack's own base is no longer allowed once the operator lists the bases.
    with pytest.raises(ValidationError):
        linktime_slack.SlackStepSettings.model_validate(
            {"webhook_url": "https://hooks.slack.com/services/T/B/X", "text": "hi"}
        )


@pytest.mark.parametrize("token", ["xoxp-user-token", "xoxb-", "Zs3cr3t"])
def test_bot_token_must_be_a_bot_token_and_is_not_echoed(token: str) -> None:
    with pytest.raises(ValidationError, match="starting with 'xoxb-'") as caught:
        linktime_slack.SlackCredentials.model_validate({"bot_token": token})
    assert token not in str(caught.value).replace("'xoxb-'", "")


def test_operator_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = linktime_slack.operator_settings()
    assert (defaults.api_base, defaults.allowed_webhook_bases, defaults.timeout) == (
        "https://slack.com/api/",
        ("https://hooks.slack.com/",),
        15,
    )
    monkeypatch.setenv("LINKTIME_SLACK_API_BASE", "http://127.0.0.1:9/api/")
    monkeypatch.setenv("LINKTIME_SLACK_ALLOWED_WEBHOOK_BASES", " https://a.example/x/ ,http://b/ ")
    monkeypatch.setenv("LINKTIME_SLACK_TIMEOUT", "2.5")
    operator = linktime_slack.operator_settings()
    assert operator.api_base == "http://127.0.0.1:9/api/"
    assert operator.allowed_webhook_bases == ("https://a.example/x/", "http://b/")
    assert operator.timeout == 2.5


def test_bad_operator_settings_retry(
    run_action: RunAction, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_SLACK_API_BASE", "slack.com/api")
    result = run_action("slack.post", channel_step(), credentials=creds(slack))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "operator_settings")
    assert result.error is not None
    assert "API_BASE must be an http:// or https:// URL" in result.error
    assert slack.receiver.requests == []


# --- secrets -------------------------------------------------------------------------------------


def test_token_and_webhook_url_never_in_logs_or_results(
    run_action: RunAction,
    slack: FakeSlack,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    hook_path = "/services/T0001/B0001/Zx9s3cr3tWebhookPart"
    ok_hook = {"webhook_url": slack.webhook_url(hook_path), "text": "hi"}
    gone_hook = {"webhook_url": slack.webhook_url("/services/T/B/Zx9s3cr3tGone"), "text": "hi"}
    slack.channel_errors["#refused"] = "not_in_channel"
    slack.receiver.script(
        "/api/chat.postMessage",
        api_reply(429, {"ok": False, "error": "ratelimited"}, **{"Retry-After": "3"}),
    )
    slack.receiver.script(hook_path, Reply(500, "rollup_error"))
    results: list[Result] = [
        run_action("slack.post", channel_step(), credentials=creds(slack)),
        run_action("slack.post", channel_step(), credentials=creds(slack)),
        run_action("slack.post", channel_step("#refused"), credentials=creds(slack)),
        run_action("slack.post", ok_hook),
        run_action("slack.post", ok_hook),
        run_action("slack.post", gone_hook),
    ]
    monkeypatch.setenv("LINKTIME_SLACK_API_BASE", f"http://127.0.0.1:{closed_port}/api/")
    monkeypatch.setenv(
        "LINKTIME_SLACK_ALLOWED_WEBHOOK_BASES", f"http://127.0.0.1:{closed_port}/services/"
    )
    results += [
        run_action("slack.post", channel_step(), credentials=creds(slack)),
        run_action(
            "slack.post",
            {"webhook_url": f"http://127.0.0.1:{closed_port}{hook_path}", "text": "hi"},
        ),
    ]

    assert [r.error_code for r in results] == [
        "slack_ratelimited",
        None,
        "slack_not_in_channel",
        "slack_rollup_error",
        None,
        "slack_no_service",
        "connection_error",
        "connection_error",
    ]
    assert len(slack.receiver.requests) == 6
    shown = caplog.text + "\n".join(repr(r) for r in results)
    assert "Zx9s3cr3t" not in shown
    assert "B0tT0ken" not in shown


# --- through the engine --------------------------------------------------------------------------


def test_engine_hands_the_sealed_integration_to_the_step(
    linktime_hub: Hub, slack: FakeSlack
) -> None:
    acc = accounts.create_account(linktime_hub, "Acme", "free")
    spec = workflows.WorkflowIn(
        name="Tell sales",
        trigger="booking.created",
        enabled=True,
        steps=[workflows.StepIn(action="slack.post", settings=channel_step())],
    )
    workflows.create(linktime_hub, acc.id, spec)

    def run(event_id: str) -> Any:
        [run_id] = linktime_hub.emit(sample_event(id=event_id), account_id=acc.id).run_ids
        linktime_hub.process_run(run_id)
        return get_run(linktime_hub, acc.id, run_id)

    not_connected = run("evt_1")
    assert not_connected.steps[0].status == "failed"
    assert not_connected.steps[0].error == "Slack is not connected: connect it in Settings."

    shown = integrations.connect(linktime_hub, acc.id, "slack", {"bot_token": slack.token})
    assert shown.settings == {"bot_token": "********"}
    with linktime_hub.db.connect() as conn:
        stored = conn.exec_driver_sql("SELECT settings FROM integrations").scalar_one()
    assert slack.token not in str(stored)

    connected = run("evt_2")
    assert connected.status == "succeeded"
    # The message's channel and ts, on the step and on the attempt that posted it.
    assert connected.steps[0].external_id == "C0SALES01/1764601201.000100"
    assert [a.external_id for a in connected.steps[0].attempt_log] == [
        "C0SALES01/1764601201.000100"
    ]
    assert slack.received()[0]["channel"] == "#sales"

    slack.receiver.script(
        "/api/chat.postMessage",
        api_reply(429, {"ok": False, "error": "ratelimited"}, **{"Retry-After": "30"}),
    )
    before = linktime_hub.clock()
    limited = run("evt_3")
    # The wait is a due time in the database, as long as Slack asked for.
    assert limited.status == "waiting"
    [attempt] = limited.steps[0].attempt_log
    assert (attempt.status, attempt.error_code, attempt.http_status) == (
        "retrying",
        "slack_ratelimited",
        429,
    )
    due = limited.steps[0].next_attempt_at
    assert due is not None
    assert 29 <= (due - before).total_seconds() <= 35


def test_bad_token_refused_when_connecting(linktime_hub: Hub) -> None:
    acc = accounts.create_account(linktime_hub, "Acme", "free")
    with pytest.raises(InputError) as caught:
        integrations.connect(linktime_hub, acc.id, "slack", {"bot_token": "xoxp-Zs3cr3t"})
    [problem] = caught.value.fields
    assert problem.field == "bot_token"
    assert "Zs3cr3t" not in str(caught.value)


def test_webhook_base_refused_when_the_workflow_is_saved(
    linktime_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = accounts.create_account(linktime_hub, "Acme", "free")
    url = "http://127.0.0.1:9/services/T0001/B0001/Zx9s3cr3t"

    def save() -> workflows.WorkflowOut:
        step = workflows.StepIn(action="slack.post", settings={"webhook_url": url, "text": "hi"})
        spec = workflows.WorkflowIn(name="w", trigger="booking.created", steps=[step])
        return workflows.create(linktime_hub, acc.id, spec)[0]

    with pytest.raises(InputError) as caught:
        save()
    [problem] = caught.value.fields
    assert problem.field == "steps.0.settings.webhook_url"
    assert "Zx9s3cr3t" not in str(caught.value)

    monkeypatch.setenv("LINKTIME_SLACK_ALLOWED_WEBHOOK_BASES", "http://127.0.0.1:9/services/")
    saved = save()
    assert saved.steps[0].settings["webhook_url"] == "********"


def test_registered_through_the_entry_point() -> None:
    from linktime import plugins

    registry = plugins.load()
    action = registry.action("slack.post")
    assert (action.title, action.capability, action.integration) == (
        "Send Slack Message",
        "slack",
        "slack",
    )
    assert action.settings is linktime_slack.SlackStepSettings
    assert action.credentials is linktime_slack.SlackCredentials
    assert "slack" in {p.name for p in registry.plugins}


def test_an_incoming_webhook_on_an_address_the_server_does_not_call_is_refused(
    run_action: RunAction, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The webhook base allows the loopback stand-in; linktime.http's guard still refuses it.
    monkeypatch.delenv("LINKTIME_HTTP_ALLOWED_NETWORKS")
    result = run_action("slack.post", {"webhook_url": slack.webhook_url(), "text": "hi"})
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "ssrf_refused")
    assert result.error is not None and "LINKTIME_HTTP_ALLOWED_NETWORKS" in result.error
    assert "Zx9s3cr3t" not in result.error
    assert slack.receiver.requests == []
