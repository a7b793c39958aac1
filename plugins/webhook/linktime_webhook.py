"""LinkTime action ``webhook.call``: POST the booking event to a URL, signed per Standard Webhooks.

Sent through ``linktime.http`` (its address guard, allow-list ``LINKTIME_HTTP_ALLOWED_NETWORKS``,
no redirects, pooled per worker thread); this plugin adds the body, the signature, the step's
headers and keeps their secrets out of results. Operator setting (environment):
``LINKTIME_WEBHOOK_TIMEOUT``, seconds for one whole delivery.

``call_webhook`` is a plain function: the engine runs it in the Dramatiq worker thread, which
sends on its own pooled client (no event loop, no hand-off between threads).

Like Svix: the step's URL is its endpoint (``ActionType.endpoint``: the core disables it on a
``410 Gone`` or after 5 days of failures), a secret is rotated with the old one still signing
for 24 hours, and a receiver may stop the retries of one message by answering
``webhook-delivery: abort-message``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from linktime import http
from linktime.actions import ActionContext, ActionType, Outcome, Problem, Result
from linktime.crypto import MASK
from linktime.hookspecs import hookimpl
from linktime.operator_settings import operator_timeout, plugin_settings
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

__version__ = "0.1.0"

ACTION = "webhook.call"
PAYLOAD_VERSION = 1
ENV_PREFIX = "LINKTIME_WEBHOOK_"
USER_AGENT = f"LinkTime-Webhooks/{__version__}"
EXCERPT_BYTES = 1024
SECRET_PREFIX = "whsec_"
# Svix's delivery control: a receiver answering with this header (and value) stops the retries
# of the message just sent; it changes nothing for an answer that would not be retried.
DELIVERY_HEADER = "webhook-delivery"
ABORT_MESSAGE = "abort-message"
ABORTED_CODE = "aborted_by_receiver"

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_RE = re.compile(r"[\t\x20-\x7e]*\Z")
# Headers the plugin owns: the signature, the body framing and the Host.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection"}
)


def generate_secret() -> SecretStr:
    """A fresh signing secret in the Standard Webhooks format (24 random bytes, like Svix)."""
    return SecretStr(SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii"))


def _header_value(value: SecretStr) -> SecretStr:
    """A value httpx can send: one line of visible ASCII, spaces and tabs (it encodes header
    values as ASCII, so anything else would fail every send). Named, never echoed."""
    text = value.get_secret_value()
    if len(text) > 4096 or not _HEADER_VALUE_RE.match(text):
        raise ValueError(
            "value must be one line of at most 4096 visible ASCII characters, spaces or tabs"
        )
    return value


class WebhookStepSettings(BaseModel):
    """What a workflow step of type ``webhook.call`` is configured with."""

    # A rejected secret is still someone's secret: keep inputs out of error strings and logs.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: http.URL = Field(description="The address to post to, starting with https://")
    secret: SecretStr = Field(
        default_factory=generate_secret,
        description="The Standard Webhooks signing secret ('whsec_…'): made for you if left blank",
    )
    # Header values often carry credentials (Authorization: Bearer …): secrets, each one.
    headers: dict[str, Annotated[SecretStr, AfterValidator(_header_value)]] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra request headers. Content-Type, Host and the webhook- headers are "
        "LinkTime's own; the values are stored encrypted and shown masked",
    )

    # Set by "Rotate secret": the secret before it, which also signs deliveries until
    # ``previous_secret_until`` so receivers can switch over.
    previous_secret: SecretStr | None = Field(
        default=None,
        description="The secret before the last rotation: deliveries are signed with it too "
        "until the time below",
        json_schema_extra={"hidden": True},
    )
    previous_secret_until: AwareDatetime | None = Field(
        default=None,
        description="Until when the previous secret also signs deliveries (set by Rotate secret)",
        json_schema_extra={"hidden": True},
    )

    @field_validator("secret", "previous_secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if not raw.startswith(SECRET_PREFIX):
            raise ValueError(f"secret must start with {SECRET_PREFIX!r}")
        encoded = raw.removeprefix(SECRET_PREFIX)
        try:
            # standardwebhooks decodes leniently (it skips stray characters); decode strictly
            # too, so a mistyped secret fails here rather than as signatures nobody can verify.
            base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            Webhook(raw)
        except (ValueError, EmptyWebhookSecretError):
            # Name the problem, never the secret.
            raise ValueError(
                f"secret must be {SECRET_PREFIX!r} followed by non-empty base64"
            ) from None
        return value

    @model_validator(mode="after")
    def _rotation_window(self) -> WebhookStepSettings:
        # A previous secret without an end would sign for ever: it ends with its window.
        if self.previous_secret_until is None:
            self.previous_secret = None
        return self

    def signing_secrets(self, at: datetime) -> list[SecretStr]:
        """The secrets a delivery sent at ``at`` is signed with: the current one, and the
        previous one while its rotation window lasts."""
        until = self.previous_secret_until
        if self.previous_secret is not None and until is not None and at < until:
            return [self.secret, self.previous_secret]
        return [self.secret]

    @field_validator("headers")
    @classmethod
    def _extra_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        seen: set[str] = set()
        for name in value:
            lower = name.lower()
            if not _TOKEN_RE.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if lower in _RESERVED_HEADERS or lower.startswith("webhook-"):
                raise ValueError(
                    f"header {name!r} is set by the webhook action and cannot be overridden"
                )
            if lower in seen:
                raise ValueError(f"header {name!r} is given twice")
            seen.add(lower)
        return value


class WebhookOperatorSettings(BaseModel):
    """Operator-wide settings from the environment (``LINKTIME_WEBHOOK_*``). Which addresses
    may be called is ``linktime.http``'s setting, ``LINKTIME_HTTP_ALLOWED_NETWORKS``."""

    timeout: float = Field(default=15.0, gt=0, description="Seconds for one whole delivery")


def operator_settings() -> WebhookOperatorSettings:
    """The current operator settings (re-read when their variables change)."""
    return plugin_settings(ENV_PREFIX, WebhookOperatorSettings)


# --- payload and signature ---------------------------------------------------------------------


def _utc_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Same output as json.dumps(body, separators=(",", ":"), ensure_ascii=False), built once.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def build_payload(ctx: ActionContext) -> bytes:
    """The exact bytes that are signed and sent."""
    event = ctx.event
    # One dump of the whole event; the booking moves out of it (the other keys keep their order).
    dumped = event.model_dump(mode="json")
    booking = dumped.pop("booking")
    body = {
        "type": ctx.trigger,
        "timestamp": _utc_z(event.occurred_at),
        "version": PAYLOAD_VERSION,
        "data": {
            "event": dumped,
            "booking": booking,
            "workflow": {"id": ctx.workflow.id, "name": ctx.workflow.name},
        },
    }
    return _JSON.encode(body).encode("utf-8")


def _body_of_run(ctx: ActionContext) -> bytes:
    """Every step of a run sends the same body (its event, trigger and workflow): built once
    per run, in the run's cache."""
    body: bytes | None = ctx.run_cache.get(ACTION)
    if body is None:
        body = ctx.run_cache[ACTION] = build_payload(ctx)
    return body


def _signing_key(secret: str) -> bytes:
    # Decoded exactly as standardwebhooks' Webhook() does, so its verify() accepts what we sign.
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")


def signed_headers(
    secret: SecretStr | list[SecretStr], msg_id: str, payload: bytes, at: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``payload``, timestamped ``at`` (Unix seconds; default
    now), with one ``v1,`` signature per secret, space-separated as the spec allows (a
    rotation's window signs with the new and the old secret)."""
    # Whole seconds: the signature covers the timestamp exactly as the header carries it.
    timestamp = str(int(time.time() if at is None else at))
    # v1: base64 HMAC-SHA256 of "<id>.<timestamp>.<body>", on the body bytes as sent.
    signed = b"%s.%s.%s" % (msg_id.encode("utf-8"), timestamp.encode("ascii"), payload)
    signatures = [
        "v1,"
        + base64.b64encode(
            hmac.new(_signing_key(s.get_secret_value()), signed, hashlib.sha256).digest()
        ).decode("ascii")
        for s in (secret if isinstance(secret, list) else [secret])
    ]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": " ".join(signatures),
    }


# --- the action ----------------------------------------------------------------------------------


def _headers_sent(
    settings: WebhookStepSettings, signed: dict[str, str]
) -> dict[str, str | SecretStr]:
    """Every header a delivery sends but Host (the step's own values still secret), with the
    Standard Webhooks ones ``signed``: for the request, and for the preview."""
    # Header names are case-insensitive: an extra User-Agent (any case) replaces ours. The
    # validator refuses the names set below and duplicates, so a plain dict is enough.
    extra = settings.headers
    headers: dict[str, str | SecretStr] = (
        {} if any(name.lower() == "user-agent" for name in extra) else {"User-Agent": USER_AGENT}
    )
    headers.update(extra)
    headers["Content-Type"] = "application/json"
    headers.update(signed)
    return headers


def _request_headers(settings: WebhookStepSettings, msg_id: str, payload: bytes) -> dict[str, str]:
    # The window is judged at the moment the signatures carry (webhook-timestamp).
    now = time.time()
    secrets = settings.signing_secrets(datetime.fromtimestamp(now, UTC))
    signed = signed_headers(secrets, msg_id, payload, now)
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in _headers_sent(settings, signed).items()
    }


# The first characters of a secret left at the excerpt's end are masked from this many on.
_BROKEN_SECRET_MIN_CHARS = 4


def _redacted(result: Result, settings: WebhookStepSettings) -> Result:
    """The result without the step's secrets (the signing secret and every header value), its
    response excerpt cut to ``EXCERPT_BYTES``: a receiver may echo what it got (an error page
    quoting the Authorization header), and the run log must not show it. Masked before the
    cut, so the cut cannot leave part of a secret; the start of one the answer itself broke
    off at the excerpt's end is masked too."""
    secrets = {
        form
        for s in (settings.secret, settings.previous_secret, *settings.headers.values())
        if s is not None
        for form in _echoed_forms(s.get_secret_value())
    }
    # Longest first: a short value inside a longer one must not break the longer one's mask.
    values = sorted(filter(None, secrets), key=len, reverse=True)

    def clean(text: str | None) -> str | None:
        if text:
            for value in values:
                text = text.replace(value, MASK)
        return text

    excerpt = clean(result.response_excerpt)
    if excerpt:
        cut = excerpt.encode()[:EXCERPT_BYTES].decode("utf-8", errors="ignore")
        excerpt = _without_broken_secret(cut, values)
    return replace(result, error=clean(result.error), response_excerpt=excerpt)


def _echoed_forms(value: str) -> set[str]:
    """``value`` as a receiver may echo it: as is, JSON-escaped (with and without
    ``ensure_ascii``, and with ``/`` written ``\\/`` as PHP does) and percent-encoded."""
    if not value:
        return set()
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return {
        value,
        *escaped,
        *(form.replace("/", "\\/") for form in escaped),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
    }


def _without_broken_secret(text: str, values: list[str]) -> str:
    for value in values:
        for size in range(len(value) - 1, _BROKEN_SECRET_MIN_CHARS - 1, -1):
            if text.endswith(value[:size]):
                return text[:-size] + MASK
    return text


def call_webhook(ctx: ActionContext) -> Result:
    """Deliver one attempt of a ``webhook.call`` step (blocking, in the calling thread). Every
    attempt records the ``webhook-id`` as its external id: the receiver's de-duplication key."""
    result = _redacted(_deliver(ctx), ctx.settings)
    return replace(result, external_id=ctx.idempotency_key)


def _answered(response: httpx.Response) -> Result:
    """What the endpoint's answer comes to: a 2xx reached its receiver (``delivered``); a
    retryable one with ``webhook-delivery: abort-message`` fails for good; the body kept whole
    (secrets are masked before the excerpt is cut: see _redacted)."""
    result = Result.from_response(response, excerpt_bytes=sys.maxsize)
    if result.outcome is Outcome.SUCCEEDED:
        return replace(result, delivery_status="delivered")
    aborted = response.headers.get(DELIVERY_HEADER, "").strip().lower() == ABORT_MESSAGE
    if result.outcome is Outcome.RETRY and aborted:
        return Result.fail(
            f"{result.error}; the receiver asked not to retry this message "
            f"({DELIVERY_HEADER}: {ABORT_MESSAGE})",
            error_code=ABORTED_CODE,
            http_status=result.http_status,
            response_excerpt=result.response_excerpt,
        )
    return result


def _deliver(ctx: ActionContext) -> Result:
    settings: WebhookStepSettings = ctx.settings
    payload = _body_of_run(ctx)
    return http.call(
        "POST",
        settings.url,
        timeout=operator_settings().timeout,
        answered=_answered,
        content=payload,
        headers=_request_headers(settings, ctx.idempotency_key, payload),
    )


def preview_webhook(ctx: ActionContext) -> dict[str, Any]:
    """What a delivery would send (the signature is made at send time; header values are
    secrets, masked by the dry run)."""
    settings: WebhookStepSettings = ctx.settings
    signed = {
        "webhook-id": ctx.idempotency_key,
        "webhook-timestamp": "set when sent",
        "webhook-signature": "computed when sent",
    }
    return {
        "method": "POST",
        "url": settings.url,
        "headers": _headers_sent(settings, signed),
        "body": json.loads(build_payload(ctx)),
    }


def check_webhook(ctx: ActionContext) -> list[Problem]:
    """What would stop every delivery: a target on an address this server does not call, or
    its outbound HTTP set up wrongly (``linktime.http.check_url``)."""
    return http.check_url(ctx.settings.url)


def rotate_secret(settings: WebhookStepSettings, until: datetime) -> WebhookStepSettings:
    """``settings`` with a newly generated secret; the current one keeps signing (beside the
    new one) until ``until``. Rotating again within a window ends the older one's."""
    return settings.model_copy(
        update={
            "secret": generate_secret(),
            "previous_secret": settings.secret,
            "previous_secret_until": until,
        }
    )


def endpoint_of(settings: WebhookStepSettings) -> str:
    return str(settings.url)


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="Call Webhook",
            settings=WebhookStepSettings,
            execute=call_webhook,
            preview=preview_webhook,
            preview_kind="webhook",
            check=check_webhook,
            capability="webhook",
            timeout=operator_timeout(ENV_PREFIX, WebhookOperatorSettings),
            description="POST the booking event as signed JSON (Standard Webhooks) to a URL.",
            endpoint=endpoint_of,
            rotate_secret=rotate_secret,
        )
    )
