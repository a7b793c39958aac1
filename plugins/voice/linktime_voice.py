"""LinkTime action ``voice.call``: phone the invitee, the host or a number through Twilio, and
either speak a script (``<Say>``) or hand the call to the operator's AI voice agent over a Twilio
Media Stream (``<Connect><Stream>``), with the booking as stream parameters.

Sync on purpose: the engine runs a plain ``execute`` in the worker's own thread, so Twilio's
official sync client blocks only that thread, never the event loop async plugins share; each
worker thread keeps one pooled ``requests`` session.

Operator settings (environment, read on every call, re-parsed only when they change):
``LINKTIME_VOICE_SUPPORTED_COUNTRIES`` (ISO codes recipients may be in),
``LINKTIME_VOICE_AGENT_URL`` (the agent's wss:// stream URL), ``LINKTIME_VOICE_TIMEOUT`` (seconds
per Twilio request) and ``LINKTIME_TWILIO_API_BASE`` (send to this base URL instead of Twilio's
hosts: a stand-in API or a relay).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import phonenumbers
import requests
from linktime.actions import ActionContext, ActionType, Result
from linktime.hookspecs import hookimpl
from linktime.templating import TemplateError, TemplateStr
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from twilio.base.exceptions import (  # type: ignore[import-untyped]
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]
from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

__version__ = "0.1.0"

ACTION = "voice.call"
ENV_PREFIX = "LINKTIME_VOICE_"
USER_AGENT = f"linktime-voice/{__version__}"


# --- Twilio plumbing ----------------------------------------------------------------------------
# The same in linktime_sms_twilio and linktime_voice, on purpose: each plugin installs alone, so
# neither may import the other. Keep the two copies identical (a voice test compares them). It
# uses the module's own USER_AGENT and operator_settings().

INTEGRATION = "twilio"
NOT_CONNECTED = "Twilio is not connected (Settings → Integrations)"
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

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$", description="Account SID, AC…")
    auth_token: SecretStr = Field(min_length=1, description="The account's auth token")
    from_number: str | None = Field(
        default=None,
        max_length=40,
        description="Sender: a Twilio number (E.164), short code or alphanumeric sender ID",
    )
    messaging_service_sid: str | None = Field(
        default=None, pattern=r"^MG[0-9a-fA-F]{32}$", description="Messaging Service SID, MG…"
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
    """What both Twilio plugins read from the environment; each subclass sets its prefix."""

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


class RecipientSettings(BaseModel):
    """Who a step calls or texts."""

    model_config = ConfigDict(extra="forbid")

    to: Literal["invitee", "host", "number"] = Field(
        default="invitee", description="The booking's invitee or host, or a fixed number"
    )
    number: str | None = Field(
        default=None,
        max_length=40,
        validate_default=True,
        description="International format; required when to is 'number'",
    )

    @field_validator("number")
    @classmethod
    def _listed_number(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("to") == "number":
                raise ValueError("a number is required when to is 'number'")
            return None
        return e164(value, operator_settings().supported_countries)


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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or HTTP-date), else None."""
    if not value or not value.strip():
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
            retry_after=parse_retry_after(http.last.headers.get("Retry-After")),
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
        user_agent_extensions=[USER_AGENT],
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


# --- the action ---------------------------------------------------------------------------------


class VoiceOperatorSettings(TwilioOperatorSettings):
    """Operator-wide settings from the environment (``LINKTIME_VOICE_*``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    agent_url: str | None = Field(
        default=None, description="wss:// URL of the AI voice agent's Twilio Media Stream"
    )

    @field_validator("agent_url")
    @classmethod
    def _wss(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme != "wss" or not parts.netloc:
            raise ValueError(f"{ENV_PREFIX}AGENT_URL must be a wss:// URL, got {value!r}")
        return value


def operator_settings() -> VoiceOperatorSettings:
    """The current operator settings; re-read only when the environment changed."""
    prefixes = (ENV_PREFIX, API_BASE_ENV)
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(prefixes)))
    return _operator_settings_for(env)


@lru_cache(maxsize=16)
def _operator_settings_for(env: tuple[tuple[str, str], ...]) -> VoiceOperatorSettings:
    # ``env`` is only the cache key: the constructor reads that same environment itself.
    return VoiceOperatorSettings()


class VoiceStepSettings(RecipientSettings):
    """What a workflow step of type ``voice.call`` is configured with."""

    mode: Literal["say", "agent"] = Field(
        default="say", description="Speak the script, or hand the call to the AI voice agent"
    )
    script: TemplateStr | None = Field(
        default=None,
        min_length=1,
        validate_default=True,
        description="What to say (a template); required when mode is 'say'",
    )
    voice: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="e.g. 'Polly.Joanna'"
    )
    language: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="e.g. 'en-US'"
    )

    @field_validator("script")
    @classmethod
    def _script_to_say(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "say":
            raise ValueError("a script is required when mode is 'say'")
        return value


def agent_parameters(ctx: ActionContext) -> dict[str, str]:
    """The booking as the agent receives it: ``<Parameter>``s of the stream's start message."""
    booking = ctx.event.booking
    invitee = booking.invitee or next(iter(booking.invitees), None)
    timezone = invitee.timezone if invitee else "UTC"
    event_type = booking.event_type.title if booking.event_type else None
    return {
        "booking_uid": booking.uid,
        "invitee_name": invitee.name if invitee else "",
        "start_time": booking.start.astimezone(ZoneInfo(timezone)).isoformat(),
        "timezone": timezone,
        "event_type": event_type or booking.title or "",
        "workflow_id": ctx.workflow.id,
        "trigger": ctx.trigger,
    }


def build_twiml(ctx: ActionContext, agent_url: str | None) -> str:
    """The call's TwiML: the rendered script, or the stream to the agent (raises TemplateError)."""
    settings: VoiceStepSettings = ctx.settings
    response = VoiceResponse()
    if settings.mode == "say":
        script = ctx.render(settings.script or "")
        response.say(script, voice=settings.voice, language=settings.language)
    else:
        stream = response.connect().stream(url=agent_url)
        for name, value in agent_parameters(ctx).items():
            stream.parameter(name=name, value=value)
    return str(response.to_xml())


def place_call(ctx: ActionContext) -> Result:
    """Place one attempt of a ``voice.call`` step."""
    credentials: TwilioCredentials | None = ctx.credentials
    if credentials is None:
        return Result.fail(NOT_CONNECTED, error_code="not_connected")
    caller = credentials.from_number
    if caller is None or not caller.startswith("+"):
        return Result.fail(
            "calls need a Twilio phone number: set from_number (E.164) in the Twilio integration "
            "(a messaging service, short code or sender ID cannot place calls)",
            error_code="no_from_number",
        )
    try:
        operator = operator_settings()
    except ValueError as exc:
        # Every call is affected; retrying lets calls resume once the operator fixes it.
        return Result.retry(
            f"invalid {ENV_PREFIX}* operator settings: {exc}", error_code="operator_settings"
        )
    if ctx.settings.mode == "agent" and operator.agent_url is None:
        return Result.fail(
            "AI voice agent calls are not available: the operator has not set "
            f"{ENV_PREFIX}AGENT_URL",
            error_code="agent_not_configured",
        )
    try:
        to = recipient(ctx, operator.supported_countries)
        twiml = build_twiml(ctx, operator.agent_url)
    except NumberRefused as exc:
        return Result.fail(str(exc), error_code=exc.code)
    except TemplateError as exc:
        return Result.fail(f"the script cannot be rendered: {exc}", error_code="template_error")
    return call_twilio(
        credentials,
        operator,
        lambda client: client.calls.create(to=to, from_=caller, twiml=twiml),
    )


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="AI Voice Call",
            settings=VoiceStepSettings,
            execute=place_call,
            capability="voice",
            credentials=TwilioCredentials,
            integration=INTEGRATION,
            description="Call the invitee, the host or a number through the account's Twilio: "
            "speak a script, or connect the operator's AI voice agent.",
        )
    )
