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

The Twilio plumbing (the ``twilio`` integration, numbers and countries, the client and how its
answers become results) comes from the library ``linktime-twilio``, shared with
``linktime-sms-twilio``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from linktime.actions import ActionContext, ActionType, Problem, Result
from linktime.hookspecs import hookimpl
from linktime.operator_settings import OperatorSettingError, operator_timeout, plugin_settings
from linktime.templating import TemplateStr
from linktime_twilio import (
    API_BASE_ENV,
    DEFAULT_COUNTRIES,
    EXCERPT_CHARS,
    INTEGRATION,
    NOT_CONNECTED,
    NumberRefused,
    RecipientSettings,
    TwilioCredentials,
    TwilioOperatorSettings,
    call_twilio,
    check_recipient,
    credentials_verifier,
    e164,
    reachable,
    recipient,
    recipient_shown,
    report_args,
    to_the_invitee,
)
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

if TYPE_CHECKING:
    # Built, with Twilio's SDK imported, when first asked for (``__getattr__`` below).
    from linktime_twilio import TwilioHttp

__version__ = "0.1.0"

ACTION = "voice.call"
ENV_PREFIX = "LINKTIME_VOICE_"
# The call progress Twilio reports to the status callback (``completed`` alone without them).
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
USER_AGENT = f"linktime-voice/{__version__}"

# The shared Twilio names stay importable from here, as before they moved to linktime-twilio.
__all__ = [
    "ACTION",
    "API_BASE_ENV",
    "DEFAULT_COUNTRIES",
    "ENV_PREFIX",
    "EXCERPT_CHARS",
    "INTEGRATION",
    "NOT_CONNECTED",
    "USER_AGENT",
    "NumberRefused",
    "RecipientSettings",
    "TwilioCredentials",
    "TwilioHttp",
    "TwilioOperatorSettings",
    "VoiceOperatorSettings",
    "VoiceStepSettings",
    "agent_parameters",
    "build_twiml",
    "call_twilio",
    "e164",
    "operator_settings",
    "place_call",
    "recipient",
    "register_actions",
]


def __getattr__(name: str) -> Any:
    # ``TwilioHttp`` subclasses Twilio's SDK client: built on first use (linktime_twilio).
    if name == "TwilioHttp":
        import linktime_twilio

        return linktime_twilio.TwilioHttp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the action ---------------------------------------------------------------------------------


class VoiceOperatorSettings(TwilioOperatorSettings):
    """Operator-wide settings from the environment (``LINKTIME_VOICE_*``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    user_agent: ClassVar[str | None] = USER_AGENT

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
    """The operator's settings (``LINKTIME_VOICE_*`` and ``LINKTIME_TWILIO_API_BASE``); invalid
    ones raise ``OperatorSettingError`` naming the variables."""
    return plugin_settings(ENV_PREFIX, VoiceOperatorSettings)


class VoiceStepSettings(RecipientSettings):
    """What a workflow step of type ``voice.call`` is configured with."""

    mode: Literal["say", "agent"] = Field(
        default="say", description="Speak the script, or hand the call to the AI voice agent"
    )
    script: TemplateStr | None = Field(
        default=None,
        min_length=1,
        validate_default=True,
        description="What to say (a template); needed when Mode is 'say'",
    )
    voice: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="A Twilio voice name, e.g. 'Polly.Joanna'",
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="A language code, e.g. 'en-US'",
    )

    @field_validator("script")
    @classmethod
    def _script_to_say(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("mode") == "say":
            raise ValueError("Enter the script for the call to say")
        return value

    @classmethod
    def supported_countries(cls) -> frozenset[str]:
        """A listed number must be in ``LINKTIME_VOICE_SUPPORTED_COUNTRIES``."""
        return operator_settings().supported_countries


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
    from twilio.twiml.voice_response import VoiceResponse  # type: ignore[import-untyped]

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
    # Invalid operator settings and a script this booking breaks raise: the engine retries the
    # first, fails the second.
    operator = operator_settings()
    if ctx.settings.mode == "agent" and operator.agent_url is None:
        return Result.fail(
            "AI voice agent calls are not available: the operator has not set "
            f"{ENV_PREFIX}AGENT_URL",
            error_code="agent_not_configured",
        )
    # A number that replied STOP is not called either: Twilio is not asked.
    to = reachable(ctx, operator.supported_countries)
    if isinstance(to, Result):
        return to
    twiml = build_twiml(ctx, operator.agent_url)
    reports = report_args(ctx, status_callback_event=CALL_EVENTS)
    return call_twilio(
        credentials,
        operator,
        lambda client: client.calls.create(to=to, from_=caller, twiml=twiml, **reports),
        to=to,
    )


def check_call(ctx: ActionContext) -> list[Problem]:
    """What would stop the call: the number it goes to, the caller's number, the agent."""
    problems = check_recipient(ctx, operator_settings, "Calls")
    credentials: TwilioCredentials | None = ctx.credentials
    if credentials is not None and not (credentials.from_number or "").startswith("+"):
        problems.append(
            Problem(
                "Calls need a Twilio phone number to call from.",
                "Add the phone number in the Twilio settings.",
                f"/settings/integrations#{INTEGRATION}",
            )
        )
    try:
        no_agent = ctx.settings.mode == "agent" and operator_settings().agent_url is None
    except OperatorSettingError:
        no_agent = False  # check_recipient said the setup is not valid
    if no_agent:
        problems.append(Problem.operator("AI voice agent calls are not set up on this server."))
    return problems


def preview_call(ctx: ActionContext) -> dict[str, Any]:
    """Who is called and what they hear (no script: the AI agent talks)."""
    settings: VoiceStepSettings = ctx.settings
    script = ctx.render(settings.script) if settings.mode == "say" and settings.script else None
    return {"to": recipient_shown(ctx), "script": script}


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
            check=check_call,
            preview=preview_call,
            for_test=to_the_invitee,
            preview_kind="voice",
            timeout=operator_timeout(ENV_PREFIX, VoiceOperatorSettings),
            verify_credentials=credentials_verifier(operator_settings),
            description="Call the invitee, the host or a number through the account's Twilio: "
            "speak a script, or connect the operator's AI voice agent.",
        )
    )
