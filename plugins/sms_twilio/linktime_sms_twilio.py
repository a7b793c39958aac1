"""LinkTime action ``sms.send``: a text message to the invitee, the host or a number, via Twilio.

Sync on purpose: the engine runs a plain ``execute`` in the worker's own thread, so Twilio's
official sync client blocks only that thread, never the event loop async plugins share; each
worker thread keeps one pooled ``requests`` session.

Operator settings (environment, read on every send, re-parsed only when they change):
``LINKTIME_SMS_SUPPORTED_COUNTRIES`` (ISO codes recipients may be in), ``LINKTIME_SMS_TIMEOUT``
(seconds per Twilio request) and ``LINKTIME_TWILIO_API_BASE`` (send to this base URL instead of
Twilio's hosts: a stand-in API or a relay).

The Twilio plumbing (the ``twilio`` integration, numbers and countries, the client and how its
answers become results) comes from the library ``linktime-twilio``, shared with
``linktime-voice``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from linktime.actions import (
    ActionContext,
    ActionType,
    Problem,
    Result,
    Template,
    TemplateStep,
)
from linktime.hookspecs import hookimpl
from linktime.operator_settings import operator_timeout, plugin_settings
from linktime.segments import sms_count
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
from pydantic import Field
from pydantic_settings import SettingsConfigDict

if TYPE_CHECKING:
    # Built, with Twilio's SDK imported, when first asked for (``__getattr__`` below).
    from linktime_twilio import TwilioHttp

__version__ = "0.1.0"

ACTION = "sms.send"
CREDITS = "sms"
CREDITS_EXHAUSTED = "sms_credits_exhausted"
ENV_PREFIX = "LINKTIME_SMS_"
USER_AGENT = f"linktime-sms-twilio/{__version__}"

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
    "SmsOperatorSettings",
    "SmsStepSettings",
    "TwilioCredentials",
    "TwilioHttp",
    "TwilioOperatorSettings",
    "call_twilio",
    "e164",
    "operator_settings",
    "recipient",
    "register_actions",
    "send_sms",
]


def __getattr__(name: str) -> Any:
    # ``TwilioHttp`` subclasses Twilio's SDK client: built on first use (linktime_twilio).
    if name == "TwilioHttp":
        import linktime_twilio

        return linktime_twilio.TwilioHttp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the action ---------------------------------------------------------------------------------


class SmsOperatorSettings(TwilioOperatorSettings):
    """Operator-wide settings from the environment (``LINKTIME_SMS_*``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    user_agent: ClassVar[str | None] = USER_AGENT


def operator_settings() -> SmsOperatorSettings:
    """The operator's settings (``LINKTIME_SMS_*`` and ``LINKTIME_TWILIO_API_BASE``); invalid
    ones raise ``OperatorSettingError`` naming the variables."""
    return plugin_settings(ENV_PREFIX, SmsOperatorSettings)


class SmsStepSettings(RecipientSettings):
    """What a workflow step of type ``sms.send`` is configured with."""

    text: TemplateStr = Field(
        min_length=1, description="The message, a template, e.g. 'Hi {{ invitee.first_name }}'"
    )

    @classmethod
    def supported_countries(cls) -> frozenset[str]:
        """A listed number must be in ``LINKTIME_SMS_SUPPORTED_COUNTRIES``."""
        return operator_settings().supported_countries


def send_sms(ctx: ActionContext) -> Result:
    """Send one attempt of an ``sms.send`` step. Invalid operator settings and a text this
    booking breaks raise: the engine retries the first, fails the second."""
    credentials: TwilioCredentials | None = ctx.credentials
    if credentials is None:
        return Result.fail(NOT_CONNECTED, error_code="not_connected")
    operator = operator_settings()
    # A number that replied STOP is not texted (nor charged a credit): Twilio is not asked.
    to = reachable(ctx, operator.supported_countries)
    if isinstance(to, Result):
        return to
    body = ctx.render(ctx.settings.text)
    segments = sms_count(body).segments
    # Taken once for the step before Twilio is asked (a retry takes none; a step that ends
    # unsent gives them back): two workers racing for the last credits cannot both send.
    if not ctx.services.take_credits(CREDITS, segments):
        return Result.blocked(
            f"no SMS credits are left this month on the account's plan: this text needs "
            f"{segments} (one a segment). Credits renew on the 1st; a bigger plan has more",
            error_code=CREDITS_EXHAUSTED,
        )
    return call_twilio(
        credentials,
        operator,
        lambda client: client.messages.create(
            to=to,
            body=body,
            from_=credentials.from_number,
            messaging_service_sid=credentials.messaging_service_sid,
            **report_args(ctx),
        ),
        to=to,
    )


def check_sms(ctx: ActionContext) -> list[Problem]:
    return check_recipient(ctx, operator_settings, "Text messages")


def preview_sms(ctx: ActionContext) -> dict[str, Any]:
    """The text as the recipient's phone would show it."""
    return {"to": recipient_shown(ctx), "text": ctx.render(ctx.settings.text)}


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="Send SMS",
            settings=SmsStepSettings,
            execute=send_sms,
            capability="sms",
            credentials=TwilioCredentials,
            integration=INTEGRATION,
            check=check_sms,
            preview=preview_sms,
            for_test=to_the_invitee,
            preview_kind="sms",
            timeout=operator_timeout(ENV_PREFIX, SmsOperatorSettings),
            verify_credentials=credentials_verifier(operator_settings),
            description="Text the invitee, the host or a number through the account's Twilio.",
        )
    )


@hookimpl
def register_templates(register: Callable[[Template], None]) -> None:
    register(
        Template(
            name="meeting-reminder",
            title="Meeting Reminder",
            trigger="meeting.before",
            offset_minutes=60,
            description="Sends an SMS reminder an hour before the meeting starts",
            steps=(
                TemplateStep(
                    ACTION,
                    {
                        "to": "invitee",
                        "text": "Reminder: {{ event_name }} with {{ organizer_name }} at "
                        "{{ event_time }} ({{ timezone }}). {{ meeting_url }}",
                    },
                ),
            ),
        )
    )
