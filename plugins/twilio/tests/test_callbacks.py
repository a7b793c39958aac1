"""Twilio's callbacks (status reports, inbound STOP/START) as the twilio callback reads them,
signed by the stand-in exactly as Twilio signs them; 21610 as an opt-out; the integration's
settings checked with the stand-in Twilio at connect."""

from __future__ import annotations

from typing import Any

import linktime_twilio
import pytest
from linktime import plugins
from linktime.actions import Outcome
from linktime.callbacks import CallbackAnswer, CallbackRefused, CallbackRequest, DeliveryUpdate
from linktime.suppressions import PROVIDER, SMS_STOP
from linktime_twilio import (
    EMPTY_TWIML,
    TwilioCredentials,
    TwilioOperatorSettings,
    call_twilio,
    handle_callback,
    verify_credentials,
)
from linktime_twilio_testing import FROM, SERVICE_SID, FakeTwilio, twilio_error

URL = "https://hub.example.com/v1/callbacks/twilio/acc_1.c2lnbmVk"
TO = "+14155550101"


def creds(credentials: dict[str, str], **changes: Any) -> TwilioCredentials:
    return TwilioCredentials.model_validate({**credentials, **changes})


def created(twilio: FakeTwilio, credentials: dict[str, str], resource: str) -> str:
    """A message or call the stand-in accepted with ``URL`` as its StatusCallback: its SID."""
    operator = TwilioOperatorSettings()

    def make(client: Any) -> Any:
        if resource == "messages":
            return client.messages.create(to=TO, from_=FROM, body="Hi", status_callback=URL)
        return client.calls.create(to=TO, from_=FROM, twiml="<Response/>", status_callback=URL)

    result = call_twilio(creds(credentials), operator, make, to=TO)
    assert result.outcome is Outcome.SUCCEEDED and result.external_id is not None
    return result.external_id


def handled(
    credentials: dict[str, str] | None, params: dict[str, str], signature: str | None
) -> CallbackAnswer:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    connected = creds(credentials) if credentials is not None else None
    return handle_callback(CallbackRequest("acc_1", URL, headers, params, b"", connected))


def signed(
    twilio: FakeTwilio, credentials: dict[str, str], params: dict[str, str]
) -> CallbackAnswer:
    return handled(credentials, params, twilio.sign(URL, params))


def test_the_library_registers_the_twilio_callback() -> None:
    registry = plugins.load()
    callback = registry.callbacks[linktime_twilio.CALLBACK]
    assert (callback.integration, callback.credentials) == ("twilio", TwilioCredentials)
    [info] = [p for p in registry.plugins if p.name == "twilio"]
    assert (info.callbacks, info.actions) == (["twilio"], [])


# --- status callbacks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "status", "error_code", "expected"),
    [
        ("messages", "queued", None, ("accepted", None)),
        ("messages", "accepted", None, ("accepted", None)),
        ("messages", "scheduled", None, ("accepted", None)),
        ("messages", "sending", None, ("sent", None)),
        ("messages", "sent", None, ("sent", None)),
        ("messages", "delivered", None, ("delivered", None)),
        ("messages", "read", None, ("delivered", None)),
        ("messages", "undelivered", 30003, ("undelivered", "twilio_30003")),
        ("messages", "undelivered", 30005, ("undelivered", "twilio_30005")),
        ("messages", "undelivered", 30006, ("undelivered", "twilio_30006")),
        ("messages", "failed", 30007, ("failed", "twilio_30007")),
        ("calls", "queued", None, ("accepted", None)),
        ("calls", "initiated", None, ("accepted", None)),
        ("calls", "ringing", None, ("sent", None)),
        ("calls", "in-progress", None, ("sent", None)),
        ("calls", "completed", None, ("delivered", None)),
        ("calls", "busy", None, ("undelivered", None)),
        ("calls", "no-answer", None, ("undelivered", None)),
        ("calls", "failed", None, ("failed", None)),
        ("calls", "canceled", None, ("failed", None)),
    ],
)
def test_a_signed_status_callback_is_a_delivery_update(
    twilio: FakeTwilio,
    credentials: dict[str, str],
    resource: str,
    status: str,
    error_code: int | None,
    expected: tuple[str, str | None],
) -> None:
    sid = created(twilio, credentials, resource)
    answer = signed(twilio, credentials, twilio.report_params(sid, status, error_code))
    [update] = answer.updates
    assert (update.external_id, update.status, update.error_code) == (sid, *expected)
    assert not answer.suppress and not answer.unsuppress


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (30003, "unreachable handset"),
        (30004, "blocked"),
        (30005, "unknown number"),
        (30006, "landline or unreachable carrier"),
        (30007, "carrier filtered"),
        (30008, "unknown error"),
    ],
)
def test_an_error_code_is_said_in_words(
    twilio: FakeTwilio, credentials: dict[str, str], code: int, words: str
) -> None:
    sid = created(twilio, credentials, "messages")
    [update] = signed(twilio, credentials, twilio.report_params(sid, "undelivered", code)).updates
    assert update.error is not None
    assert update.error.startswith(f"Twilio error {code}: ") and words in update.error
    assert f"https://www.twilio.com/docs/errors/{code}" in update.error


def test_a_later_21610_report_puts_the_number_on_the_list(
    twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    sid = created(twilio, credentials, "messages")
    answer = signed(twilio, credentials, twilio.report_params(sid, "failed", 21610))
    assert answer.updates == [
        DeliveryUpdate(
            sid,
            "failed",
            "twilio_21610",
            "Twilio error 21610: the recipient has unsubscribed (replied STOP) "
            "(https://www.twilio.com/docs/errors/21610)",
        )
    ]
    assert list(answer.suppress) == [TO] and answer.suppress_source == PROVIDER
    assert answer.receipt == f"{sid}:failed"  # the same report again changes the list no more


def test_a_forged_or_missing_signature_or_no_integration_is_refused(
    twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    sid = created(twilio, credentials, "messages")
    params = twilio.report_params(sid, "delivered")
    good = twilio.sign(URL, params)
    forged = [
        (credentials, params, twilio.sign(URL, {**params, "MessageStatus": "failed"})),
        (credentials, {**params, "MessageStatus": "failed"}, good),  # the form was changed
        (credentials, params, None),
        (credentials, params, ""),
        ({**credentials, "auth_token": "0" * 32}, params, good),  # signed with another token
        (None, params, good),  # the account has no Twilio connected
    ]
    for connected, form, signature in forged:
        with pytest.raises(CallbackRefused):
            handled(connected, form, signature)
    assert handled(credentials, params, good).updates[0].status == "delivered"


# --- inbound messages ----------------------------------------------------------------------------


def inbound(twilio: FakeTwilio, credentials: dict[str, str], **fields: str) -> CallbackAnswer:
    params = {"MessageSid": "SM" + "1" * 32, "SmsStatus": "received", "AccountSid": "AC"}
    params |= {"To": FROM, "NumMedia": "0", **fields}
    return signed(twilio, credentials, params)


@pytest.mark.parametrize(
    "body", ["STOP", " stop\n", "Stopall", "unsubscribe", "CANCEL", "end", "Quit"]
)
def test_stop_and_its_synonyms_suppress_the_sender(
    twilio: FakeTwilio, credentials: dict[str, str], body: str
) -> None:
    answer = inbound(twilio, credentials, From=TO, Body=body)
    assert dict(answer.suppress) == {TO: f"replied {body.strip().upper()} by text message"}
    assert answer.suppress_source == SMS_STOP
    assert (answer.body, answer.media_type, answer.updates) == (EMPTY_TWIML, "text/xml", [])
    assert answer.receipt == "SM" + "1" * 32  # the message's id: counted once


@pytest.mark.parametrize("body", ["START", " yes ", "unstop"])
def test_start_takes_the_sender_off_the_list(
    twilio: FakeTwilio, credentials: dict[str, str], body: str
) -> None:
    answer = inbound(twilio, credentials, From=f"whatsapp:{TO}", Body=body)
    assert (answer.unsuppress, dict(answer.suppress)) == ([TO], {})
    assert answer.body == EMPTY_TWIML and answer.receipt == "SM" + "1" * 32


@pytest.mark.parametrize(
    ("fields", "suppressed", "unsuppressed"),
    [
        ({"Body": "please stop texting me"}, {}, []),
        ({"Body": "ARRET", "OptOutType": "STOP"}, {TO: "replied ARRET by text message"}, []),
        ({"Body": "STOP", "OptOutType": "HELP"}, {}, []),
        ({"Body": "REPRENDRE", "OptOutType": "START"}, {}, [TO]),
    ],
    ids=["a-sentence", "opt-out-type-stop", "opt-out-type-help", "opt-out-type-start"],
)
def test_other_messages_and_twilios_opt_out_type(
    twilio: FakeTwilio,
    credentials: dict[str, str],
    fields: dict[str, str],
    suppressed: dict[str, str],
    unsuppressed: list[str],
) -> None:
    answer = inbound(twilio, credentials, From=TO, **fields)
    assert (dict(answer.suppress), answer.unsuppress) == (suppressed, unsuppressed)
    assert answer.body == EMPTY_TWIML


# --- 21610 when sending --------------------------------------------------------------------------


def test_twilio_refusing_an_unsubscribed_recipient_is_an_opt_out(
    twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    twilio.unsubscribed.add(TO)
    result = call_twilio(
        creds(credentials),
        TwilioOperatorSettings(),
        lambda client: client.messages.create(to=TO, from_=FROM, body="Hi"),
        to=TO,
    )
    assert (result.outcome, result.error_code, result.suppress) == (
        Outcome.OPTED_OUT,
        "twilio_21610",
        TO,
    )
    assert result.error is not None and "unsubscribed" in result.error
    assert twilio.sent == []


# --- the settings, checked at connect ------------------------------------------------------------


def verified(credentials: dict[str, str], **changes: Any) -> dict[str, str]:
    refused = verify_credentials(creds(credentials, **changes), TwilioOperatorSettings())
    return {f.field: f.message for f in refused}


def test_settings_twilio_accepts_pass(twilio: FakeTwilio, credentials: dict[str, str]) -> None:
    assert verified(credentials) == {}
    assert verified(credentials, messaging_service_sid=SERVICE_SID) == {}
    assert verified(credentials, from_number="Acme") == {}  # a sender ID: nothing to look up
    paths = [r.path.partition("?")[0] for r in twilio.receiver.requests]
    assert f"/v1/Services/{SERVICE_SID}" in paths
    assert any(p.endswith("/IncomingPhoneNumbers.json") for p in paths)


def test_a_wrong_token_or_unknown_account_names_the_field(
    twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    said = verified(credentials, auth_token="0badc0ffee0badc0ffee0badc0ffee00")
    assert list(said) == ["auth_token"]
    assert said["auth_token"].startswith("Twilio refused this account SID and auth token")
    # Twilio answers an account SID it does not know with 401 too; 404 is an account the
    # credentials may not see.
    assert list(verified(credentials, account_sid="AC" + "1" * 32)) == ["auth_token"]
    twilio.fail_next(twilio_error(404, 20404, "The requested resource was not found"))
    said = verified(credentials)
    assert list(said) == ["account_sid"] and "has no account" in said["account_sid"]


def test_a_number_or_service_the_account_lacks_names_the_field(
    twilio: FakeTwilio, credentials: dict[str, str]
) -> None:
    said = verified(credentials, from_number="+14155550142")
    assert said == {
        "from_number": "+14155550142 is not one of this Twilio account's phone numbers: use a "
        "number listed under Phone Numbers on the Twilio console."
    }
    said = verified(credentials, messaging_service_sid="MG" + "1" * 32)
    assert list(said) == ["messaging_service_sid"]


def test_a_sender_outside_the_supported_countries_is_refused_naming_it(
    twilio: FakeTwilio, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    twilio.numbers.add("+442079460000")
    said = verified(credentials, from_number="+442079460000")
    assert list(said) == []
    monkeypatch.setenv("LINKTIME_TWILIO_TEST_SUPPORTED_COUNTRIES", "US,CA")
    refused = verify_credentials(
        creds(credentials, from_number="+442079460000"),
        TwilioOperatorSettings(supported_countries=frozenset({"US", "CA"})),
    )
    assert [(f.field, f.message) for f in refused] == [
        ("from_number", "+442079460000 is a GB number; this service sends only to CA, US.")
    ]


def test_twilio_out_of_reach_is_said(
    credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", "http://127.0.0.1:1")
    said = verified(credentials)
    assert said == {
        "account_sid": "These settings could not be checked: Twilio could not be reached. "
        "Try again."
    }
