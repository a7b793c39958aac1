"""LinkTime action ``slack.post``: post a booking notification to Slack.

Either to a channel with the account's bot token (``chat.postMessage``, the ``slack``
integration, through slack-sdk's async client with its retry handlers off), or to an
incoming-webhook URL given in the step (through ``linktime.http``: its address guard, no
redirects, the event loop's pooled client). The engine schedules retries (honouring Slack's
``Retry-After``) as due times in the database instead of sleeping in a worker.

Operator settings (environment, prefix ``LINKTIME_SLACK_``) are read on every post: ``API_BASE``,
``ALLOWED_WEBHOOK_BASES`` (comma-separated URL prefixes incoming webhooks may use) and
``TIMEOUT`` (seconds for one whole post).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import html
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit

import httpx
from linktime import http
from linktime.actions import (
    ActionContext,
    ActionType,
    Problem,
    Result,
    Template,
    TemplateStep,
)
from linktime.hookspecs import hookimpl
from linktime.operator_settings import OperatorSettingError, operator_timeout, plugin_settings
from linktime.statuses import DeliveryStatus
from linktime.templating import TemplateStr
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

if TYPE_CHECKING:
    # slack-sdk and aiohttp under it are imported where a channel is first posted to, so a
    # server that never posts to Slack does not load them (issue 17: the embedded default's RSS).
    import aiohttp

__version__ = "0.1.0"

ACTION = "slack.post"
INTEGRATION = "slack"
ENV_PREFIX = "LINKTIME_SLACK_"
# slack-sdk's AsyncWebClient.BASE_URL (the SDK is imported only when Slack is first called).
SLACK_API_BASE = "https://slack.com/api/"
SLACK_WEBHOOK_BASE = "https://hooks.slack.com/"
NOT_CONNECTED = "Slack is not connected: connect it in Settings."
EXCERPT_CHARS = 1024
TEXT_LIMIT = 3000  # Slack's limit for a section block's text
FIELD_LIMIT = 2000  # ... and for one of its fields
REDACTED = "[redacted]"

# Slack error codes worth another try; any other error means the message cannot go as set up.
RETRYABLE_ERRORS = frozenset(
    {
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "message_limit_exceeded",
        "team_added_to_org",
    }
)
RATE_LIMITED_ERRORS = frozenset({"ratelimited", "rate_limited"})
# What the user can do about the common permanent errors.
_HINTS = {
    "invalid_auth": "the bot token is not valid; reconnect Slack in Settings",
    "token_revoked": "the bot token was revoked; reconnect Slack in Settings",
    "account_inactive": "the Slack app was removed; reconnect Slack in Settings",
    "channel_not_found": "no such channel, or the bot cannot see it (private channels need it "
    "invited)",
    "not_in_channel": "the bot is not in the channel; invite it with /invite @<app>",
    "is_archived": "the channel is archived",
    "no_permission": "the bot lacks the permission to post there",
    "no_service": "the incoming webhook was removed or disabled",
    "action_prohibited": "a Slack admin restricted posting through this webhook",
    "channel_is_archived": "the webhook's channel is archived",
}
_SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CHANNEL_RE = re.compile(r"^#?[^\s#@<>&,|]{1,80}$")
_MRKDWN_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})

# The booking details under the message: (label, template). Blank values are left out.
DETAIL_FIELDS: tuple[tuple[str, str], ...] = (
    ("Event type", "{{ event_type.title or event_name }}"),
    ("When", "{{ booking.start | localtime(host.timezone) }}"),
    ("Invitee", "{{ attendee_name }}{% if attendee_email %} ({{ attendee_email }}){% endif %}"),
    (
        "Where",
        "{{ location or '' }}{% if meeting_url and meeting_url != location %}"
        "{% if location %}\n{% endif %}{{ meeting_url }}{% endif %}",
    ),
)

# slack-sdk logs whole request URLs (an incoming-webhook URL is a secret) and message bodies at
# DEBUG whenever its logger's own level is NOTSET or DEBUG; a logger pinned at INFO keeps them out.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.INFO)


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    return value


class SlackOperatorSettings(BaseModel):
    """Operator-wide settings from the environment (``LINKTIME_SLACK_*``)."""

    api_base: str = Field(
        default=SLACK_API_BASE, description="Slack Web API base URL (tests: loopback)"
    )
    allowed_webhook_bases: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(SLACK_WEBHOOK_BASE,),
        description="URL prefixes an incoming-webhook URL must start with, comma-separated",
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds for one whole post")

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        return _http_url(value.strip(), "API_BASE")

    @field_validator("allowed_webhook_bases", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(_http_url(base, "each ALLOWED_WEBHOOK_BASES entry") for base in value)


def operator_settings() -> SlackOperatorSettings:
    """The current operator settings (re-read when their variables change)."""
    return plugin_settings(ENV_PREFIX, SlackOperatorSettings)


def is_under(url: str, base: str) -> bool:
    """Whether ``url`` lies under ``base``: same scheme, host and port, path below the base's.
    Compared by parts, so ``https://hooks.slack.com.evil.example/`` is not under Slack's."""
    try:
        u, b = urlsplit(url), urlsplit(base)
        same_origin = (u.scheme, u.hostname, u.port) == (b.scheme, b.hostname, b.port)
    except ValueError:  # a port that is not a number
        return False
    if not same_origin or u.username is not None or u.password is not None:
        return False
    # ``..`` would let the path climb out of the base once the client normalises it.
    if any(segment in (".", "..") for segment in unquote(u.path).split("/")):
        return False
    prefix = b.path if b.path.endswith("/") else b.path + "/"
    return (u.path + "/").startswith(prefix)


class SlackCredentials(BaseModel):
    """The account's ``slack`` integration: a bot token of a Slack app installed in its
    workspace, with the ``chat:write`` scope."""

    model_config = ConfigDict(hide_input_in_errors=True)

    bot_token: SecretStr = Field(description="Bot User OAuth Token, 'xoxb-…'")

    @field_validator("bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().strip()
        if not raw.startswith("xoxb-") or len(raw) <= len("xoxb-"):
            raise ValueError("A bot token is needed here, starting with 'xoxb-'")
        return SecretStr(raw)


class SlackStepSettings(BaseModel):
    """What a workflow step of type ``slack.post`` is configured with: ``channel`` (posted with
    the account's bot token) or ``webhook_url`` (an incoming webhook), and the message."""

    # A rejected webhook URL is still someone's secret: keep inputs out of errors and logs.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    channel: str | None = Field(
        default=None, description="Channel to post to with the bot token: '#sales' or an id"
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="Incoming-webhook URL, https://hooks.slack.com/services/…"
    )
    text: TemplateStr = Field(
        min_length=1, max_length=4000, description="The message (a template, Slack mrkdwn)"
    )

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _CHANNEL_RE.match(value):
            raise ValueError(
                "channel must be a channel name like '#sales' or a channel id like 'C0123ABCD'"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        try:
            bases = operator_settings().allowed_webhook_bases
        except ValueError as exc:
            raise ValueError(f"invalid {ENV_PREFIX}* operator settings: {exc}") from None
        if not any(is_under(raw, base) for base in bases):
            # Name the rule, never the URL.
            allowed = " or ".join(bases) or "no base: the operator turned incoming webhooks off"
            raise ValueError(
                f"webhook_url must be an incoming-webhook URL under {allowed} "
                f"(the operator can allow more with {ENV_PREFIX}ALLOWED_WEBHOOK_BASES)"
            )
        return SecretStr(raw)

    @model_validator(mode="after")
    def _one_destination(self) -> SlackStepSettings:
        if (self.channel is None) == (self.webhook_url is None):
            raise ValueError("give either channel (with the Slack integration) or webhook_url")
        return self


# --- the message ---------------------------------------------------------------------------------


def mrkdwn(raw: str, limit: int) -> str:
    """``raw`` escaped for Slack mrkdwn (so booking text cannot make mentions or links), cut to
    ``limit`` characters without splitting an escape."""
    escaped = raw.translate(_MRKDWN_ESCAPES)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def build_message(ctx: ActionContext) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the Block Kit blocks of the message for this booking."""
    settings: SlackStepSettings = ctx.settings
    # A template that renders blank (e.g. only an unset field) still says what it is about.
    raw = ctx.render(settings.text).strip() or ctx.render("{{ event_name }}")
    text = mrkdwn(raw, TEXT_LIMIT)
    fields = []
    for label, template in DETAIL_FIELDS:
        value = ctx.render(template).strip()
        if value:
            prefix = f"*{label}*\n"
            fields.append(
                {"type": "mrkdwn", "text": prefix + mrkdwn(value, FIELD_LIMIT - len(prefix))}
            )
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    return text, blocks


# --- HTTP ----------------------------------------------------------------------------------------

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
_sessions_lock = threading.Lock()


def _session() -> aiohttp.ClientSession:
    """The pooled session of the running loop (connections cannot cross event loops), shared by
    every account's client so posts reuse TLS connections to Slack."""
    import aiohttp

    loop = asyncio.get_running_loop()
    with _sessions_lock:
        session = _sessions.get(loop)
        if session is None or session.closed:
            for stale in [other for other in _sessions if other.is_closed()]:
                del _sessions[stale]
            session = aiohttp.ClientSession()
            _sessions[loop] = session
        return session


@atexit.register
def _close_sessions() -> None:
    """Close the pooled sessions on their loops while those still run (the engine's loop
    thread is a daemon), so aiohttp does not report them as leaked at exit."""
    with _sessions_lock:
        pooled = list(_sessions.items())
        _sessions.clear()
    for loop, session in pooled:
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=2)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        # A trivial path like "/" is no secret, and masking it would mangle the message.
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return text


def _answer_result(
    status: int, error: str | None, retry_after: float | None, excerpt: str
) -> Result:
    """The Result for a post Slack did not accept: ``error`` is Slack's error code, if any."""
    if status == 429 or error in RATE_LIMITED_ERRORS:
        wait = f"; retrying after {retry_after:g}s" if retry_after is not None else ""
        return Result.retry(
            f"Slack rate-limited the post (HTTP {status}){wait}",
            error_code="slack_ratelimited",
            http_status=status,
            retry_after=retry_after,
            response_excerpt=excerpt,
        )
    if error is None and status < 300:
        # Not Slack's answer: a proxy or a wrong API_BASE. Retrying lets a fix take effect.
        return Result.retry(
            f"unexpected answer (HTTP {status}), not Slack's",
            error_code="bad_response",
            http_status=status,
            response_excerpt=excerpt,
        )
    code = f"slack_{error}" if error else f"http_{status}"
    hint = _HINTS.get(error or "")
    said = f"Slack answered {error or 'an error'} (HTTP {status})" + (f": {hint}" if hint else "")
    if status >= 500 or status == 408 or error in RETRYABLE_ERRORS:
        return Result.retry(said, error_code=code, http_status=status, response_excerpt=excerpt)
    return Result.fail(said, error_code=code, http_status=status, response_excerpt=excerpt)


async def _post_to_channel(
    token: str, channel: str, api_base: str, text: str, blocks: list[dict[str, Any]]
) -> Result:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient
    from slack_sdk.web.async_slack_response import AsyncSlackResponse

    client = AsyncWebClient(
        token=token, base_url=api_base, session=_session(), logger=_sdk_log, retry_handlers=[]
    )
    try:
        response = await client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
        )
    except SlackApiError as exc:
        answer = exc.response
        if not isinstance(answer, AsyncSlackResponse):  # a body slack-sdk could not parse
            return Result.retry(f"unexpected answer from Slack: {exc}", error_code="bad_response")
        data = answer.data if isinstance(answer.data, dict) else {}
        excerpt = (json.dumps(data) if data else str(answer.data))[:EXCERPT_CHARS]
        return _answer_result(
            answer.status_code,
            data.get("error"),
            http.retry_after(answer.headers.get("Retry-After")),
            excerpt,
        )
    # chat.postMessage answers with the channel id, even when given a name. Posted is delivered:
    # the message is in the channel.
    return Result.ok(
        external_id=f"{response['channel']}/{response['ts']}",
        http_status=200,
        delivery_status=DeliveryStatus.DELIVERED,
    )


async def _post_to_webhook(
    url: str, text: str, blocks: list[dict[str, Any]], timeout: float
) -> Result:
    message = {"text": text, "blocks": blocks, "unfurl_links": False, "unfurl_media": False}
    try:
        response = await http.arequest("POST", url, json=message, timeout=timeout)
    except http.Refused as exc:
        return Result.fail(str(exc), error_code="ssrf_refused")
    body = response.text.strip()
    if response.status_code == 200:
        return Result.ok(
            http_status=200,
            response_excerpt=body[:EXCERPT_CHARS],
            delivery_status=DeliveryStatus.DELIVERED,
        )
    # Incoming webhooks answer errors as a bare code: 404 no_service, 410 channel_is_archived...
    return _answer_result(
        response.status_code,
        body if _SLUG_RE.match(body) else None,
        http.retry_after(response.headers.get("Retry-After")),
        body[:EXCERPT_CHARS],
    )


async def post_message(ctx: ActionContext) -> Result:
    """Post one attempt of a ``slack.post`` step."""
    settings: SlackStepSettings = ctx.settings
    credentials: SlackCredentials | None = ctx.credentials
    if settings.channel is not None and credentials is None:
        return Result.fail(NOT_CONNECTED, error_code="not_connected")
    # Invalid operator settings and a template this booking breaks raise: the engine turns
    # them into a retry ``operator_settings`` and a failure ``template_error``.
    operator = operator_settings()
    text, blocks = build_message(ctx)
    posting: Awaitable[Result]
    unreachable: tuple[type[Exception], ...] = (httpx.TransportError,)
    if settings.channel is not None and credentials is not None:
        import aiohttp

        unreachable += (aiohttp.ClientError,)
        token = credentials.bot_token.get_secret_value()
        secrets: tuple[str, ...] = (token,)
        destination = urlsplit(operator.api_base).netloc
        posting = _post_to_channel(token, settings.channel, operator.api_base, text, blocks)
    else:
        assert settings.webhook_url is not None  # the model requires one of the two
        url = settings.webhook_url.get_secret_value()
        # The path is what makes an incoming-webhook URL secret.
        secrets = (url, urlsplit(url).path)
        destination = urlsplit(url).netloc
        posting = _post_to_webhook(url, text, blocks, operator.timeout)
    try:
        async with asyncio.timeout(operator.timeout):
            result = await posting
    except (TimeoutError, httpx.TimeoutException):
        return Result.retry(
            f"no answer from {destination} within {operator.timeout:g}s", error_code="timeout"
        )
    except unreachable as exc:
        said = _redact(f"{type(exc).__name__}: {exc}", secrets)
        return Result.retry(
            f"connection to {destination} failed: {said}", error_code="connection_error"
        )
    # Slack's answers never echo a token or URL, but a misbehaving peer could: be sure.
    return replace(
        result,
        error=result.error and _redact(result.error, secrets),
        response_excerpt=result.response_excerpt and _redact(result.response_excerpt, secrets),
    )


# --- Test before you enable ---------------------------------------------------------------------


def check_slack(ctx: ActionContext) -> list[Problem]:
    """What would stop every post, whatever the step: the server's Slack setup."""
    try:
        operator_settings()
    except OperatorSettingError:
        return [Problem.operator("Posting to Slack is not set up correctly on this server.")]
    return []


def preview_slack(ctx: ActionContext) -> dict[str, Any]:
    """The message as the channel would show it (mrkdwn's escapes undone): its text, then the
    booking details as label and value."""
    settings: SlackStepSettings = ctx.settings
    text, blocks = build_message(ctx)
    fields = []
    for block in blocks[1:]:
        for field in block.get("fields", ()):
            label, _, value = field["text"].partition("\n")  # "*When*\n…", as built above
            fields.append({"label": html.unescape(label.strip("*")), "value": html.unescape(value)})
    return {
        "to": settings.channel or "Incoming webhook",
        "text": html.unescape(text),
        "fields": fields,
    }


def _needs_connection(settings: SlackStepSettings) -> bool:
    return settings.channel is not None  # an incoming webhook posts without it


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="Send Slack Message",
            settings=SlackStepSettings,
            execute=post_message,
            capability="slack",
            credentials=SlackCredentials,
            integration=INTEGRATION,
            needs_integration=_needs_connection,
            check=check_slack,
            preview=preview_slack,
            preview_kind="slack",
            timeout=operator_timeout(ENV_PREFIX, SlackOperatorSettings),
            description="Post a message about the booking to a Slack channel or incoming webhook.",
        )
    )


@hookimpl
def register_templates(register: Callable[[Template], None]) -> None:
    register(
        Template(
            name="team-notification",
            title="Team Notification",
            trigger="booking.created",
            description="Posts a Slack message when a booking is created",
            steps=(
                TemplateStep(
                    ACTION,
                    {
                        "channel": "#bookings",
                        "text": "New booking: {{ event_name }} with {{ attendee_name }} "
                        "on {{ event_date }} at {{ event_time }} ({{ timezone }})",
                    },
                ),
            ),
        )
    )
