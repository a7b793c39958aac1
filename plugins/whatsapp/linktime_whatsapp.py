"""LinkTime action ``whatsapp.send``: a WhatsApp message to the invitee, the host or a number,
through the account's Twilio (``whatsapp:+E164`` addresses on Twilio's Messages API).

WhatsApp (Meta) lets a business send freeform text only within 24 hours of the person's last
message to it; anything else, such as a booking reminder, is business-initiated and must be an
approved template. So a step names either a freeform ``text`` or an approved content template
(``content_sid``, ``HX…``, with ``content_variables`` rendered from the booking), or both:
with a template the template is sent, always; without one the text is sent, and when Twilio
says the window is closed (63016) the step fails asking for a template. Nothing guesses or
falls back: a reminder that silently went out as something else would be worse than a clear
failure.

Sync on purpose, like ``sms.send``: the engine runs a plain ``execute`` in the worker's own
thread. Everything Twilio (the ``twilio`` integration, numbers and countries, the client, how
its answers become results, the suppression list, status callbacks, checking the integration at
connect) comes from the library ``linktime-twilio``, shared with ``sms.send`` and ``voice.call``.

Operator settings (environment, read on every send): ``LINKTIME_WHATSAPP_SUPPORTED_COUNTRIES``,
``LINKTIME_WHATSAPP_TIMEOUT`` and the shared ``LINKTIME_TWILIO_API_BASE``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from linktime.actions import ActionContext, ActionType, Problem, Result
from linktime.hookspecs import hookimpl
from linktime.operator_settings import operator_timeout, plugin_settings
from linktime.templating import TemplateStr
from linktime_twilio import (
    INTEGRATION,
    NOT_CONNECTED,
    RecipientSettings,
    TwilioCredentials,
    TwilioOperatorSettings,
    call_twilio,
    check_recipient,
    credentials_verifier,
    reachable,
    recipient_shown,
    report_args,
    to_the_invitee,
)
from pydantic import Field, StringConstraints, model_validator
from pydantic_settings import SettingsConfigDict

__version__ = "0.1.0"

ACTION = "whatsapp.send"
CAPABILITY = "whatsapp"
ENV_PREFIX = "LINKTIME_WHATSAPP_"
USER_AGENT = f"linktime-whatsapp/{__version__}"
PREFIX = "whatsapp:"
OUTSIDE_WINDOW = 63016
OUTSIDE_WINDOW_CODE = "whatsapp_outside_window"
NO_WHATSAPP_SENDER = "no_whatsapp_sender"
# Twilio's limits for a content template's variables: keys of up to 16 letters or digits, up to
# 100 of them (https://www.twilio.com/docs/content/using-variables-with-content-api).
MAX_VARIABLES = 100

VariableKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,16}$")]


class WhatsAppOperatorSettings(TwilioOperatorSettings):
    """Operator-wide settings from the environment (``LINKTIME_WHATSAPP_*``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    user_agent: ClassVar[str | None] = USER_AGENT


def operator_settings() -> WhatsAppOperatorSettings:
    """The operator's settings (``LINKTIME_WHATSAPP_*`` and ``LINKTIME_TWILIO_API_BASE``);
    invalid ones raise ``OperatorSettingError`` naming the variables."""
    return plugin_settings(ENV_PREFIX, WhatsAppOperatorSettings)


class WhatsAppStepSettings(RecipientSettings):
    """What a workflow step of type ``whatsapp.send`` is configured with."""

    text: TemplateStr | None = Field(
        default=None,
        min_length=1,
        description="A freeform message, a template, e.g. 'Hi {{ invitee.first_name }}'. Sent "
        "only without a content template, and WhatsApp delivers it only within 24 hours of "
        "the person's last message to you; with a content template it is what the preview "
        "shows",
    )
    content_sid: str | None = Field(
        default=None,
        pattern=r"^HX[0-9a-fA-F]{32}$",
        description="An approved WhatsApp content template (Twilio Content Template Builder): "
        "HX followed by 32 digits or letters a to f. Needed outside the 24-hour window, e.g. "
        "for reminders",
    )
    content_variables: dict[VariableKey, TemplateStr] = Field(
        default_factory=dict,
        max_length=MAX_VARIABLES,
        description="The template's variables, each a message template rendered for the "
        "booking, e.g. 1: {{ invitee.first_name }}",
    )

    @model_validator(mode="after")
    def _has_a_message(self) -> WhatsAppStepSettings:
        if self.content_sid is None and self.text is None:
            raise ValueError("set text (a freeform message), content_sid (a template), or both")
        if self.content_variables and self.content_sid is None:
            raise ValueError("content_variables need the content_sid of their template")
        return self

    @classmethod
    def supported_countries(cls) -> frozenset[str]:
        """A listed number must be in ``LINKTIME_WHATSAPP_SUPPORTED_COUNTRIES``."""
        return operator_settings().supported_countries


def sender(credentials: TwilioCredentials) -> dict[str, str]:
    """The sender fields of a WhatsApp message: the account's number as ``whatsapp:+…``
    and/or its messaging service (whose WhatsApp sender Twilio then picks). A short code or
    an alphanumeric sender ID cannot send WhatsApp messages, so it is left out."""
    fields: dict[str, str] = {}
    number = credentials.from_number
    if number is not None and number.startswith("+"):
        fields["from_"] = PREFIX + number
    if credentials.messaging_service_sid is not None:
        fields["messaging_service_sid"] = credentials.messaging_service_sid
    return fields


NO_SENDER = (
    "WhatsApp needs a sender: set the Twilio integration's from_number to your WhatsApp-enabled "
    "Twilio number (e.g. +14155550123) or a messaging service with a WhatsApp sender"
)


def content(ctx: ActionContext) -> dict[str, str]:
    """What the message says: the template and its variables rendered for this booking, or
    the freeform text rendered."""
    settings: WhatsAppStepSettings = ctx.settings
    if settings.content_sid is None:
        return {"body": ctx.render(settings.text or "")}  # the model requires one of them
    fields = {"content_sid": settings.content_sid}
    if settings.content_variables:
        values = {key: ctx.render(value) for key, value in settings.content_variables.items()}
        fields["content_variables"] = json.dumps(values, ensure_ascii=False)
    return fields


def outside_window(result: Result, template: str | None) -> Result:
    """Twilio's 63016 as what the user must do about it: name a template, or (when it came
    with one) use one WhatsApp approved for starting conversations."""
    if result.error_code != f"twilio_{OUTSIDE_WINDOW}":
        return result
    if template is None:
        advice = (
            "WhatsApp refused a freeform message: the recipient has not written to you in the "
            "last 24 hours, so only an approved template may start the conversation. Name an "
            "approved content template (content_sid, HX…) in this step."
        )
    else:
        advice = (
            f"WhatsApp refused the template {template} outside the 24-hour window: it is not "
            "approved for starting a conversation. Check its WhatsApp approval in Twilio's "
            "Content Template Builder, or name another template."
        )
    error = f"{advice} {result.error or ''}".strip()
    return dataclasses.replace(result, error=error, error_code=OUTSIDE_WINDOW_CODE)


def send_whatsapp(ctx: ActionContext) -> Result:
    """Send one attempt of a ``whatsapp.send`` step. Invalid operator settings and a template
    this booking breaks raise: the engine retries the first, fails the second."""
    credentials: TwilioCredentials | None = ctx.credentials
    if credentials is None:
        return Result.fail(NOT_CONNECTED, error_code="not_connected")
    operator = operator_settings()
    # One suppression list across channels: a number that replied STOP gets no WhatsApp either.
    to = reachable(ctx, operator.supported_countries)
    if isinstance(to, Result):
        return to
    sent_from = sender(credentials)
    if not sent_from:
        return Result.fail(NO_SENDER, error_code=NO_WHATSAPP_SENDER)
    message = content(ctx)
    reports = report_args(ctx)
    result = call_twilio(
        credentials,
        operator,
        lambda client: client.messages.create(to=PREFIX + to, **sent_from, **message, **reports),
        to=to,
    )
    return outside_window(result, ctx.settings.content_sid)


def check_whatsapp(ctx: ActionContext) -> list[Problem]:
    problems = check_recipient(ctx, operator_settings, "WhatsApp messages")
    credentials: TwilioCredentials | None = ctx.credentials
    if credentials is not None and not sender(credentials):
        fix = (
            "In Settings → Integrations, set Twilio's from number to your WhatsApp-enabled "
            "number, or a messaging service with a WhatsApp sender."
        )
        problems.append(Problem("Twilio has no WhatsApp sender.", fix, "/settings/integrations"))
    return problems


def preview_whatsapp(ctx: ActionContext) -> dict[str, Any]:
    """The message as a chat bubble: the text, or the template and its variables."""
    settings: WhatsAppStepSettings = ctx.settings
    shown = recipient_shown(ctx)
    to = PREFIX + shown if shown.startswith("+") else shown
    if settings.content_sid is None or settings.text is not None:
        text = ctx.render(settings.text or "")
    else:
        variables = settings.content_variables.items()
        values = ", ".join(f"{{{{{key}}}}} = {ctx.render(value)}" for key, value in variables)
        text = f"Approved template {settings.content_sid}" + (f" with {values}" if values else "")
    return {"to": to, "text": text}


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="Send WhatsApp message",
            settings=WhatsAppStepSettings,
            execute=send_whatsapp,
            capability=CAPABILITY,
            credentials=TwilioCredentials,
            integration=INTEGRATION,
            check=check_whatsapp,
            preview=preview_whatsapp,
            for_test=to_the_invitee,
            preview_kind="sms",
            timeout=operator_timeout(ENV_PREFIX, WhatsAppOperatorSettings),
            verify_credentials=credentials_verifier(operator_settings),
            description="Message the invitee, the host or a number on WhatsApp through the "
            "account's Twilio: an approved template, or freeform text within 24 hours of "
            "their last message.",
        )
    )
