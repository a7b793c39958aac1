"""The webhook.call action against real loopback receivers."""

from __future__ import annotations

import gzip
import json
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import linktime_webhook
import pytest
from linktime import http, plugins
from linktime.actions import Outcome
from linktime.models import BookingEvent, sample_event
from linktime.testing import RunAction
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Receiver
    from linktime.testing import TestCertificates

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def settings(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "secret": SECRET, **extra}


# --- delivery and payload ------------------------------------------------------------------------


@pytest.mark.usefixtures("allow_loopback")
def test_body_shape_and_signature_verify(
    run_action: RunAction, receiver: Receiver, booking_event: BookingEvent
) -> None:
    result = run_action("webhook.call", settings(receiver.url("/in?x=1")), booking_event)

    assert result.outcome is Outcome.SUCCEEDED
    [req] = receiver.requests
    assert (req.method, req.path) == ("POST", "/in?x=1")
    headers = req.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"LinkTime-Webhooks/{linktime_webhook.__version__}"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert headers["webhook-id"] == "msg_test"
    assert abs(int(headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60

    body = Webhook(SECRET).verify(req.body, headers)
    assert body == json.loads(req.body)
    assert body == {
        "type": "booking.created",
        "timestamp": "2026-11-24T10:00:00Z",
        "version": 1,
        "data": {
            "event": booking_event.model_dump(mode="json", exclude={"booking"}),
            "booking": booking_event.booking.model_dump(mode="json"),
            "workflow": {"id": "wf_test", "name": "Test workflow"},
        },
    }
    assert body["data"]["event"]["id"] == "evt_sample"
    assert body["data"]["booking"]["payment"]["amount"] == "50.00"


@pytest.mark.usefixtures("allow_loopback")
def test_signature_fails_with_another_secret(run_action: RunAction, receiver: Receiver) -> None:
    run_action("webhook.call", settings(receiver.url()))
    [req] = receiver.requests
    other = Webhook("whsec_" + "A" * 32)
    with pytest.raises(WebhookVerificationError, match="signature"):
        other.verify(req.body, req.headers)


@pytest.mark.usefixtures("allow_loopback")
def test_trigger_is_the_body_type(run_action: RunAction, receiver: Receiver) -> None:
    run_action("webhook.call", settings(receiver.url()), trigger="meeting.before")
    assert json.loads(receiver.requests[0].body)["type"] == "meeting.before"


@pytest.mark.usefixtures("allow_loopback")
def test_webhook_id_is_stable_across_attempts(run_action: RunAction, receiver: Receiver) -> None:
    receiver.reply(503)
    first = run_action("webhook.call", settings(receiver.url()), attempt=1, step_id="stp_abc")
    second = run_action("webhook.call", settings(receiver.url()), attempt=2, step_id="stp_abc")
    run_action("webhook.call", settings(receiver.url()), step_id="stp_other")

    assert (first.outcome, second.outcome) == (Outcome.RETRY, Outcome.SUCCEEDED)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == ["msg_abc", "msg_abc", "msg_other"]
    for req in receiver.requests:
        Webhook(SECRET).verify(req.body, req.headers)


@pytest.mark.usefixtures("allow_loopback")
def test_every_attempt_records_the_webhook_id_as_external_id(
    run_action: RunAction, receiver: Receiver
) -> None:
    receiver.reply(503)
    results = [
        run_action("webhook.call", settings(receiver.url()), attempt=n, step_id="stp_abc")
        for n in (1, 2)
    ]
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.SUCCEEDED]
    sent = [r.headers["webhook-id"] for r in receiver.requests]
    assert [r.external_id for r in results] == sent == ["msg_abc", "msg_abc"]


@pytest.mark.usefixtures("allow_loopback")
def test_event_extras_travel_untouched(run_action: RunAction, receiver: Receiver) -> None:
    event = sample_event(source={"crm": "hubspot", "ids": [1, 2]}, note="extra")
    data = event.model_dump(mode="json")
    data["booking"]["custom"] = {"room": "B2"}
    event = BookingEvent.model_validate(data)

    run_action("webhook.call", settings(receiver.url()), event)

    sent = json.loads(receiver.requests[0].body)["data"]
    assert sent["event"]["source"] == {"crm": "hubspot", "ids": [1, 2]}
    assert sent["event"]["note"] == "extra"
    assert sent["booking"]["custom"] == {"room": "B2"}
    assert "booking" not in sent["event"]


@pytest.mark.usefixtures("allow_loopback")
def test_extra_headers_are_sent(run_action: RunAction, receiver: Receiver) -> None:
    extra = {"X-Tenant": "acme", "user-agent": "Custom/1"}
    run_action("webhook.call", settings(receiver.url(), headers=extra))
    headers = receiver.requests[0].headers
    assert (headers["x-tenant"], headers["user-agent"]) == ("acme", "Custom/1")


@pytest.mark.usefixtures("allow_loopback")
def test_connects_to_the_vetted_address_with_the_original_host(
    run_action: RunAction, receiver: Receiver, fake_dns: dict[str, list[str]]
) -> None:
    fake_dns["hooks.example"] = ["127.0.0.1"]
    result = run_action("webhook.call", settings(f"http://hooks.example:{receiver.port}/h"))
    assert result.outcome is Outcome.SUCCEEDED
    assert receiver.requests[0].headers["host"] == f"hooks.example:{receiver.port}"


@pytest.mark.usefixtures("allow_loopback", "fresh_clients")
def test_https_pins_the_ip_but_keeps_each_server_name(
    run_action: RunAction,
    tls_receiver: Receiver,
    test_ca: TestCertificates,
    fake_dns: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns["hooks.example"] = fake_dns["other.example"] = ["127.0.0.1"]
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))
    http.close()  # clients made anew trust the test CA

    names = ["hooks.example", "other.example", "hooks.example"]
    for name in names:
        result = run_action("webhook.call", settings(tls_receiver.url("/tls", host=name)))
        assert result.outcome is Outcome.SUCCEEDED, result.error

    # Both names share one IP; each request still arrives on a connection for its own name.
    seen = [(r.server_name, r.headers["host"]) for r in tls_receiver.requests]
    assert seen == [(name, f"{name}:{tls_receiver.port}") for name in names]


@pytest.mark.usefixtures("allow_loopback", "fresh_clients")
def test_https_certificate_is_checked_against_the_host_name(
    run_action: RunAction,
    tls_receiver: Receiver,
    test_ca: TestCertificates,
    fake_dns: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns["wrong.example"] = ["127.0.0.1"]
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))
    http.close()

    result = run_action("webhook.call", settings(tls_receiver.url(host="wrong.example")))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connection_error")
    assert tls_receiver.requests == []


# --- response mapping ----------------------------------------------------------------------------


@pytest.mark.usefixtures("allow_loopback")
def test_2xx_is_ok_with_excerpt(run_action: RunAction, receiver: Receiver) -> None:
    receiver.reply(202, b"x" * 5000)
    result = run_action("webhook.call", settings(receiver.url()))
    assert result.outcome is Outcome.SUCCEEDED
    assert result.http_status == 202
    assert result.response_excerpt == "x" * 1024


@pytest.mark.usefixtures("allow_loopback")
def test_a_compression_bomb_answer_is_read_only_to_the_cap(
    run_action: RunAction, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 bytes on the wire, 100 MiB once decoded twice: the step reads the cap's worth."""
    bomb = gzip.compress(gzip.compress(b"\0" * (100 << 20), 9), 9)
    receiver.reply(200, bomb, {"Content-Encoding": "gzip, gzip"})
    read: list[httpx.Response] = []
    real_request = http.request

    def request(*args: Any, **kwargs: Any) -> httpx.Response:
        read.append(real_request(*args, **kwargs))
        return read[-1]

    monkeypatch.setattr(http, "request", request)
    result = run_action("webhook.call", settings(receiver.url()))
    assert result.outcome is Outcome.SUCCEEDED
    assert len(read[0].content) == http.settings().max_response_bytes
    assert result.response_excerpt == "\0" * 1024


@pytest.mark.usefixtures("allow_loopback")
def test_503_retries(run_action: RunAction, receiver: Receiver) -> None:
    receiver.reply(503, b"down for maintenance")
    result = run_action("webhook.call", settings(receiver.url()))
    assert result.outcome is Outcome.RETRY
    assert (result.error_code, result.http_status) == ("http_503", 503)
    assert result.retry_after is None
    assert result.response_excerpt == "down for maintenance"


@pytest.mark.usefixtures("allow_loopback")
def test_429_retry_after_seconds(run_action: RunAction, receiver: Receiver) -> None:
    receiver.reply(429, headers={"Retry-After": "7"})
    result = run_action("webhook.call", settings(receiver.url()))
    assert result.outcome is Outcome.RETRY
    assert (result.error_code, result.http_status, result.retry_after) == ("http_429", 429, 7)


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("status", [404, 400, 401, 410, 422])
def test_other_4xx_fail_permanently(run_action: RunAction, receiver: Receiver, status: int) -> None:
    receiver.reply(status, b"nope")
    result = run_action("webhook.call", settings(receiver.url()))
    assert result.outcome is Outcome.FAILED
    assert (result.error_code, result.http_status) == (f"http_{status}", status)


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("status", [408, 425, 500, 502, 504])
def test_transient_statuses_retry(run_action: RunAction, receiver: Receiver, status: int) -> None:
    receiver.reply(status)
    result = run_action("webhook.call", settings(receiver.url()))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, f"http_{status}")


@pytest.mark.usefixtures("allow_loopback")
def test_redirect_is_not_followed(
    run_action: RunAction, receiver: Receiver, make_receiver: Callable[..., Receiver]
) -> None:
    target = make_receiver()
    receiver.reply(302, headers={"Location": target.url("/elsewhere")})
    result = run_action("webhook.call", settings(receiver.url()))
    assert result.outcome is Outcome.FAILED
    assert (result.error_code, result.http_status) == ("http_302", 302)
    assert result.error is not None
    assert "not followed" in result.error
    assert target.url("/elsewhere") in result.error
    assert target.requests == []


@pytest.mark.usefixtures("allow_loopback")
def test_timeout_retries(
    run_action: RunAction, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_WEBHOOK_TIMEOUT", "0.3")
    receiver.reply(200, delay=2)
    result = run_action("webhook.call", settings(receiver.url()))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")


@pytest.mark.usefixtures("allow_loopback")
def test_connection_refused_retries(run_action: RunAction, closed_port: int) -> None:
    result = run_action("webhook.call", settings(f"http://127.0.0.1:{closed_port}/"))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connection_error")
    assert result.error is not None
    assert str(closed_port) in result.error


def test_errors_never_carry_the_secret(
    run_action: RunAction, receiver: Receiver, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")
    receiver.reply(500, b"boom")
    receiver.reply(302)
    urls = [receiver.url(), receiver.url(), f"http://127.0.0.1:{closed_port}/", "http://[::1]/"]
    results = [run_action("webhook.call", settings(url)) for url in urls]

    assert [r.error_code for r in results] == [
        "http_500",
        "http_302",
        "connection_error",
        "ssrf_refused",
    ]
    for result in results:
        assert result.error
        assert SECRET.removeprefix("whsec_") not in result.error


@pytest.mark.usefixtures("allow_loopback")
def test_a_receiver_echoing_the_headers_never_puts_their_values_in_the_result(
    run_action: RunAction, receiver: Receiver
) -> None:
    token = "Bearer tok-e4c1-never-logged"
    receiver.reply(401, f"invalid Authorization: {token} (key {SECRET})".encode())
    result = run_action("webhook.call", settings(receiver.url(), headers={"Authorization": token}))
    assert receiver.requests[0].headers["authorization"] == token
    assert result.error_code == "http_401"
    assert result.response_excerpt == "invalid Authorization: ******** (key ********)"
    assert token not in repr(result) and SECRET not in repr(result)


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize(
    "echo",
    [
        lambda headers: json.dumps(headers).replace("/", "\\/"),  # PHP's json_encode
        lambda headers: json.dumps(headers),
        lambda headers: json.dumps(headers, ensure_ascii=False),
        lambda headers: urllib.parse.urlencode(headers),
        lambda headers: urllib.parse.urlencode(headers, quote_via=urllib.parse.quote),
    ],
    ids=["json-escaped-slash", "json", "json-unicode", "form-encoded", "percent-encoded"],
)
def test_a_receiver_echoing_encoded_headers_never_puts_their_values_in_the_result(
    run_action: RunAction, receiver: Receiver, echo: Callable[[dict[str, str]], str]
) -> None:
    headers = {"Authorization": "Bearer abc/def+SECRETXYZ==", "X-Key": 'q"uo\\te'}
    receiver.reply(401, echo({**headers, "X-Signing": SECRET}).encode())
    result = run_action("webhook.call", settings(receiver.url(), headers=headers))
    excerpt = result.response_excerpt
    assert excerpt is not None and "Authorization" in excerpt
    for secret in ["abc/def", "abc\\/def", "abc%2Fdef", "SECRETXYZ", "uo", SECRET[6:20]]:
        assert secret not in excerpt


def fragments(secret: str) -> list[str]:
    """Every start of ``secret`` of 4 characters or more."""
    return [secret[:n] for n in range(4, len(secret) + 1)]


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("pad", [1000, 1010, 1020, 1023, 1030])
def test_a_secret_echoed_across_the_excerpt_s_end_leaves_no_fragment(
    run_action: RunAction, receiver: Receiver, pad: int
) -> None:
    token = "Bearer SUPERSECRETTOKEN-5f1d"
    receiver.reply(400, b"A" * pad + f"{token} then {SECRET}".encode())
    result = run_action("webhook.call", settings(receiver.url(), headers={"Authorization": token}))
    excerpt = result.response_excerpt
    assert excerpt is not None and excerpt.startswith("A" * min(pad, 1024))
    assert len(excerpt.encode()) <= 1024
    for fragment in [*fragments(token), *fragments(SECRET)]:
        assert fragment not in excerpt


@pytest.mark.usefixtures("allow_loopback")
def test_a_secret_the_answer_breaks_off_and_short_header_values_are_masked(
    run_action: RunAction, receiver: Receiver
) -> None:
    token = "Bearer SUPERSECRETTOKEN-5f1d"
    headers = {"Authorization": token, "X-Tenant": "acme", "X-Shard": "q7"}
    receiver.reply(400, b"tenant acme, shard q7, token " + token[:11].encode())
    result = run_action("webhook.call", settings(receiver.url(), headers=headers))
    assert result.response_excerpt == "tenant ********, shard ********, token ********"


# --- SSRF guard ----------------------------------------------------------------------------------


def test_ssrf_loopback_receiver_gets_nothing_by_default(
    run_action: RunAction, receiver: Receiver
) -> None:
    result = run_action("webhook.call", settings(receiver.url()))
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "ssrf_refused")
    assert result.error is not None and "LINKTIME_HTTP_ALLOWED_NETWORKS" in result.error
    assert receiver.requests == []


def test_the_older_allow_list_variable_still_works(
    run_action: RunAction, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    assert run_action("webhook.call", settings(receiver.url())).outcome is Outcome.SUCCEEDED
    assert len(receiver.requests) == 1


# --- settings ------------------------------------------------------------------------------------


def test_default_secret_is_generated_and_valid() -> None:
    one = linktime_webhook.WebhookStepSettings(url="https://hooks.example.com/x")
    two = linktime_webhook.WebhookStepSettings(url="https://hooks.example.com/x")
    raw = one.secret.get_secret_value()
    assert raw.startswith("whsec_")
    assert raw != two.secret.get_secret_value()
    Webhook(raw)
    assert "whsec_" not in repr(one)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "scheme must be http or https"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("hooks.example.com/x", "scheme must be http or https"),
        ("http:///path", "no host"),
        ("https://user:pw@hooks.example.com/", "credentials"),
    ],
)
def test_bad_url_refused(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        linktime_webhook.WebhookStepSettings(url=url, secret=SECRET)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_", "non-empty base64"),
        ("whsec_not*base64!", "non-empty base64"),
    ],
)
def test_bad_secret_refused_without_echoing_it(secret: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        linktime_webhook.WebhookStepSettings.model_validate(
            {"url": "https://hooks.example.com/", "secret": secret}
        )
    shown = str(caught.value)
    assert "input_value" not in shown
    if len(secret) > len("whsec_"):
        assert secret not in shown


@pytest.mark.parametrize(
    "name", ["webhook-id", "Webhook-Signature", "Content-Type", "host", "Content-Length"]
)
def test_reserved_headers_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="cannot be overridden"):
        linktime_webhook.WebhookStepSettings.model_validate(
            {"url": "https://hooks.example.com/", "headers": {name: "x"}}
        )


@pytest.mark.parametrize("value", ["a\r\nX-B: b", "Bearer cafébar", "tok\x7f", "x" * 4097])
def test_a_header_value_httpx_cannot_send_is_refused_naming_the_header(value: str) -> None:
    with pytest.raises(ValidationError, match="one line") as caught:
        linktime_webhook.WebhookStepSettings.model_validate(
            {"url": "https://hooks.example.com/", "headers": {"X-A": "ok", "Authorization": value}}
        )
    assert [e["loc"] for e in caught.value.errors()] == [("headers", "Authorization")]
    assert value not in str(caught.value)


def test_operator_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_WEBHOOK_TIMEOUT", "2.5")
    assert linktime_webhook.operator_settings().timeout == 2.5
    monkeypatch.delenv("LINKTIME_WEBHOOK_TIMEOUT")
    assert linktime_webhook.operator_settings().timeout == 15


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1", "soon"])
def test_a_timeout_setting_that_is_not_finite_above_0_refuses_the_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LINKTIME_WEBHOOK_TIMEOUT", value)
    registry = plugins.load("webhook")
    assert "webhook.call" not in registry.actions
    [refusal] = registry.start_refusals()
    assert refusal.startswith("plugin webhook (linktime-webhook): LINKTIME_WEBHOOK_TIMEOUT is")
    monkeypatch.setenv("LINKTIME_WEBHOOK_TIMEOUT", "2.5")
    registry = plugins.load("webhook")
    assert registry.actions["webhook.call"].timeout == 2.5 and registry.start_refusals() == []


def test_bad_operator_settings_retry(
    run_action: RunAction, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.1/8")
    result = run_action("webhook.call", settings("https://hooks.example.com/"))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "operator_settings")
    assert result.error is not None
    assert "10.0.0.1/8 has host bits set" in result.error


def test_registered_through_the_entry_point() -> None:
    from linktime import plugins

    registry = plugins.load()
    action = registry.action("webhook.call")
    assert action.title == "Call Webhook"
    assert action.capability == "webhook"
    assert action.settings is linktime_webhook.WebhookStepSettings
    assert "webhook" in {p.name for p in registry.plugins}


# --- payload bytes and signature ----------------------------------------------------------------


def test_payload_bytes_are_the_compact_json_of_the_documented_body() -> None:
    from linktime.actions import ActionContext, WorkflowRef

    event = sample_event(note="Grüße 日本 \u2028", score=0.1, big=1e-07, nested={"é": [1.5, None]})
    ctx = ActionContext(
        event=event,
        trigger="meeting.before",
        workflow=WorkflowRef("wf_1", "Flow ✓"),
        account_id="acc_test",
        plan="business",
        run_id="run_test",
        step_id="stp_test",
        position=0,
        attempt=1,
        settings=linktime_webhook.WebhookStepSettings(url="https://hooks.example.com/"),
        credentials=None,
    )
    expected = {
        "type": "meeting.before",
        "timestamp": "2026-11-24T10:00:00Z",
        "version": 1,
        "data": {
            "event": event.model_dump(mode="json", exclude={"booking"}),
            "booking": event.booking.model_dump(mode="json"),
            "workflow": {"id": "wf_1", "name": "Flow ✓"},
        },
    }
    raw = json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert linktime_webhook.build_payload(ctx) == raw


def test_signature_matches_the_reference_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from pydantic import SecretStr

    monkeypatch.setattr(time, "time", lambda: 1_790_000_000.7)
    payload = '{"a":"Grüße"}'.encode()
    headers = linktime_webhook.signed_headers(SecretStr(SECRET), "msg_ü", payload)
    moment = datetime.fromtimestamp(1_790_000_000, UTC)
    assert headers == {
        "webhook-id": "msg_ü",
        "webhook-timestamp": "1790000000",
        "webhook-signature": Webhook(SECRET).sign("msg_ü", moment, payload.decode()),
    }
