"""The shared Twilio plumbing: the official client, redirected to a stand-in Twilio on loopback,
and its answers as results; numbers and countries; the twilio integration and operator settings.
What sms.send and voice.call do with it is tested in their own plugins."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import linktime_twilio
import pytest
from linktime.actions import Outcome, Result
from linktime.testing import HttpReceiver, Reply
from linktime_twilio import (
    NumberRefused,
    RecipientSettings,
    TwilioCredentials,
    TwilioHttp,
    TwilioOperatorSettings,
    call_twilio,
    e164,
    to_the_invitee,
)
from linktime_twilio_testing import FROM, FakeTwilio, twilio_error
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

BODY = "Hi Grace, Intro call is on Tuesday, December 1, 2026 10:00 AM EST"
TWIML = "<Response><Say>Hello Grace</Say></Response>"
RESOURCES = ["messages", "calls"]


class Operator(TwilioOperatorSettings):
    """A channel's operator settings, as the SMS and voice plugins subclass them."""

    model_config = SettingsConfigDict(env_prefix="LINKTIME_TWILIO_TEST_")
    user_agent: ClassVar[str | None] = "linktime-twilio-tests/1.0"


def create(resource: str, to: str = "+14155550101") -> Callable[[Any], Any]:
    """One Twilio create call: a message (as sms.send sends it) or a call (as voice.call)."""
    if resource == "messages":
        return lambda client: client.messages.create(to=to, from_=FROM, body=BODY)
    return lambda client: client.calls.create(to=to, from_=FROM, twiml=TWIML)


def send(
    credentials: dict[str, str], resource: str, to: str = "+14155550101", **operator: Any
) -> Result:
    creds = TwilioCredentials.model_validate(credentials)
    return call_twilio(creds, Operator(**operator), create(resource, to))


def accepted(twilio: FakeTwilio) -> list[str]:
    """The SIDs of what the stand-in accepted: messages, then calls."""
    return [s.sid for s in twilio.sent] + [c.sid for c in twilio.calls]


# --- creating through the redirected client ------------------------------------------------------


@pytest.mark.parametrize(("resource", "prefix"), [("messages", "SM"), ("calls", "CA")])
def test_a_created_resource_is_a_success_with_its_sid(
    twilio: FakeTwilio, credentials: dict[str, str], resource: str, prefix: str
) -> None:
    result = send(credentials, resource)

    [sid] = accepted(twilio)
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.external_id, result.http_status) == (sid, 201)
    assert sid.startswith(prefix)
    assert result.response_excerpt is not None and sid in result.response_excerpt
    [request] = twilio.receiver.requests
    assert request.path == f"/2010-04-01/Accounts/{twilio.ACCOUNT_SID}/{resource.title()}.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "linktime-twilio-tests/1.0" in request.headers["user-agent"]
    if resource == "messages":
        assert [(s.to, s.from_, s.body) for s in twilio.sent] == [("+14155550101", FROM, BODY)]
    else:
        assert [(c.to, c.from_, c.twiml) for c in twilio.calls] == [("+14155550101", FROM, TWIML)]


def test_the_base_url_replaces_twilios_host_and_keeps_path_and_query(
    http_receiver: HttpReceiver,
) -> None:
    http = TwilioHttp(f"{http_receiver.url}/relay", timeout=5)
    answer = http.request(
        "GET",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?PageSize=20",
        params={"To": "+14155550101"},
    )
    [request] = http_receiver.requests
    path = "/relay/2010-04-01/Accounts/AC1/Messages.json"
    assert request.path == f"{path}?PageSize=20&To=%2B14155550101"
    assert (answer.status_code, answer.text) == (200, "ok")
    assert http.last is answer


def test_one_pooled_session_per_thread() -> None:
    here = [TwilioHttp(None, timeout=5).session for _ in range(2)]
    there: list[Any] = []
    thread = threading.Thread(target=lambda: there.append(TwilioHttp(None, timeout=5).session))
    thread.start()
    thread.join()
    assert here[0] is here[1]
    assert there[0] is not here[0]


# --- Twilio's answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES)
def test_a_wrong_auth_token_is_an_authentication_failure(
    twilio: FakeTwilio, credentials: dict[str, str], resource: str
) -> None:
    result = send({**credentials, "auth_token": "nope"}, resource)
    assert result.outcome is Outcome.FAILED
    assert (result.error_code, result.http_status) == ("twilio_20003", 401)
    assert result.error is not None and result.error.startswith("Twilio authentication failed")
    assert "authentication failed" in result.error and "Authenticate" in result.error
    assert twilio.sent == [] and twilio.calls == []


@pytest.mark.parametrize(
    ("resource", "number", "code", "said"),
    [
        (
            "messages",
            "+15005550001",
            21211,
            "The 'To' number +15005550001 is not a valid phone number.",
        ),
        ("messages", "+15005550004", 21610, "Attempt to send to unsubscribed recipient"),
        ("messages", "+15005550009", 21614, "'To' number is not a valid mobile number"),
        ("calls", "+15005550001", 21217, "Phone number does not appear to be valid"),
        ("calls", "+15005550002", 21214, "'To' phone number cannot be reached"),
        ("calls", "+15005550003", 21215, "Account not authorized to call +15005550003."),
    ],
)
def test_twilio_refusals_fail_with_twilio_code_and_message(
    twilio: FakeTwilio,
    credentials: dict[str, str],
    resource: str,
    number: str,
    code: int,
    said: str,
) -> None:
    result = send(credentials, resource, to=number)
    assert result.outcome is Outcome.FAILED
    assert (result.error_code, result.http_status) == (f"twilio_{code}", 400)
    assert result.error == (
        f"Twilio answered 400, error {code}: {said} (https://www.twilio.com/docs/errors/{code})"
    )
    assert result.response_excerpt is not None and f'"code": {code}' in result.response_excerpt


THROTTLED = '{"code": 20429, "message": "Too Many Requests", "status": 429}'
SERVER_ERROR = (
    '{"code": 20500, "message": "Internal Server Error", "more_info": '
    '"https://www.twilio.com/docs/errors/20500", "status": 500}'
)


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize(
    ("reply", "code", "retry_after"),
    [
        (Reply(429, THROTTLED, {"Retry-After": "30"}), "twilio_20429", 30.0),
        (
            twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "7"}),
            "twilio_20429",
            7.0,
        ),
        (Reply(500, SERVER_ERROR), "twilio_20500", None),
        (Reply(500, "Internal Server Error"), "http_500", None),
        (Reply(503, "<html>Service Unavailable</html>"), "http_503", None),
    ],
    ids=["throttled", "throttled-json", "server-error", "server-error-text", "unavailable"],
)
def test_throttling_and_server_errors_are_retried(
    twilio: FakeTwilio,
    credentials: dict[str, str],
    resource: str,
    reply: Reply,
    code: str,
    retry_after: float | None,
) -> None:
    twilio.fail_next(reply)
    first = send(credentials, resource)
    second = send(credentials, resource)
    assert (first.outcome, first.error_code, first.http_status, first.retry_after) == (
        Outcome.RETRY,
        code,
        reply.status,
        retry_after,
    )
    assert second.outcome is Outcome.SUCCEEDED
    assert len(accepted(twilio)) == 1
    if resource == "messages":
        assert [s.body for s in twilio.sent] == [BODY]


@pytest.mark.parametrize("resource", RESOURCES)
def test_connection_refused_is_retried(
    credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch, resource: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", f"http://127.0.0.1:{port}")
    result = send(credentials, resource)
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connection_error")
    assert result.error is not None and result.error.startswith("could not reach Twilio: ")


def test_a_slow_twilio_is_retried(twilio: FakeTwilio, credentials: dict[str, str]) -> None:
    # (linktime-sms-twilio tests the same for messages, with its LINKTIME_SMS_TIMEOUT)
    twilio.fail_next(Reply(201, "{}", delay=1.5))
    result = send(credentials, "calls", timeout=0.3)
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")
    assert result.error == "no answer from Twilio within 0.3s"


# --- numbers and countries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "formatted"),
    [
        ("+1 (415) 555-0199", "+14155550199"),
        ("+44 20 7946 0000", "+442079460000"),
        ("+81 3-1234-5678", "+81312345678"),
    ],
)
def test_numbers_are_kept_in_e164(raw: str, formatted: str) -> None:
    assert e164(raw) == formatted


@pytest.mark.parametrize(
    ("raw", "countries", "code", "message"),
    [
        ("555-0101", None, "invalid_number", "'555-0101' is not a phone number in international"),
        ("+1 415 555", None, "invalid_number", "+1415555 is not a valid phone number"),
        (
            "+81 3-1234-5678",
            linktime_twilio.DEFAULT_COUNTRIES,
            "unsupported_country",
            "+81312345678 is a JP number; this service sends only to AU, CA, DE, ES, FR, GB, IE, "
            "IT, NL, NZ, US",
        ),
        (
            "+1 604 555 0101",
            frozenset({"US"}),
            "unsupported_country",
            "+16045550101 is a CA number; this service sends only to US",
        ),
    ],
)
def test_numbers_refused(
    raw: str, countries: frozenset[str] | None, code: str, message: str
) -> None:
    with pytest.raises(NumberRefused) as refused:
        e164(raw, countries)
    assert refused.value.code == code
    assert str(refused.value).startswith(message)


class GbOnly(RecipientSettings):
    @classmethod
    def supported_countries(cls) -> frozenset[str]:
        return frozenset({"GB"})


def test_a_listed_number_is_checked_against_the_channels_countries() -> None:
    assert GbOnly(to="number", number="+44 20 7946 0000").number == "+442079460000"
    assert GbOnly(to="host").number is None
    with pytest.raises(ValidationError, match="is a US number; this service sends only to GB"):
        GbOnly(to="number", number="+1 415 555 0101")
    with pytest.raises(ValidationError, match="Enter the phone number to reach"):
        GbOnly(to="number")
    with pytest.raises(NotImplementedError, match="RecipientSettings must say which countries"):
        RecipientSettings(to="number", number="+44 20 7946 0000")


def test_a_live_test_texts_or_calls_the_invitee_instead_of_a_listed_number() -> None:
    tested = to_the_invitee(GbOnly(to="number", number="+44 20 7946 0000"))
    assert (tested.to, tested.number) == ("invitee", None)
    host = GbOnly(to="host")
    assert to_the_invitee(host) is host  # the booking's host is the tester already


# --- operator settings ---------------------------------------------------------------------------


def test_operator_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Operator().supported_countries == linktime_twilio.DEFAULT_COUNTRIES
    assert (Operator().timeout, Operator().twilio_api_base) == (15.0, None)
    monkeypatch.setenv("LINKTIME_TWILIO_TEST_SUPPORTED_COUNTRIES", " jp, us ,")
    monkeypatch.setenv("LINKTIME_TWILIO_TEST_TIMEOUT", "2.5")
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", "http://127.0.0.1:9/relay/")
    settings = Operator()
    assert settings.supported_countries == {"JP", "US"}
    assert (settings.timeout, settings.twilio_api_base) == (2.5, "http://127.0.0.1:9/relay")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LINKTIME_TWILIO_TEST_SUPPORTED_COUNTRIES", "US,XX", "unknown: ['XX']"),
        ("LINKTIME_TWILIO_TEST_SUPPORTED_COUNTRIES", " , ", "expected ISO country codes"),
        ("LINKTIME_TWILIO_TEST_TIMEOUT", "0", "greater than 0"),
        ("LINKTIME_TWILIO_API_BASE", "ftp://relay.example", "must be an http(s) URL"),
    ],
)
def test_bad_operator_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Operator()


# --- the twilio integration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"from_number": None}, "", "set from_number, messaging_service_sid, or both"),
        ({"account_sid": "SK5ef8732a3c49700934481addd5ce1659"}, "account_sid", "pattern"),
        ({"messaging_service_sid": "MG123"}, "messaging_service_sid", "pattern"),
        ({"from_number": "+1 415 555"}, "from_number", "not a valid phone number"),
        ({"auth_token": ""}, "auth_token", "at least 1"),
    ],
)
def test_integration_settings_are_checked(
    credentials: dict[str, str], changes: dict[str, str | None], field: str, message: str
) -> None:
    data = {k: v for k, v in {**credentials, **changes}.items() if v is not None}
    with pytest.raises(ValidationError) as refused:
        TwilioCredentials.model_validate(data)
    [error] = refused.value.errors()
    assert ".".join(map(str, error["loc"])) == field
    assert message in error["msg"]


@pytest.mark.parametrize(
    ("sender", "kept"),
    [("+1 (415) 555-0123", "+14155550123"), ("LinkTime", "LinkTime"), ("55123", "55123")],
)
def test_senders_twilio_accepts(credentials: dict[str, str], sender: str, kept: str) -> None:
    model = TwilioCredentials.model_validate({**credentials, "from_number": sender})
    assert model.from_number == kept


def test_a_refused_integration_does_not_echo_the_token(credentials: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as refused:
        TwilioCredentials.model_validate({**credentials, "account_sid": "nope"})
    assert credentials["auth_token"] not in str(refused.value)
