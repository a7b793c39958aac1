"""Twilio plumbing shared by LinkTime's Twilio channels, ``linktime-sms-twilio`` (``sms.send``)
and ``linktime-voice`` (``voice.call``).

A library, not a channel: it declares no ``linktime`` entry point and registers no action. It
holds what both channels need the same way: the account's ``twilio`` integration
(``TwilioCredentials``), phone numbers in E.164 checked against a list of countries (``e164``,
``RecipientSettings``, ``recipient``), the operator settings both read
(``TwilioOperatorSettings``, with ``LINKTIME_TWILIO_API_BASE``), Twilio's client on a pooled
per-thread session that can be redirected to another base URL (``TwilioHttp``), and Twilio's
answers mapped to LinkTime results (``call_twilio``). ``linktime_twilio_testing``, shipped
alongside, is a stand-in Twilio for tests.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import phonenumbers
import requests
from linktime.actions import ActionContext, Problem, Result
from linktime.http import retry_after
from linktime.operator_settings import OperatorSettingError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode
from twilio.base.exceptions import (  # type: ignore[import-untyped]
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

__version__ = "0.1.0"

INTEGRATION = "twilio"
NOT_CONNECTED = "Twilio is not connected: connect it in Settings."
API_BASE_ENV = "LINKTIME_TWILIO_API_BASE"
DEFAULT_COUNTRIES = frozenset({"US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "AU", "NZ"})
EXCERPT_CHARS = 1024
_SHORT_CODE_RE = re.compile(r"^[0-9]{3,8}$")
_ALPHA_SENDER_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class NumberRefused(ValueError):
    """A phone number that will not be called or texted; ``code`` becomes the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def e164(raw: str, countries: frozenset[str] | None = None) -> str:
    """``raw`` in E.164; refused when it is not a valid number or not in ``countries``."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise NumberRefused(
            "invalid_number",
            f"{raw!r} is not a phone number in international format (e.g. +14155550123)",
        ) from None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number):
        raise NumberRefused("invalid_number", f"{formatted} is not a valid phone number")
    region = phonenumbers.region_code_for_number(number) or "unknown"
    if countries is not None and region not in countries:
        raise NumberRefused(
            "unsupported_country",
            f"{formatted} is a {region} number; this service sends only to "
            f"{', '.join(sorted(countries))}",
        )
    return formatted


class TwilioCredentials(BaseModel):
    """The account's ``twilio`` integration (shared by sms.send and voice.call)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    account_sid: str = Field(
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="Account SID: AC followed by 32 digits or letters a to f",
    )
    auth_token: SecretStr = Field(min_length=1, description="The account's auth token")
    from_number: str | None = Field(
        default=None,
        max_length=40,
        description="Sender: a Twilio number (E.164), short code or alphanumeric sender ID",
    )
    messaging_service_sid: str | None = Field(
        default=None,
        pattern=r"^MG[0-9a-fA-F]{32}$",
        description="Messaging Service SID: MG followed by 32 digits or letters a to f",
    )

    @field_validator("from_number")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None or _SHORT_CODE_RE.match(value) or _ALPHA_SENDER_RE.match(value):
            return value
        return e164(value)

    @model_validator(mode="after")
    def _has_sender(self) -> TwilioCredentials:
        if not (self.from_number or self.messaging_service_sid):
            raise ValueError("set from_number, messaging_service_sid, or both")
        return self


class TwilioOperatorSettings(BaseSettings):
    """What both Twilio plugins read from the environment, each with
    ``linktime.plugin_settings(its prefix, its subclass)`` (``LINKTIME_SMS_``…; the API base
    is ``LINKTIME_TWILIO_API_BASE`` for both). A subclass sets ``user_agent``, the product token
    it adds to Twilio's User-Agent."""

    user_agent: ClassVar[str | None] = None

    supported_countries: Annotated[frozenset[str], NoDecode] = Field(
        default=DEFAULT_COUNTRIES, description="ISO 3166 codes recipients may be in, e.g. 'US,CA'"
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds for one Twilio request")
    twilio_api_base: str | None = Field(
        default=None, validation_alias=API_BASE_ENV, description="Replaces https://*.twilio.com"
    )

    @field_validator("supported_countries", mode="before")
    @classmethod
    def _iso_codes(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        codes = frozenset(part.strip().upper() for part in value.split(",") if part.strip())
        unknown = sorted(codes - phonenumbers.SUPPORTED_REGIONS)
        if unknown or not codes:
            raise ValueError(f"expected ISO country codes, e.g. US,CA; unknown: {unknown}")
        return codes

    @field_validator("twilio_api_base")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{API_BASE_ENV} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


RecipientSettingsT = TypeVar("RecipientSettingsT", bound="RecipientSettings")


class RecipientSettings(BaseModel):
    """Who a step calls or texts. Each channel's step settings subclass it and say which
    countries a listed number may be in (``supported_countries``, read when validated)."""

    model_config = ConfigDict(extra="forbid")

    to: Literal["invitee", "host", "number"] = Field(
        default="invitee", description="The booking's invitee or host, or a fixed number"
    )
    number: str | None = Field(
        default=None,
        max_length=40,
        validate_default=True,
        description="In international format, e.g. +14155550100; needed when To is 'number'",
    )

    @field_validator("number")
    @classmethod
    def _listed_number(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("to") == "number":
                raise ValueError("Enter the phone number to reach")
            return None
        return e164(value, cls.supported_countries())

    @classmethod
    def supported_countries(cls) -> frozenset[str]:
        """The countries a listed ``number`` may be in: the channel's operator setting."""
        raise NotImplementedError(f"{cls.__name__} must say which countries it sends to")


def to_the_invitee(settings: RecipientSettingsT) -> RecipientSettingsT:
    """A step's settings for a live test (``ActionType.for_test``): a fixed number becomes the
    booking's invitee, who is the tester."""
    if settings.to != "number":
        return settings
    return settings.model_copy(update={"to": "invitee", "number": None})


def recipient(ctx: ActionContext, countries: frozenset[str]) -> str:
    """The E.164 number this step goes to, checked against ``countries`` (raises NumberRefused)."""
    settings: RecipientSettings = ctx.settings
    booking = ctx.event.booking
    if settings.to == "number":
        raw = settings.number
    elif settings.to == "invitee":
        person = booking.invitee or next(iter(booking.invitees), None)
        raw = person.phone if person else None
    else:
        person = booking.host or next(iter(booking.hosts), None)
        raw = person.phone if person else None
    if not raw:
        raise NumberRefused("no_phone_number", f"the booking's {settings.to} has no phone number")
    return e164(raw, countries)


_FIXES = {
    "no_phone_number": "Ask for a phone number on the booking form, or send to a fixed number.",
    "unsupported_country": "Send to a number in one of those countries.",
    "invalid_number": "Correct the number, in international format (e.g. +14155550123).",
}


def check_recipient(
    ctx: ActionContext, operator: Callable[[], TwilioOperatorSettings], what: str
) -> list[Problem]:
    """What would stop a text or call before Twilio is asked: the server's setup for ``what``
    ("Text messages"; ``operator`` reads it with ``linktime.plugin_settings``), or a number
    this booking does not have or the server may not reach."""
    try:
        countries = operator().supported_countries
    except OperatorSettingError:
        return [Problem.operator(f"{what} are not set up correctly on this server.")]
    try:
        recipient(ctx, countries)
    except NumberRefused as exc:
        said = str(exc)
        return [Problem(f"{said[:1].upper()}{said[1:]}.", _FIXES[exc.code])]
    return []


def recipient_shown(ctx: ActionContext) -> str:
    """Who the preview says a text or call goes to: the number, or whose number is missing."""
    try:
        return recipient(ctx, frozenset(phonenumbers.SUPPORTED_REGIONS))
    except NumberRefused:
        settings: RecipientSettings = ctx.settings
        return f"The {settings.to} (no phone number)" if settings.to != "number" else "—"


_local = threading.local()


class TwilioHttp(TwilioHttpClient):  # type: ignore[misc]
    """Twilio's documented extension point, a custom ``http_client``: reuses this thread's
    pooled session, sends to ``api_base`` instead of Twilio's hosts when set, and keeps the
    last response, whose headers (Retry-After) Twilio's exceptions leave out."""

    def __init__(self, api_base: str | None, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        # A requests Session is not thread-safe: one per worker thread, kept across steps.
        if not hasattr(_local, "session"):
            _local.session = requests.Session()
        self.session = _local.session
        self.api_base = api_base
        # Twilio's exceptions come from an answer, so by then this holds it.
        self.last = Response(0, "", {})

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if self.api_base:
            parts = urlsplit(url)
            url = self.api_base + parts.path + (f"?{parts.query}" if parts.query else "")
        self.last = super().request(method, url, *args, **kwargs)
        return self.last


def _twilio_failure(exc: TwilioRestException | TwilioServiceException, http: TwilioHttp) -> Result:
    status: int = exc.status
    if isinstance(exc, TwilioRestException):
        # The SDK puts "Unable to create record: " before Twilio's own message.
        said = exc.msg.partition(": ")[2] or exc.msg
    else:
        said = exc.detail or exc.title
    # Without a Twilio code in the body the SDK repeats the HTTP status as the code.
    code = exc.code if exc.code and exc.code != status else None
    error_code = f"twilio_{code}" if code else f"http_{status}"
    error = f"Twilio answered {status}" + (f", error {code}" if code else "") + f": {said}"
    if code:
        error += f" (https://www.twilio.com/docs/errors/{code})"
    if status == 401:
        error = f"Twilio authentication failed: check the account SID and auth token. {error}"
    excerpt = http.last.text[:EXCERPT_CHARS] or None
    if status == 429 or status >= 500:
        return Result.retry(
            error,
            error_code=error_code,
            http_status=status,
            retry_after=retry_after(http.last.headers.get("Retry-After")),
            response_excerpt=excerpt,
        )
    return Result.fail(error, error_code=error_code, http_status=status, response_excerpt=excerpt)


def call_twilio(
    credentials: TwilioCredentials,
    operator: TwilioOperatorSettings,
    create: Callable[[Any], Any],
) -> Result:
    """Run ``create(client)`` (one Twilio create call) and map what came back to a Result."""
    http = TwilioHttp(operator.twilio_api_base, operator.timeout)
    client = Client(
        credentials.account_sid,
        credentials.auth_token.get_secret_value(),
        http_client=http,
        user_agent_extensions=[operator.user_agent] if operator.user_agent else None,
    )
    try:
        created = create(client)
    except (TwilioRestException, TwilioServiceException) as exc:
        return _twilio_failure(exc, http)
    except requests.Timeout:
        return Result.retry(
            f"no answer from Twilio within {operator.timeout:g}s", error_code="timeout"
        )
    except requests.RequestException as exc:
        return Result.retry(
            f"could not reach Twilio: {type(exc).__name__}: {exc}"[:500],
            error_code="connection_error",
        )
    return Result.ok(
        str(created.sid),
        http_status=http.last.status_code,
        response_excerpt=http.last.text[:EXCERPT_CHARS],
    )
