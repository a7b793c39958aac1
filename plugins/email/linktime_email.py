"""LinkTime action ``email.send``: a booking email (plain text, optionally HTML) over SMTP.

Operator settings (environment, prefix ``LINKTIME_EMAIL_``) are read on every send: the SMTP
relay (``SMTP_HOST``, ``SMTP_PORT``, ``SMTP_SECURITY``, ``SMTP_USER``, ``SMTP_PASSWORD``), the
envelope and From address (``FROM_ADDRESS``) and ``TIMEOUT`` (seconds for one whole send).
Accounts may connect the ``email`` integration for a sender name and a Reply-To address.

A step may attach a calendar invite (iTIP over email: METHOD:REQUEST, or CANCEL from a
cancellation workflow, with one UID per booking and SEQUENCE counting its changes), and a
follow-up step carries RFC 8058 one-click unsubscribe headers. Recipients on the account's
suppression list are never sent to.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from linktime.actions import (
    NO_SERVICES,
    ActionContext,
    ActionType,
    Problem,
    Result,
    Template,
    TemplateStep,
)
from linktime.errors import FieldError
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

if TYPE_CHECKING:
    # aiosmtplib, icalendar and email-validator are imported where first needed (sending,
    # building an invitation, checking an address), so a server that never sends email does
    # not load them (issue 17: the embedded default's RSS).
    import aiosmtplib
    import icalendar

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
    from email_validator import EmailNotValidError, validate_email

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
    calendar_invite: bool = Field(
        default=False,
        title="Attach a calendar invite",
        description="The booking as an invite the recipient's calendar adds (Gmail, Outlook, "
        "Apple); a rescheduling updates it, a cancellation workflow removes it",
    )
    follow_up: bool = Field(
        default=False,
        title="Follow-up (not about the booking itself): recipients can unsubscribe",
        description="For surveys and thank-yous: a one-click unsubscribe link; who uses it gets "
        "no more messages from this account",
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


# A display name that carries an address ("support@bank.example", "Acme <ceo@acme.example>")
# makes many clients show that address instead of the real sender: display-name spoofing.
_ADDRESS_IN_NAME = re.compile(r"[^\s<>@]+@[^\s<>@]+|[<>]")


def verify_credentials(credentials: EmailCredentials) -> list[FieldError]:
    """Checks at connect, beyond the form of each field, that need the server's settings or
    must not make an already stored integration unreadable (a validator would)."""
    refused = []
    if credentials.from_name and _ADDRESS_IN_NAME.search(credentials.from_name):
        refused.append(
            FieldError(
                "from_name",
                "The from name must be a name, not an address: mail clients would show it "
                "instead of the real sender",
            )
        )
    from_address = _from_address()
    if (
        credentials.reply_to
        and from_address
        and credentials.reply_to.lower() == from_address.lower()
    ):
        refused.append(
            FieldError(
                "reply_to",
                "This is the server's sending address; replies would not reach you. Give your "
                "own inbox, or leave it empty",
            )
        )
    return refused


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


def message_id(idempotency_key: str, from_address: str, recipient: str | None = None) -> str:
    """Stable across the retries of one step, so recipients' mail systems can de-duplicate; a
    follow-up sent one message per recipient names the recipient (by a digest) in each."""
    from email_validator import validate_email

    domain = validate_email(from_address, check_deliverability=False).ascii_domain
    if recipient is None:
        return f"<{idempotency_key}@{domain}>"
    digest = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
    return f"<{idempotency_key}.{digest}@{domain}>"


def _sender(ctx: ActionContext, from_address: str) -> Address:
    credentials: EmailCredentials = ctx.credentials or EmailCredentials()
    return Address(display_name=credentials.from_name or "", addr_spec=from_address)


def _rendered(ctx: ActionContext) -> tuple[str, str, str | None]:
    """The subject, the text and the HTML (None: plain text only) for this booking."""
    settings: EmailStepSettings = ctx.settings
    html = ctx.render(settings.html, html=True) if settings.html is not None else None
    return _one_line(ctx.render(settings.subject)), ctx.render(settings.text), html


# --- the calendar invite (iTIP over email: RFC 5546, RFC 6047) -----------------------------------

CANCELLING = "booking.cancelled"
PRODID = "-//LinkTime//Workflows//EN"


def invite_method(ctx: ActionContext) -> str:
    """CANCEL from a cancellation (the event or the workflow's trigger), else REQUEST."""
    return "CANCEL" if CANCELLING in (ctx.event.type, ctx.trigger) else "REQUEST"


def invite_uid(booking: Booking) -> str:
    """One UID per booking: the scheduler's own (Cal.com sends ``iCalUID``), so our invite
    updates the event the scheduler's invite already put in the calendar; else the booking's."""
    extra = booking.model_extra or {}
    for key in ("iCalUID", "ical_uid"):
        value = extra.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return f"{booking.uid}@linktime"


def _valid_address(raw: str | None) -> str | None:
    """``raw`` as an email address, or None when it is not one: what a booker typed stays out
    of the invite rather than breaking it."""
    if not raw:
        return None
    try:
        return _email_address(raw)
    except ValueError:
        return None


def _mailto(person: Person | Address, **params: str) -> icalendar.vCalAddress:
    import icalendar

    if isinstance(person, Address):
        name, addr = person.display_name, person.addr_spec
    else:
        name, addr = person.name, _valid_address(person.email) or ""
    address = icalendar.vCalAddress(f"mailto:{addr}")
    if name:
        address.params["CN"] = _one_line(name)
    address.params.update(params)
    return address


def _attendees(booking: Booking) -> list[Person]:
    """The invitees (the booker first) and the co-hosts, each once, those with a valid address."""
    people = [booking.invitee, *booking.invitees, *booking.hosts]
    host = _valid_address(booking.host.email) if booking.host else None
    seen = {host.lower()} if host else set()
    found = []
    for person in people:
        address = _valid_address(person.email) if person is not None else None
        if person is not None and address and address.lower() not in seen:
            seen.add(address.lower())
            found.append(person)
    return found


def _description(booking: Booking) -> str:
    lines = [booking.notes or ""]
    for label, url in (
        ("Join", booking.meeting_url),
        ("Reschedule", booking.reschedule_url),
        ("Cancel", booking.cancel_url),
    ):
        if url:
            lines.append(f"{label}: {url}")
    return "\n".join(line for line in lines if line)


def build_invite(ctx: ActionContext, organizer: Address) -> tuple[str, bytes]:
    """The booking as an iCalendar object: its METHOD and its bytes. ``organizer`` stands in
    when the booking's host has no address (iTIP requires an ORGANIZER)."""
    import icalendar

    booking = ctx.event.booking
    method = invite_method(ctx)
    cancelled = method == "CANCEL"
    event = icalendar.Event()
    event.add("uid", invite_uid(booking))
    # The core counts the booking's reschedules and cancellations up to this event: clients
    # apply a REQUEST or CANCEL only over an older SEQUENCE.
    event.add("sequence", ctx.services.booking_sequence())
    event.add("dtstamp", datetime.now(UTC))
    event.add("dtstart", booking.start.astimezone(UTC))
    event.add("dtend", booking.end.astimezone(UTC))
    title = booking.title or (booking.event_type.title if booking.event_type else None)
    event.add("summary", _one_line(title or "Booking"))
    if booking.location or booking.meeting_url:
        event.add("location", booking.location or booking.meeting_url)
    if booking.meeting_url:
        event.add("url", booking.meeting_url)
    description = _description(booking)
    if description:
        event.add("description", description)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    host = booking.host
    event.add("organizer", _mailto(host if host and _valid_address(host.email) else organizer))
    rsvp = "FALSE" if cancelled else "TRUE"
    for person in _attendees(booking):
        attendee = _mailto(person, ROLE="REQ-PARTICIPANT", PARTSTAT="NEEDS-ACTION", RSVP=rsvp)
        event.add("attendee", attendee, encode=False)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    calendar.add_component(event)
    return method, calendar.to_ical()


# --- the messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One message and the recipients it goes to."""

    message: EmailMessage
    to: list[Address]

    @property
    def recipients(self) -> list[str]:
        return _addresses(self.to)


def _message(
    ctx: ActionContext,
    to: list[Address],
    from_address: str,
    body: tuple[str, str, str | None],
    invite: tuple[str, bytes] | None,
    *,
    msg_id: str,
    unsubscribe: str | None = None,
) -> EmailMessage:
    credentials: EmailCredentials = ctx.credentials or EmailCredentials()
    subject, text, html = body
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = _sender(ctx, from_address)
    message["To"] = to
    if credentials.reply_to:
        message["Reply-To"] = credentials.reply_to
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = msg_id
    # RFC 3834: vacation responders and the like must not answer.
    message["Auto-Submitted"] = "auto-generated"
    if unsubscribe is not None:
        # RFC 8058: a POST to this URL unsubscribes at once (Gmail's and Yahoo's button).
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if invite is not None:
        method, ics = invite
        # As Google Calendar and Outlook send invites: the calendar as the last alternative
        # (clients that show invites read it there), and again as invite.ics for the others.
        message.add_alternative(
            ics.decode(), subtype="calendar", charset="utf-8", params={"method": method}
        )
        message.add_attachment(
            ics,
            maintype="application",
            subtype="ics",
            filename="invite.ics",
            params={"name": "invite.ics"},
        )
    return message


def build_messages(ctx: ActionContext, to: list[Address], from_address: str) -> list[Outgoing]:
    """The messages as sent: one, or for a follow-up one per recipient, each with that
    recipient's own unsubscribe link. Raises ``TemplateError`` if a template cannot render
    this booking."""
    settings: EmailStepSettings = ctx.settings
    body = _rendered(ctx)
    invite = build_invite(ctx, _sender(ctx, from_address)) if settings.calendar_invite else None

    def one(group: list[Address], unsubscribe: str | None, recipient: str | None) -> Outgoing:
        msg_id = message_id(ctx.idempotency_key, from_address, recipient)
        message = _message(
            ctx, group, from_address, body, invite, msg_id=msg_id, unsubscribe=unsubscribe
        )
        return Outgoing(message, group)

    links = [ctx.services.unsubscribe_url(a.addr_spec) for a in to] if settings.follow_up else []
    if not any(links):
        return [one(to, None, None)]  # not a follow-up, or unsubscribing is not set up
    if len(to) == 1:
        return [one(to, links[0], None)]
    # The link names its recipient, so each recipient gets a message of their own.
    return [one([a], link, a.addr_spec) for a, link in zip(to, links, strict=True)]


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


def _unsubscribable(ctx: ActionContext, address: Address) -> bool:
    return ctx.services.unsubscribe_url(address.addr_spec) is not None


def check_email(ctx: ActionContext) -> list[Problem]:
    """What would stop this step's email: the server's sender setup, or nobody to send to."""
    problems = []
    try:
        if operator_settings().from_address is None:
            problems.append(Problem.operator("Email sending is not set up on this server."))
    except OperatorSettingError:
        problems.append(Problem.operator("Email sending is not set up correctly on this server."))
    to, left_out = resolve_recipients(ctx.settings, ctx.event.booking)
    # Only a context with the account's services can tell (the base has no public URL).
    knows = ctx.services is not NO_SERVICES
    if ctx.settings.follow_up and knows and to and not _unsubscribable(ctx, to[0]):
        problems.append(
            Problem.operator(
                "This follow-up would go without an unsubscribe link: unsubscribing is "
                "not set up on this server."
            )
        )
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
    import aiosmtplib

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
    import aiosmtplib

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
    import aiosmtplib

    try:
        async with asyncio.timeout(QUIT_TIMEOUT):
            await smtp.quit()
    except (TimeoutError, OSError, aiosmtplib.SMTPException):
        pass  # already delivered; a relay that hangs up early changes nothing
    finally:
        smtp.close()


# --- the action ----------------------------------------------------------------------------------


def _not_opted_out(ctx: ActionContext, to: list[Address]) -> tuple[list[Address], list[str]]:
    """The recipients not on the account's suppression list, and why the others are left
    out. Every email step checks, transactional ones too: the list is the recipient's "no"."""
    kept: list[Address] = []
    opted_out: list[str] = []
    for address in to:
        reason = ctx.services.opted_out(address.addr_spec)
        if reason is None:
            kept.append(address)
        else:
            opted_out.append(reason)
    return kept, opted_out


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
    to, opted_out = _not_opted_out(ctx, to)
    if not to and opted_out:
        # Nothing is sent and nothing fails: the run goes on (SMTP is not contacted).
        return Result.opted_out("; ".join(opted_out))
    if not to:
        why = "; ".join(left_out) or "nobody matched the chosen recipients"
        return Result.fail(f"no recipient for this booking: {why}", error_code="no_recipient")
    left_out += opted_out
    outgoing = build_messages(ctx, to, operator.from_address)

    import aiosmtplib

    password = operator.smtp_password.get_secret_value() if operator.smtp_password else None
    smtp = aiosmtplib.SMTP(
        hostname=operator.smtp_host,
        port=operator.port,
        use_tls=operator.smtp_security == "tls",
        start_tls=False,  # never opportunistic: STARTTLS only when the operator asks for it
        timeout=operator.timeout,
    )
    log.debug(
        "email %s: sending %d message(s) to %d recipient(s) via %s (%s)",
        ctx.idempotency_key,
        len(outgoing),
        len(to),
        operator.server,
        operator.smtp_security,
    )
    reached: list[str] = []  # recipients the relay accepted a message for
    replies: list[tuple[str, str]] = []  # (Message-ID, the relay's answer) per message taken
    refusals: list[aiosmtplib.SMTPRecipientRefused] = []
    stage = "connect"
    try:
        # One deadline for the whole send: connect, TLS, login, envelopes and data.
        async with asyncio.timeout(operator.timeout):
            await smtp.connect()
            if operator.smtp_security == "starttls":
                stage = "starttls"
                await smtp.starttls()
            if operator.smtp_user is not None and password is not None:
                stage = "login"
                await smtp.login(operator.smtp_user, password)
            stage = "send"
            for out in outgoing:
                try:
                    refused, reply = await smtp.send_message(
                        out.message, sender=operator.from_address, recipients=out.recipients
                    )
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    refusals += exc.recipients
                    continue
                replies.append((out.message["Message-ID"], reply))
                reached += [a for a in out.recipients if a not in refused]
                refusals += [
                    aiosmtplib.SMTPRecipientRefused(r.code, r.message, addr)
                    for addr, r in refused.items()
                ]
    except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
        smtp.close()
        if not replies:
            return _failure(stage, exc, operator)
        # Some messages went: a retry would send those again, so report the rest instead.
        broke_off = _failure(stage, exc, operator).error
    else:
        broke_off = None
        await _quit(smtp)
    if not replies:
        return _all_refused(refusals, operator.server)

    not_sent = [f"{r.recipient} refused: {_reply(r.code, r.message)}" for r in refusals]
    answered = set(reached) | {r.recipient for r in refusals}
    not_sent += [f"{a}: {broke_off}" for a in _addresses(to) if a not in answered]
    not_sent += left_out
    summary = " ".join(replies[-1][1].split())
    if len(outgoing) > 1:
        summary = f"one message per recipient (each with its own unsubscribe link); {summary}"
    if not_sent:
        # Sent to the others: a retry would send them the message again, so report, don't retry.
        log.warning("email %s: not sent to everyone: %s", ctx.idempotency_key, not_sent)
        summary = (
            f"sent to {len(reached)} of {len(to) + len(left_out)} recipients; "
            f"not sent to: {'; '.join(not_sent)}; server said: {summary}"
        )
    return Result.ok(external_id=replies[0][0], response_excerpt=summary[:EXCERPT_CHARS])


def _addresses(to: list[Address]) -> list[str]:
    return [address.addr_spec for address in to]


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
            verify_credentials=verify_credentials,
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
    name: str,
    title: str,
    trigger: str,
    subject: str,
    text: str,
    offset_minutes: int = 0,
    before: tuple[TemplateStep, ...] = (),
    description: str | None = None,
) -> Template:
    """A template ending in an email to the invitee, after the logic steps ``before``."""
    email = TemplateStep(ACTION, {"to_invitee": True, "subject": subject, "text": text})
    return Template(
        name=name,
        title=title,
        trigger=trigger,
        offset_minutes=offset_minutes,
        description=description or title,
        steps=(*before, email),
    )


def _only_if(*conditions: tuple[str, str, Any]) -> TemplateStep:
    """A filter step: the run goes on only if every (field, op, value) holds by then."""
    listed = [{"field": field, "op": op, "value": value} for field, op, value in conditions]
    return TemplateStep("logic.filter", {"conditions": listed})


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
    _email_template(
        "no-show-follow-up",
        "No-show Follow-up",
        "meeting.after",
        "Sorry we missed you at {{ event_name }}",
        "Hi {{ attendee_first_name }},\n\nwe missed you at {{ event_name }} with "
        "{{ organizer_name }} on {{ event_date }} at {{ event_time }} ({{ timezone }}). "
        "Would another time suit you?\n\n"
        "{% if reschedule_url %}Book it here: {{ reschedule_url }}\n{% endif %}",
        offset_minutes=30,
        # Sent only if the booking was marked a no-show (booking.no_show) by then.
        before=(_only_if(("booking.no_show", "eq", True)),),
        description="30 minutes after the meeting, an email inviting an invitee marked a "
        "no-show to book again",
    ),
    _email_template(
        "unpaid-booking-reminder",
        "Unpaid Booking Reminder",
        "booking.created",
        "Complete your payment for {{ event_name }}",
        "Hi {{ attendee_first_name }},\n\nyour booking {{ event_name }} with "
        "{{ organizer_name }} on {{ event_date }} at {{ event_time }} ({{ timezone }}) is not "
        "paid yet. Please complete your payment to keep it.\n",
        # A day to pay; the filter sees the booking as it is then (a payment.received since
        # marks it paid and stops the run).
        before=(
            TemplateStep("logic.delay", {"amount": 24, "unit": "hours"}),
            # Only bookings with a price: a free one is never "not paid yet".
            _only_if(("payment.amount", "gt", 0), ("booking.paid", "eq", False)),
        ),
        description="A day after a booking with a price, an email asking to complete the "
        "payment, unless it was paid by then",
    ),
)


@hookimpl
def register_templates(register: Callable[[Template], None]) -> None:
    for template in TEMPLATES:
        register(template)
