"""LinkTime action ``email.send``: a booking email (plain text, optionally HTML) over SMTP.

Operator settings (environment, prefix ``LINKTIME_EMAIL_``) are read on every send: the SMTP
relay (``SMTP_HOST``, ``SMTP_PORT``, ``SMTP_SECURITY``, ``SMTP_USER``, ``SMTP_PASSWORD``), the
envelope and From address (``FROM_ADDRESS``) and ``TIMEOUT`` (seconds for one whole send).
Accounts may connect the ``email`` integration for a sender name and a Reply-To address.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Annotated, Any, Literal

import aiosmtplib
from email_validator import EmailNotValidError, validate_email
from linktime.actions import (
    ActionContext,
    ActionType,
    Problem,
    Result,
    Template,
    TemplateStep,
)
from linktime.hookspecs import hookimpl
from linktime.models import Booking, Person
from linktime.operator_settings import OperatorSettingError, operator_timeout, plugin_settings
from linktime.templating import TemplateStr
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__version__ = "0.1.0"

ACTION = "email.send"
INTEGRATION = "email"
ENV_PREFIX = "LINKTIME_EMAIL_"
MAX_ADDRESSES = 20
EXCERPT_CHARS = 1024
QUIT_TIMEOUT = 2.0  # seconds; the message is already accepted, so never wait long to say bye
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}

log = logging.getLogger(__name__)


def _email_address(value: str) -> str:
    """A syntactically valid address, normalized; no DNS lookup (saving must not hang)."""
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None


EmailAddress = Annotated[str, AfterValidator(_email_address)]


def _one_line(value: str) -> str:
    """Booking text in a header: newlines and runs of blanks become one space."""
    return " ".join(value.split())


class EmailStepSettings(BaseModel):
    """What a workflow step of type ``email.send`` is configured with."""

    model_config = ConfigDict(extra="forbid")

    to_invitee: bool = Field(default=False, description="Send to the booker (the invitee)")
    to_hosts: bool = Field(default=False, description="Send to the host and every co-host")
    addresses: list[EmailAddress] = Field(
        default_factory=list, max_length=MAX_ADDRESSES, description="Further fixed addresses"
    )
    subject: TemplateStr = Field(min_length=1, max_length=1000)
    text: TemplateStr = Field(min_length=1, max_length=50_000, description="Plain-text body")
    html: TemplateStr | None = Field(
        default=None, max_length=100_000, description="HTML body (values are HTML-escaped)"
    )

    @model_validator(mode="after")
    def _some_recipient(self) -> EmailStepSettings:
        if not (self.to_invitee or self.to_hosts or self.addresses):
            raise ValueError("Choose at least one recipient: the invitee, the hosts or an address")
        return self


class EmailCredentials(BaseModel):
    """The account's ``email`` integration: how its messages present themselves."""

    model_config = ConfigDict(extra="forbid")

    from_name: str | None = Field(
        default=None, max_length=100, description="Display name in From, e.g. 'Acme Bookings'"
    )
    reply_to: EmailAddress | None = Field(default=None, description="Where replies go")

    @field_validator("from_name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.isprintable():
            raise ValueError("The from name must be one line, without control characters")
        return value.strip() or None


class EmailOperatorSettings(BaseSettings):
    """Operator-wide settings from the environment (``LINKTIME_EMAIL_*``)."""

    # Errors name the variable, never its value: one of them is a password.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, hide_input_in_errors=True
    )

    smtp_host: str = Field(default="localhost", min_length=1)
    smtp_port: int | None = Field(
        default=None, ge=1, le=65535, description="Default 25, or 587 (starttls), 465 (tls)"
    )
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    from_address: EmailAddress | None = Field(
        default=None, description="Envelope sender and From address; required to send"
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds for one whole send")

    @model_validator(mode="after")
    def _user_and_password(self) -> EmailOperatorSettings:
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USER and SMTP_PASSWORD must be set together")
        return self

    @property
    def port(self) -> int:
        return self.smtp_port or DEFAULT_PORTS[self.smtp_security]

    @property
    def server(self) -> str:
        return f"{self.smtp_host}:{self.port}"


def operator_settings() -> EmailOperatorSettings:
    """The operator's settings (``LINKTIME_EMAIL_*``); invalid ones raise
    ``OperatorSettingError`` naming the variables."""
    return plugin_settings(ENV_PREFIX, EmailOperatorSettings)


# --- recipients and the message ------------------------------------------------------------------


def _people(settings: EmailStepSettings, booking: Booking) -> Iterator[tuple[str, Person]]:
    if settings.to_invitee:
        # The booker, as the templates see it: ``invitee``, else the first of ``invitees``.
        invitee = booking.invitee or (booking.invitees[0] if booking.invitees else None)
        if invitee is not None:
            yield "invitee", invitee
    if settings.to_hosts:
        for host in [booking.host, *booking.hosts]:
            if host is not None:
                yield "host", host


def resolve_recipients(
    settings: EmailStepSettings, booking: Booking
) -> tuple[list[Address], list[str]]:
    """The addresses to send to (deduplicated, in order) and why any person was left out."""
    found: list[Address] = []
    left_out: list[str] = []
    seen: set[str] = set()

    def add(addr: str, name: str = "") -> None:
        address = Address(display_name=_one_line(name), addr_spec=addr)
        if address.addr_spec.lower() not in seen:
            seen.add(address.addr_spec.lower())
            found.append(address)

    for role, person in _people(settings, booking):
        if not person.email:
            left_out.append(f"{role} {person.name!r} has no email address")
            continue
        try:
            add(_email_address(person.email), person.name)
        except (ValueError, HeaderParseError) as exc:
            left_out.append(f"{role} {person.name!r}: {exc}")
    for addr in settings.addresses:
        add(addr)
    return found, left_out


def message_id(idempotency_key: str, from_address: str) -> str:
    """Stable across the retries of one step, so recipients' mail systems can de-duplicate."""
    domain = validate_email(from_address, check_deliverability=False).ascii_domain
    return f"<{idempotency_key}@{domain}>"


def _sender(ctx: ActionContext, from_address: str) -> Address:
    credentials: EmailCredentials = ctx.credentials or EmailCredentials()
    return Address(display_name=credentials.from_name or "", addr_spec=from_address)


def _rendered(ctx: ActionContext) -> tuple[str, str, str | None]:
    """The subject, the text and the HTML (None: plain text only) for this booking."""
    settings: EmailStepSettings = ctx.settings
    html = ctx.render(settings.html, html=True) if settings.html is not None else None
    return _one_line(ctx.render(settings.subject)), ctx.render(settings.text), html


def build_message(ctx: ActionContext, to: list[Address], from_address: str) -> EmailMessage:
    """The message as sent; raises ``TemplateError`` if a template cannot render this booking."""
    credentials: EmailCredentials = ctx.credentials or EmailCredentials()
    subject, text, html = _rendered(ctx)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = _sender(ctx, from_address)
    message["To"] = to
    if credentials.reply_to:
        message["Reply-To"] = credentials.reply_to
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(ctx.idempotency_key, from_address)
    # RFC 3834: vacation responders and the like must not answer.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


# --- Test before you enable ---------------------------------------------------------------------


def _from_address() -> str | None:
    try:
        return operator_settings().from_address
    except OperatorSettingError:
        return None


def to_the_booking(settings: EmailStepSettings) -> EmailStepSettings:
    """A step's settings for a live test (``ActionType.for_test``): fixed addresses become the
    booking's invitee, who is the tester."""
    if not settings.addresses:
        return settings
    return settings.model_copy(update={"addresses": [], "to_invitee": True})


def check_email(ctx: ActionContext) -> list[Problem]:
    """What would stop this step's email: the server's sender setup, or nobody to send to."""
    problems = []
    try:
        if operator_settings().from_address is None:
            problems.append(Problem.operator("Email sending is not set up on this server."))
    except OperatorSettingError:
        problems.append(Problem.operator("Email sending is not set up correctly on this server."))
    to, left_out = resolve_recipients(ctx.settings, ctx.event.booking)
    if not to:
        why = "; ".join(left_out) or "no recipient is chosen"
        problems.append(
            Problem(
                f"Nobody would receive this email for this booking ({why}).",
                "Add an address, or send it to someone who has one.",
            )
        )
    return problems


def preview_email(ctx: ActionContext) -> dict[str, Any]:
    """The email as its recipients would see it (the sender left blank while the server has
    none)."""
    to, _ = resolve_recipients(ctx.settings, ctx.event.booking)
    subject, text, html = _rendered(ctx)
    from_address = _from_address()
    return {
        "subject": subject,
        "from": str(_sender(ctx, from_address)) if from_address else "",
        "to": [str(address) for address in to],
        "text": text,
        "html": html,
    }


# --- SMTP replies to results ---------------------------------------------------------------------


def _permanent(code: int) -> bool:
    return 500 <= code < 600


def _reply(code: int, text: str) -> str:
    return f"{code} {' '.join(text.split())}"


def _by_code(said: str, code: int) -> Result:
    if _permanent(code):
        return Result.fail(said, error_code=f"smtp_{code}")
    return Result.retry(said, error_code=f"smtp_{code}")


def _all_refused(refusals: list[aiosmtplib.SMTPRecipientRefused], server: str) -> Result:
    """No recipient was accepted, so nothing was sent: retrying duplicates nothing."""
    said = f"{server} refused every recipient: " + "; ".join(
        f"{r.recipient}: {_reply(r.code, r.message)}" for r in refusals
    )
    # One temporary refusal is worth another try: that recipient may take it next time.
    temporary = [r for r in refusals if not _permanent(r.code)]
    return _by_code(said, (temporary or refusals)[0].code)


def _what(exc: aiosmtplib.SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return f"the sender {exc.sender} (MAIL FROM)"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "the message (DATA)"
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "the greeting (EHLO)"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return "the connection"
    return "a command"


def _failure(stage: str, exc: Exception, operator: EmailOperatorSettings) -> Result:
    """What went wrong at ``stage`` (connect, starttls, login or send), as a result."""
    server = operator.server
    if isinstance(exc, TimeoutError):
        return Result.retry(
            f"no answer from {server} within {operator.timeout:g}s (during {stage})",
            error_code="timeout",
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _all_refused(exc.recipients, server)
    if stage == "login":
        # The operator's credentials, not this message: retrying lets sending resume once the
        # relay login is fixed, instead of failing every email meanwhile.
        return Result.retry(
            f"{server} refused the login of {ENV_PREFIX}SMTP_USER: {exc}",
            error_code="auth_failed",
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(f"{server} refused {_what(exc)}: {_reply(exc.code, exc.message)}", exc.code)
    if (
        stage == "starttls"
        or isinstance(exc, ssl.SSLError)
        or isinstance(exc.__cause__, ssl.SSLError)
    ):
        return Result.retry(f"TLS with {server} failed: {exc}", error_code="tls_error")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        # E.g. a non-ASCII address and a relay without SMTPUTF8: the same on every attempt.
        return Result.fail(f"{server}: {exc}", error_code="not_supported")
    return Result.retry(
        f"connection to {server} failed: {type(exc).__name__}: {exc}",
        error_code="connection_error",
    )


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        async with asyncio.timeout(QUIT_TIMEOUT):
            await smtp.quit()
    except (TimeoutError, OSError, aiosmtplib.SMTPException):
        pass  # already delivered; a relay that hangs up early changes nothing
    finally:
        smtp.close()


# --- the action ----------------------------------------------------------------------------------


async def send_email(ctx: ActionContext) -> Result:
    """Send one attempt of an ``email.send`` step. Invalid operator settings and a template
    this booking breaks raise: the engine retries the first, fails the second."""
    operator = operator_settings()
    if operator.from_address is None:
        return Result.fail(
            f"no sender address: the operator must set {ENV_PREFIX}FROM_ADDRESS",
            error_code="no_from_address",
        )
    to, left_out = resolve_recipients(ctx.settings, ctx.event.booking)
    if not to:
        why = "; ".join(left_out) or "nobody matched the chosen recipients"
        return Result.fail(f"no recipient for this booking: {why}", error_code="no_recipient")
    message = build_message(ctx, to, operator.from_address)

    password = operator.smtp_password.get_secret_value() if operator.smtp_password else None
    smtp = aiosmtplib.SMTP(
        hostname=operator.smtp_host,
        port=operator.port,
        use_tls=operator.smtp_security == "tls",
        start_tls=False,  # never opportunistic: STARTTLS only when the operator asks for it
        timeout=operator.timeout,
    )
    log.debug(
        "email %s: sending to %d recipient(s) via %s (%s)",
        ctx.idempotency_key,
        len(to),
        operator.server,
        operator.smtp_security,
    )
    stage = "connect"
    try:
        # One deadline for the whole send: connect, TLS, login, envelope and data.
        async with asyncio.timeout(operator.timeout):
            await smtp.connect()
            if operator.smtp_security == "starttls":
                stage = "starttls"
                await smtp.starttls()
            if operator.smtp_user is not None and password is not None:
                stage = "login"
                await smtp.login(operator.smtp_user, password)
            stage = "send"
            refused, reply = await smtp.send_message(
                message, sender=operator.from_address, recipients=[a.addr_spec for a in to]
            )
    except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
        smtp.close()
        return _failure(stage, exc, operator)
    await _quit(smtp)

    not_sent = [f"{addr} refused: {_reply(r.code, r.message)}" for addr, r in refused.items()]
    not_sent += left_out
    if not_sent:
        # Sent to the others: a retry would send them the message again, so report, don't retry.
        log.warning("email %s: not sent to everyone: %s", ctx.idempotency_key, not_sent)
    summary = " ".join(reply.split())
    if not_sent:
        summary = (
            f"sent to {len(to) - len(refused)} of {len(to) + len(left_out)} recipients; "
            f"not sent to: {'; '.join(not_sent)}; server said: {summary}"
        )
    return Result.ok(external_id=message["Message-ID"], response_excerpt=summary[:EXCERPT_CHARS])


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="Send Email",
            settings=EmailStepSettings,
            execute=send_email,
            capability="email",
            credentials=EmailCredentials,
            integration=INTEGRATION,
            # The integration only names the sender; the server's address sends.
            needs_integration=False,
            check=check_email,
            preview=preview_email,
            for_test=to_the_booking,
            # The relay and its login are the operator's to set up.
            operator_codes=frozenset({"auth_failed", "tls_error"}),
            preview_kind="email",
            # The whole send, then the goodbye it may still wait for.
            timeout=operator_timeout(ENV_PREFIX, EmailOperatorSettings, extra=QUIT_TIMEOUT),
            description="Email the invitee, the hosts or fixed addresses over the operator's SMTP.",
        )
    )


def _email_template(
    name: str, title: str, trigger: str, subject: str, text: str, offset_minutes: int = 0
) -> Template:
    return Template(
        name=name,
        title=title,
        trigger=trigger,
        offset_minutes=offset_minutes,
        description=title,
        steps=(TemplateStep(ACTION, {"to_invitee": True, "subject": subject, "text": text}),),
    )


TEMPLATES = (
    _email_template(
        "thank-you-email",
        "Thank You Email",
        "booking.created",
        "Thanks for booking {{ event_name }}",
        "Hi {{ attendee_first_name }},\n\nthank you for booking {{ event_name }} with "
        "{{ organizer_name }} on {{ event_date }} at {{ event_time }} ({{ timezone }}).\n\n"
        "{% if meeting_url %}Join: {{ meeting_url }}\n{% endif %}"
        "Need to change it? Reschedule: {{ reschedule_url }}\n",
    ),
    _email_template(
        "payment-confirmation",
        "Payment Confirmation",
        "payment.received",
        "Payment received for {{ event_name }}",
        "Hi {{ attendee_first_name }},\n\nwe received your payment of {{ payment_amount }} "
        "(reference {{ payment.reference }}) for {{ event_name }} on {{ event_date }}.\n",
    ),
    _email_template(
        "cancellation-follow-up",
        "Cancellation Follow-up",
        "booking.cancelled",
        "Your booking {{ event_name }} was cancelled",
        "Hi {{ attendee_first_name }},\n\n{{ event_name }} on {{ event_date }} was cancelled"
        "{% if cancellation_reason %} ({{ cancellation_reason }}){% endif %}.\n"
        "Book another time: {{ reschedule_url }}\n",
    ),
    _email_template(
        "post-meeting-survey",
        "Post-Meeting Survey",
        "meeting.after",
        "How was {{ event_name }}?",
        "Hi {{ attendee_first_name }},\n\nthanks for meeting {{ organizer_name }}. "
        "How did it go? Reply to this email with a rating from 1 to 5 and anything we could "
        "do better.\n",
        offset_minutes=30,
    ),
)


@hookimpl
def register_templates(register: Callable[[Template], None]) -> None:
    for template in TEMPLATES:
        register(template)
