"""The email.send action against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import linktime_email
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from linktime.actions import ActionType, Outcome, Result
from linktime.errorcodes import is_operator_error
from linktime.models import BookingEvent, sample_event
from linktime.runs import get_run
from linktime.testing import RunAction
from pydantic import ValidationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from linktime.engine import Hub
    from linktime.testing import TestCertificates
    from linktime_email_testing import SmtpPeer

GRACE = "grace@example.com"  # the sample booking's invitee
ADA = "ada@example.com"  # its host
FROM = "bookings@linktime.example"
SMTP_USER = "relay-user"
SMTP_PASSWORD = "s3cr3t-Relay-Pa55word"  # the no-secret test greps for this


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """The relay's login check (aiosmtpd): SMTP_USER with SMTP_PASSWORD."""
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (SMTP_USER, SMTP_PASSWORD)
    return AuthResult(success=ok, handled=False, auth_data=SMTP_USER if ok else None)


def step(**extra: Any) -> dict[str, Any]:
    return {
        "to_invitee": True,
        "subject": "Confirmed: {{ event_name }}",
        "text": "Hi {{ attendee_first_name }}, see you on {{ event_date }} at {{ event_time }}.",
        **extra,
    }


def event_with(**booking: Any) -> BookingEvent:
    data = sample_event().model_dump(mode="json")
    data["booking"].update(booking)
    return BookingEvent.model_validate(data)


# --- the message as received ---------------------------------------------------------------------


def test_message_as_received(run_action: RunAction, peer: SmtpPeer) -> None:
    settings = step(
        to_hosts=True,
        addresses=["ops@acme.example"],
        html="<p>Hi {{ invitee.name }}, <a href='{{ meeting_url }}'>join</a></p>",
    )
    result = run_action("email.send", settings)

    assert result.outcome is Outcome.SUCCEEDED, result.error
    [got] = peer.delivered
    assert got.mail_from == FROM
    assert got.rcpt_tos == [GRACE, ADA, "ops@acme.example"]
    assert not got.tls and got.login is None
    msg = got.message
    assert msg["From"] == FROM
    assert msg["To"] == (f"Grace Hopper <{GRACE}>, Ada Lovelace <{ADA}>, ops@acme.example")
    assert msg["Reply-To"] is None  # no integration connected: defaults
    assert msg["Subject"] == "Confirmed: Intro call between Ada Lovelace and Grace Hopper"
    assert msg["Message-ID"] == "<msg_test@linktime.example>"
    assert abs((parsedate_to_datetime(msg["Date"]) - datetime.now(UTC)).total_seconds()) < 60
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    # Dates in the invitee's timezone (New York): 15:00Z is 10:00 AM.
    assert text.get_content() == "Hi Grace, see you on Tuesday, December 1, 2026 at 10:00 AM.\n"
    assert html.get_content() == (
        "<p>Hi Grace Hopper, <a href='https://meet.example.com/abc'>join</a></p>\n"
    )
    assert result.external_id == "<msg_test@linktime.example>"
    assert result.response_excerpt == "2.0.0 Ok: queued as Q1"


def test_plain_text_only(run_action: RunAction, peer: SmtpPeer) -> None:
    run_action("email.send", step())
    msg = peer.delivered[0].message
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"


def test_integration_sets_sender_name_and_reply_to(run_action: RunAction, peer: SmtpPeer) -> None:
    credentials = {"from_name": "Acme Bookings", "reply_to": "help@acme.example"}
    result = run_action("email.send", step(), credentials=credentials)

    assert result.outcome is Outcome.SUCCEEDED
    [got] = peer.delivered
    assert got.mail_from == FROM  # the envelope stays the operator's address
    assert got.message["From"] == f"Acme Bookings <{FROM}>"
    assert got.message["Reply-To"] == "help@acme.example"


def test_html_escapes_booking_text(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(
        notes="<script>alert(1)</script> & <b>bold</b>",
        invitee={"name": 'Grace "<img src=x>"', "email": GRACE},
    )
    settings = step(
        text="{{ attendee_name }}: {{ additional_notes }}",
        html="<p>{{ attendee_name }}: {{ additional_notes }}</p>",
    )
    run_action("email.send", settings, event)

    msg = peer.delivered[0].message
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    assert html is not None and text is not None
    assert html.get_content() == (
        "<p>Grace &#34;&lt;img src=x&gt;&#34;: "
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;</p>\n"
    )
    # Plain text is not HTML: it carries the text as written.
    assert text.get_content() == 'Grace "<img src=x>": <script>alert(1)</script> & <b>bold</b>\n'


def test_booking_text_cannot_break_headers(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(
        title="Intro\r\nBcc: victim@example.org\n call",
        invitee={"name": "Grace\nHopper", "email": GRACE},
    )
    result = run_action("email.send", step(subject="{{ booking.title }}"), event)

    assert result.outcome is Outcome.SUCCEEDED
    [got] = peer.delivered
    assert got.rcpt_tos == [GRACE]
    assert got.message["Subject"] == "Intro Bcc: victim@example.org call"
    assert got.message["To"] == f"Grace Hopper <{GRACE}>"
    assert got.message["Bcc"] is None


def test_non_ascii_names_and_subject(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(invitee={"name": "Zoë Ångström", "email": GRACE})
    result = run_action("email.send", step(subject="Bestätigt für {{ attendee_name }} ✓"), event)

    assert result.outcome is Outcome.SUCCEEDED
    msg = peer.delivered[0].message
    assert msg["Subject"] == "Bestätigt für Zoë Ångström ✓"
    assert msg["To"] == f"Zoë Ångström <{GRACE}>"


def test_hosts_and_co_hosts_deduplicated(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(
        hosts=[
            {"name": "Ada again", "email": "ADA@example.com"},
            {"name": "Charles Babbage", "email": "charles@example.com"},
            {"name": "No Mail"},
        ]
    )
    settings = step(to_invitee=False, to_hosts=True, addresses=["charles@example.com"])
    result = run_action("email.send", settings, event)

    assert result.outcome is Outcome.SUCCEEDED
    assert peer.delivered[0].rcpt_tos == [ADA, "charles@example.com"]
    # Everyone with an address got it; the co-host without one is named in the log.
    assert result.response_excerpt is not None
    assert "host 'No Mail' has no email address" in result.response_excerpt


def test_invitee_falls_back_to_the_first_of_invitees(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(
        invitee=None,
        invitees=[
            {"name": "Alan", "email": "alan@example.com"},
            {"name": "Bob", "email": "b@x.io"},
        ],
    )
    run_action("email.send", step(), event)
    assert peer.delivered[0].rcpt_tos == ["alan@example.com"]


def test_message_id_is_stable_across_attempts(run_action: RunAction, peer: SmtpPeer) -> None:
    # A worker that died after sending retries the step: the same Message-ID lets mail
    # systems (and people's clients) recognize the duplicate.
    first = run_action("email.send", step(), attempt=1, step_id="stp_abc")
    second = run_action("email.send", step(), attempt=2, step_id="stp_abc")
    other = run_action("email.send", step(), step_id="stp_other")

    ids = [d.message["Message-ID"] for d in peer.delivered]
    assert ids == ["<msg_abc@linktime.example>"] * 2 + ["<msg_other@linktime.example>"]
    assert [first.external_id, second.external_id, other.external_id] == ids


# --- recipients ----------------------------------------------------------------------------------


def test_no_recipient_fails_without_connecting(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(invitee={"name": "Grace Hopper", "phone": "+14155550101"})
    result = run_action("email.send", step(), event)

    assert (result.outcome, result.error_code) == (Outcome.FAILED, "no_recipient")
    assert result.error == (
        "no recipient for this booking: invitee 'Grace Hopper' has no email address"
    )
    assert peer.delivered == []


def test_invalid_invitee_address_is_left_out(run_action: RunAction, peer: SmtpPeer) -> None:
    event = event_with(invitee={"name": "Grace", "email": "grace@"})
    result = run_action("email.send", step(to_hosts=True), event)

    assert result.outcome is Outcome.SUCCEEDED
    assert peer.delivered[0].rcpt_tos == [ADA]
    assert result.response_excerpt is not None
    assert result.response_excerpt.startswith("sent to 1 of 2 recipients; not sent to: invitee")
    assert "'grace@' is not a valid email address" in result.response_excerpt

    alone = run_action("email.send", step(), event)
    assert (alone.outcome, alone.error_code) == (Outcome.FAILED, "no_recipient")


def test_some_recipients_refused_is_reported_not_retried(
    run_action: RunAction, peer: SmtpPeer
) -> None:
    peer.answer_rcpt("gone@acme.example", "550 5.1.1 <gone@acme.example>: no such user")
    settings = step(addresses=["gone@acme.example", "ops@acme.example"])
    result = run_action("email.send", settings)

    # The others have it: retrying would send it to them twice.
    assert result.outcome is Outcome.SUCCEEDED
    assert result.external_id == "<msg_test@linktime.example>"
    assert peer.delivered[0].rcpt_tos == [GRACE, "ops@acme.example"]
    assert result.response_excerpt == (
        "sent to 2 of 3 recipients; not sent to: gone@acme.example refused: "
        "550 5.1.1 <gone@acme.example>: no such user; server said: 2.0.0 Ok: queued as Q1"
    )


def test_every_recipient_refused_permanently_fails(run_action: RunAction, peer: SmtpPeer) -> None:
    peer.answer_rcpt(GRACE, "550 5.1.1 mailbox unavailable")
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.FAILED, "smtp_550")
    assert result.error == (
        f"127.0.0.1:{peer.port} refused every recipient: {GRACE}: 550 5.1.1 mailbox unavailable"
    )
    assert peer.delivered == []


def test_temporary_refusal_of_every_recipient_retries(
    run_action: RunAction, peer: SmtpPeer
) -> None:
    peer.answer_rcpt(GRACE, "550 5.1.1 mailbox unavailable")
    peer.answer_rcpt(ADA, "451 4.7.1 greylisted, try again later")
    first = run_action("email.send", step(to_hosts=True), attempt=1)

    assert (first.outcome, first.error_code) == (Outcome.RETRY, "smtp_451")
    assert first.error is not None and "451 4.7.1 greylisted" in first.error
    assert peer.delivered == []

    second = run_action("email.send", step(to_hosts=True), attempt=2)
    assert second.outcome is Outcome.SUCCEEDED
    assert peer.delivered[0].rcpt_tos == [GRACE, ADA]


# --- SMTP replies and connection failures --------------------------------------------------------


def test_data_451_retries_then_succeeds(run_action: RunAction, peer: SmtpPeer) -> None:
    peer.answer_data("451 4.3.0 Temporary local problem, try later")
    first = run_action("email.send", step(), attempt=1)
    second = run_action("email.send", step(), attempt=2)

    assert (first.outcome, first.error_code) == (Outcome.RETRY, "smtp_451")
    assert first.error == (
        f"127.0.0.1:{peer.port} refused the message (DATA): "
        "451 4.3.0 Temporary local problem, try later"
    )
    assert second.outcome is Outcome.SUCCEEDED
    assert len(peer.delivered) == 1


def test_data_550_fails_permanently(run_action: RunAction, peer: SmtpPeer) -> None:
    peer.answer_data("550 5.7.1 Message rejected as spam")
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.FAILED, "smtp_550")
    assert result.error is not None
    assert result.error.endswith("550 5.7.1 Message rejected as spam")


def test_sender_refused(run_action: RunAction, peer: SmtpPeer) -> None:
    peer.answer_mail("421 4.7.0 too many connections", "553 5.7.1 sender not allowed to relay")
    first = run_action("email.send", step())
    second = run_action("email.send", step())

    assert (first.outcome, first.error_code) == (Outcome.RETRY, "smtp_421")
    assert (second.outcome, second.error_code) == (Outcome.FAILED, "smtp_553")
    assert second.error == (
        f"127.0.0.1:{peer.port} refused the sender {FROM} (MAIL FROM): "
        "553 5.7.1 sender not allowed to relay"
    )
    assert peer.delivered == []


def test_connection_refused_retries(
    run_action: RunAction, relay_env: Callable[..., None], closed_port: int
) -> None:
    relay_env(closed_port)
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connection_error")
    assert result.error is not None
    assert f"127.0.0.1:{closed_port}" in result.error


def test_timeout_retries(
    run_action: RunAction, peer: SmtpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_EMAIL_TIMEOUT", "0.3")
    peer.data_delay = 2
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")
    assert result.error == f"no answer from 127.0.0.1:{peer.port} within 0.3s (during send)"


def test_missing_from_address_fails_clearly(
    run_action: RunAction, peer: SmtpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINKTIME_EMAIL_FROM_ADDRESS")
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.FAILED, "no_from_address")
    assert result.error == "no sender address: the operator must set LINKTIME_EMAIL_FROM_ADDRESS"
    assert peer.delivered == []


def test_template_that_does_not_fit_this_booking_fails(
    run_action: RunAction, peer: SmtpPeer
) -> None:
    event = event_with(payment=None)
    result = run_action("email.send", step(text="Paid {{ booking.payment.amount }}"), event)

    assert (result.outcome, result.error_code) == (Outcome.FAILED, "template_error")
    assert result.error is not None and "unknown field 'amount'" in result.error


# --- TLS and AUTH --------------------------------------------------------------------------------


@pytest.fixture
def trust_test_ca(test_ca: TestCertificates, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))


def relay_auth() -> dict[str, str]:
    return {"smtp_user": SMTP_USER, "smtp_password": SMTP_PASSWORD}


@pytest.mark.usefixtures("trust_test_ca")
def test_starttls_and_auth(
    run_action: RunAction,
    make_peer: Callable[..., SmtpPeer],
    relay_env: Callable[..., None],
    test_ca: TestCertificates,
) -> None:
    peer = make_peer(
        tls_context=test_ca.server,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    relay_env(peer.port, smtp_security="starttls", **relay_auth())
    result = run_action("email.send", step())

    assert result.outcome is Outcome.SUCCEEDED, result.error
    [got] = peer.delivered
    assert (got.tls, got.login) == (True, SMTP_USER)


@pytest.mark.usefixtures("trust_test_ca")
def test_implicit_tls(
    run_action: RunAction,
    make_peer: Callable[..., SmtpPeer],
    relay_env: Callable[..., None],
    test_ca: TestCertificates,
) -> None:
    # aiosmtpd cannot tell an implicit-TLS session is encrypted: allow AUTH explicitly.
    peer = make_peer(
        ssl_context=test_ca.server, authenticator=authenticator, auth_require_tls=False
    )
    relay_env(peer.port, smtp_security="tls", **relay_auth())
    result = run_action("email.send", step())

    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert (peer.delivered[0].tls, peer.delivered[0].login) == (True, SMTP_USER)


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_untrusted_certificate_retries(
    run_action: RunAction,
    make_peer: Callable[..., SmtpPeer],
    relay_env: Callable[..., None],
    test_ca: TestCertificates,
    security: str,
) -> None:
    server_tls = "tls_context" if security == "starttls" else "ssl_context"
    peer = make_peer(**{server_tls: test_ca.server})
    relay_env(peer.port, smtp_security=security)
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.RETRY, "tls_error")
    assert result.error is not None and "CERTIFICATE_VERIFY_FAILED" in result.error
    assert peer.delivered == []


def test_starttls_not_offered_retries(
    run_action: RunAction, peer: SmtpPeer, relay_env: Callable[..., None]
) -> None:
    relay_env(peer.port, smtp_security="starttls")
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.RETRY, "tls_error")
    assert result.error is not None and "STARTTLS" in result.error
    assert peer.delivered == []


@pytest.mark.usefixtures("trust_test_ca")
def test_wrong_password_retries_as_auth_failed(
    run_action: RunAction,
    make_peer: Callable[..., SmtpPeer],
    relay_env: Callable[..., None],
    test_ca: TestCertificates,
) -> None:
    peer = make_peer(tls_context=test_ca.server, authenticator=authenticator)
    relay_env(peer.port, smtp_security="starttls", smtp_user=SMTP_USER, smtp_password="wrong-one")
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.RETRY, "auth_failed")
    assert result.error is not None
    assert "LINKTIME_EMAIL_SMTP_USER" in result.error and "535" in result.error
    assert peer.delivered == []
    # The relay's login is the operator's to fix: logged for them, not shown to the account.
    registered: list[ActionType] = []
    linktime_email.register_actions(registered.append)
    assert is_operator_error(registered[0], result.error_code)


def test_secrets_never_in_results_or_logs(
    run_action: RunAction,
    make_peer: Callable[..., SmtpPeer],
    relay_env: Callable[..., None],
    test_ca: TestCertificates,
    closed_port: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca_file))
    caplog.set_level(logging.DEBUG)
    peer = make_peer(tls_context=test_ca.server, authenticator=authenticator)
    peer.answer_rcpt("gone@acme.example", *["550 5.1.1 no such user"] * 3)
    peer.answer_data("451 4.3.0 try later", "554 5.7.1 rejected")
    results: list[Result] = []

    def send(**env: str) -> None:
        relay_env(peer.port, smtp_security="starttls", **{**relay_auth(), **env})
        results.append(run_action("email.send", step(addresses=["gone@acme.example"])))

    send()  # 451
    send()  # 554
    send()  # sent, one recipient refused
    send(smtp_password="not-" + SMTP_PASSWORD)  # login refused
    send(smtp_port=str(closed_port))  # connection refused
    shown = repr(linktime_email.operator_settings())
    send(smtp_port="nope")  # bad operator settings

    codes = [r.error_code for r in results]
    assert codes == [
        "smtp_451",
        "smtp_554",
        None,
        "auth_failed",
        "connection_error",
        "operator_settings",
    ]
    forms = {
        SMTP_PASSWORD,
        base64.b64encode(SMTP_PASSWORD.encode()).decode(),  # AUTH LOGIN
        base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),  # AUTH PLAIN
    }
    texts = [str(r) for r in results]
    texts += [r.getMessage() for r in caplog.records]
    texts.append(shown)
    assert any("not sent to" in t for t in texts)
    for text in texts:
        for form in forms:
            assert form not in text


# --- settings ------------------------------------------------------------------------------------


def test_step_settings_normalize_addresses() -> None:
    settings = linktime_email.EmailStepSettings.model_validate(
        step(addresses=[" Ops@ACME.Example "])
    )
    assert settings.addresses == ["Ops@acme.example"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"addresses": ["ok@acme.example", "not-an-address"]}, "addresses.1", "not a valid"),
        ({"addresses": ["a@b"]}, "addresses.0", "not a valid"),
        ({"addresses": [f"u{i}@acme.example" for i in range(21)]}, "addresses", "at most 20"),
        ({"to_invitee": False}, "", "Choose at least one recipient: the invitee, the hosts or an"),
        ({"subject": "Hi {{ invitee.nickname }}"}, "subject", "unknown field 'nickname'"),
        ({"text": "Hi\n{{ bookng.title }}"}, "text", "line 2: unknown field 'bookng'"),
        ({"html": "<p>{% if %}</p>"}, "html", "syntax error"),
        ({"subject": ""}, "subject", "at least 1 character"),
        ({"cc": ["x@acme.example"]}, "cc", "Extra inputs are not permitted"),
    ],
)
def test_step_settings_refused_on_save(changes: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        linktime_email.EmailStepSettings.model_validate(step(**changes))
    [error] = caught.value.errors()
    assert ".".join(map(str, error["loc"])) == field
    assert message in error["msg"]


@pytest.mark.parametrize(
    ("credentials", "field", "message"),
    [
        ({"reply_to": "help at acme"}, "reply_to", "not a valid email address"),
        ({"from_name": "Acme\r\nBcc: x@y.z"}, "from_name", "one line"),
        ({"from_name": "A" * 101}, "from_name", "at most 100"),
        ({"password": "x"}, "password", "Extra inputs"),
    ],
)
def test_credentials_refused(credentials: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        linktime_email.EmailCredentials.model_validate(credentials)
    [error] = caught.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]


def test_operator_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    operator = linktime_email.operator_settings()
    assert (operator.smtp_host, operator.port, operator.smtp_security) == ("localhost", 25, "none")
    assert (operator.from_address, operator.timeout) == (None, 15)

    monkeypatch.setenv("LINKTIME_EMAIL_SMTP_SECURITY", "tls")
    assert linktime_email.operator_settings().port == 465
    monkeypatch.setenv("LINKTIME_EMAIL_SMTP_SECURITY", "starttls")
    assert linktime_email.operator_settings().port == 587
    monkeypatch.setenv("LINKTIME_EMAIL_SMTP_PORT", "2525")
    monkeypatch.setenv("LINKTIME_EMAIL_SMTP_USER", "")  # empty is unset
    assert linktime_email.operator_settings().port == 2525
    assert linktime_email.operator_settings().smtp_user is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SMTP_PORT": "smtp"}, "LINKTIME_EMAIL_SMTP_PORT"),
        ({"SMTP_SECURITY": "ssl"}, "LINKTIME_EMAIL_SMTP_SECURITY"),
        ({"FROM_ADDRESS": "bookings"}, "LINKTIME_EMAIL_FROM_ADDRESS"),
        ({"SMTP_PASSWORD": SMTP_PASSWORD}, "SMTP_USER and SMTP_PASSWORD must be set together"),
    ],
)
def test_bad_operator_settings_retry(
    run_action: RunAction, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"LINKTIME_EMAIL_{name}", value)
    result = run_action("email.send", step())

    assert (result.outcome, result.error_code) == (Outcome.RETRY, "operator_settings")
    assert result.error is not None
    assert names in result.error
    assert SMTP_PASSWORD not in result.error


# --- through the core ----------------------------------------------------------------------------


def test_registered_through_the_entry_point() -> None:
    from linktime import plugins

    registry = plugins.load()
    action = registry.action("email.send")
    assert (action.title, action.capability, action.integration) == ("Send Email", "email", "email")
    assert action.settings is linktime_email.EmailStepSettings
    assert action.credentials is linktime_email.EmailCredentials
    assert "email" in {p.name for p in registry.plugins}


def test_a_workflow_run_sends_with_the_account_integration(
    linktime_hub: Hub, peer: SmtpPeer
) -> None:
    from linktime import accounts, integrations, workflows
    from linktime.errors import InputError

    account = accounts.create_account(linktime_hub, "Acme", "free")
    with pytest.raises(InputError, match="reply_to"):
        integrations.connect(linktime_hub, account.id, "email", {"reply_to": "nobody"})
    integrations.connect(
        linktime_hub, account.id, "email", {"from_name": "Acme", "reply_to": "help@acme.example"}
    )
    with pytest.raises(InputError) as refused:
        workflows.create(
            linktime_hub,
            account.id,
            workflows.WorkflowIn(
                name="Confirm",
                trigger="booking.created",
                steps=[workflows.StepIn(action="email.send", settings=step(text="{{ nope }}"))],
            ),
        )
    assert "steps.0.settings.text" in str(refused.value)
    workflows.create(
        linktime_hub,
        account.id,
        workflows.WorkflowIn(
            name="Confirm",
            trigger="booking.created",
            enabled=True,
            steps=[workflows.StepIn(action="email.send", settings=step())],
        ),
    )

    [run_id] = linktime_hub.emit(sample_event(), account_id=account.id).run_ids
    linktime_hub.process_run(run_id)

    run = get_run(linktime_hub, account.id, run_id)
    [run_step] = run.steps
    assert (run.status, run_step.status) == ("succeeded", "succeeded")
    msg = peer.delivered[0].message
    assert (msg["From"], msg["Reply-To"]) == (f"Acme <{FROM}>", "help@acme.example")
    assert msg["Message-ID"] == run_step.external_id
    assert msg["Message-ID"] == f"<msg_{run_step.id.removeprefix('stp_')}@linktime.example>"


def test_a_live_test_sends_to_the_invitee_instead_of_the_fixed_addresses() -> None:
    fixed = linktime_email.EmailStepSettings(
        to_hosts=True, addresses=["boss@example.com"], subject="s", text="t"
    )
    tested = linktime_email.to_the_booking(fixed)
    assert (tested.addresses, tested.to_invitee, tested.to_hosts) == ([], True, True)
    invitee = linktime_email.EmailStepSettings(to_invitee=True, subject="s", text="t")
    assert linktime_email.to_the_booking(invitee) is invitee
