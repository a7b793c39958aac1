"""LinkTime action ``webhook.call``: POST the booking event to a URL, signed per Standard Webhooks.

Operator settings (environment, prefix ``LINKTIME_WEBHOOK_``) are read on every delivery:
``ALLOWED_NETWORKS`` (comma-separated CIDRs exempt from the SSRF guard) and ``TIMEOUT`` (seconds
for one whole delivery).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Annotated, Any

import httpx
from linktime.actions import ActionContext, ActionType, Result
from linktime.hookspecs import hookimpl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

__version__ = "0.1.0"

ACTION = "webhook.call"
PAYLOAD_VERSION = 1
ENV_PREFIX = "LINKTIME_WEBHOOK_"
USER_AGENT = f"LinkTime-Webhooks/{__version__}"
EXCERPT_BYTES = 1024
# Read this much of a response so small bodies end cleanly and the connection stays pooled.
MAX_READ_BYTES = 64 * 1024
RETRY_STATUSES = frozenset({408, 425, 429})
SECRET_PREFIX = "whsec_"

AddressT = ipaddress.IPv4Address | ipaddress.IPv6Address
NetworkT = ipaddress.IPv4Network | ipaddress.IPv6Network

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers the plugin owns: the signature, the body framing and the pinned Host.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection"}
)


def generate_secret() -> SecretStr:
    """A fresh signing secret in the Standard Webhooks format (24 random bytes, like Svix)."""
    return SecretStr(SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii"))


class WebhookStepSettings(BaseModel):
    """What a workflow step of type ``webhook.call`` is configured with."""

    # A rejected secret is still someone's secret: keep inputs out of error strings and logs.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(max_length=2048, description="http:// or https:// URL to POST to")
    secret: SecretStr = Field(
        default_factory=generate_secret,
        description="Standard Webhooks signing secret, 'whsec_' + base64; generated if omitted",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra request headers (cannot override webhook-*, content-type or host)",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https"):
            shown = url.scheme or "none"
            raise ValueError(f"URL scheme must be http or https, got {shown!r}")
        if not url.host:
            raise ValueError("URL has no host")
        if url.userinfo:
            raise ValueError(
                "credentials in the URL are not supported; receivers verify the signature"
            )
        return value

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr) -> SecretStr:
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

    @field_validator("headers")
    @classmethod
    def _extra_headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, header_value in value.items():
            lower = name.lower()
            if not _TOKEN_RE.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if lower in _RESERVED_HEADERS or lower.startswith("webhook-"):
                raise ValueError(
                    f"header {name!r} is set by the webhook action and cannot be overridden"
                )
            if lower in seen:
                raise ValueError(f"header {name!r} is given twice")
            if any(ch in header_value for ch in "\r\n\0") or len(header_value) > 4096:
                raise ValueError(
                    f"header {name!r}: value must be one line of at most 4096 characters"
                )
            seen.add(lower)
        return value


class WebhookOperatorSettings(BaseSettings):
    """Operator-wide settings from the environment (``LINKTIME_WEBHOOK_*``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    allowed_networks: Annotated[tuple[NetworkT, ...], NoDecode] = Field(
        default=(),
        description="CIDRs the SSRF guard lets through, e.g. '127.0.0.0/8,::1/128'",
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds for one whole delivery")

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(
                ipaddress.ip_network(part.strip()) for part in value.split(",") if part.strip()
            )
        return value


def operator_settings() -> WebhookOperatorSettings:
    """The current operator settings; re-read only when the environment changed."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)))
    return _operator_settings_for(env)


@lru_cache(maxsize=16)
def _operator_settings_for(env: tuple[tuple[str, str], ...]) -> WebhookOperatorSettings:
    # ``env`` is only the cache key: the constructor reads that same environment itself.
    return WebhookOperatorSettings()


# --- payload and signature ---------------------------------------------------------------------


def _utc_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_payload(ctx: ActionContext) -> bytes:
    """The exact bytes that are signed and sent."""
    event = ctx.event
    body = {
        "type": ctx.trigger,
        "timestamp": _utc_z(event.occurred_at),
        "version": PAYLOAD_VERSION,
        "data": {
            "event": event.model_dump(mode="json", exclude={"booking"}),
            "booking": event.booking.model_dump(mode="json"),
            "workflow": {"id": ctx.workflow.id, "name": ctx.workflow.name},
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_headers(secret: SecretStr, msg_id: str, payload: bytes) -> dict[str, str]:
    """Standard Webhooks headers for ``payload``, timestamped now."""
    # Whole seconds: the signature covers the timestamp exactly as the header carries it.
    now = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()), UTC)
    signature = Webhook(secret.get_secret_value()).sign(msg_id, now, payload.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


# --- SSRF guard --------------------------------------------------------------------------------

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = ipaddress.ip_address("169.254.169.254")


# Order matters: the first, most specific reason is the one the user reads.
_REFUSED_KINDS: tuple[tuple[Callable[[AddressT], bool], str], ...] = (
    (lambda a: a.is_unspecified, "an unspecified address"),
    (lambda a: a.is_loopback, "a loopback address"),
    (lambda a: a == _METADATA, "a link-local (cloud metadata) address"),
    (lambda a: a.is_link_local, "a link-local address"),
    (lambda a: a.is_multicast, "a multicast address"),
    (lambda a: a in _CGNAT, "a shared (CGNAT 100.64.0.0/10) address"),
    (lambda a: a.is_private, "a private address"),
    (lambda a: a.is_reserved, "a reserved address"),
    # Catches what the flags above miss, e.g. documentation and benchmarking ranges.
    (lambda a: not a.is_global, "a non-global address"),
)


class Refused(Exception):
    """The target resolves to an address the operator has not allowed."""


def _embedded_ipv4(ip: AddressT) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _why_not_global(ip: AddressT) -> str | None:
    """Why ``ip`` must not be reached by default, or None for an ordinary public address."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = _why_not_global(embedded)
        return f"an IPv6 form of {embedded}, {reason}" if reason else None
    for test, reason in _REFUSED_KINDS:
        if test(ip):
            return reason
    return None


def _allowed(ip: AddressT, networks: tuple[NetworkT, ...]) -> bool:
    candidates = [ip]
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        candidates.append(embedded)
    return any(a in net for a in candidates for net in networks if a.version == net.version)


def check_address(host: str, ip: AddressT, networks: tuple[NetworkT, ...]) -> None:
    """Raise ``Refused`` when ``ip`` (resolved from ``host``) is off limits."""
    reason = _why_not_global(ip)
    if reason is None or _allowed(ip, networks):
        return
    try:
        literal = ipaddress.ip_address(host) == ip
    except ValueError:
        literal = False
    subject = f"{host} is" if literal else f"{host} resolves to {ip},"
    raise Refused(f"refused: {subject} {reason} (allow it with {ENV_PREFIX}ALLOWED_NETWORKS)")


async def resolve_vetted(host: str, port: int, networks: tuple[NetworkT, ...]) -> AddressT:
    """Resolve ``host`` and vet every address: one bad answer refuses the whole target, since
    connecting to the 'good' one would still let a rebinding resolver pick which we use."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[AddressT] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise socket.gaierror(f"{host} has no addresses")
    for ip in addresses:
        check_address(host, ip, networks)
    return addresses[0]


# --- HTTP client -------------------------------------------------------------------------------


class _PoolPerServerName(httpx.AsyncBaseTransport):
    """One connection pool per TLS server name.

    Requests go to the pinned IP, so httpcore keys its pool by IP alone; without this, two HTTPS
    receivers behind one IP (a CDN) would reuse each other's TLS connections and server names.
    An idle pool holds no sockets once keep-alive expires, so one per receiver name is cheap.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._ssl_context = httpx.create_ssl_context()
        self._pools: dict[str | None, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        server_name = request.extensions.get("sni_hostname")
        pool = self._pools.get(server_name)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(
                verify=self._ssl_context, limits=self._limits, trust_env=False
            )
            self._pools[server_name] = pool
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.AsyncClient:
    """The pooled client of the running loop (connections cannot cross event loops)."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        client = _clients.get(loop)
        if client is None:
            # A closed loop's connections are dead; dropping its client frees them.
            for stale in [other for other in _clients if other.is_closed()]:
                del _clients[stale]
            client = httpx.AsyncClient(
                transport=_PoolPerServerName(
                    httpx.Limits(max_connections=100, max_keepalive_connections=20)
                ),
                follow_redirects=False,
                trust_env=False,
            )
            _clients[loop] = client
        return client


# --- the action ----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), else None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


async def _read_excerpt(response: httpx.Response) -> str:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= MAX_READ_BYTES:
            break
    return received[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def _result_for(response: httpx.Response, excerpt: str) -> Result:
    status = response.status_code
    code = f"http_{status}"
    said = f"receiver answered {status} {response.reason_phrase}".rstrip()
    if 200 <= status < 300:
        return Result.ok(http_status=status, response_excerpt=excerpt)
    if status in RETRY_STATUSES or 500 <= status < 600:
        return Result.retry(
            said,
            error_code=code,
            http_status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            response_excerpt=excerpt,
        )
    if 300 <= status < 400:
        location = response.headers.get("location", "(no Location header)")[:500]
        return Result.fail(
            f"{said}, a redirect to {location}; redirects are not followed: "
            "set the webhook URL to the final address",
            error_code=code,
            http_status=status,
            response_excerpt=excerpt,
        )
    return Result.fail(said, error_code=code, http_status=status, response_excerpt=excerpt)


def _request_headers(
    settings: WebhookStepSettings, url: httpx.URL, msg_id: str, payload: bytes
) -> httpx.Headers:
    headers = httpx.Headers({"User-Agent": USER_AGENT})
    headers.update(settings.headers)  # case-insensitive, so a custom User-Agent replaces ours
    headers.update(
        {
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            **signed_headers(settings.secret, msg_id, payload),
        }
    )
    return headers


async def call_webhook(ctx: ActionContext) -> Result:
    """Deliver one attempt of a ``webhook.call`` step."""
    settings: WebhookStepSettings = ctx.settings
    try:
        operator = operator_settings()
    except ValueError as exc:
        # Every webhook is affected; retrying lets deliveries resume once the operator fixes it.
        return Result.retry(
            f"invalid {ENV_PREFIX}* operator settings: {exc}", error_code="operator_settings"
        )
    url = httpx.URL(settings.url)
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    payload = build_payload(ctx)
    try:
        # One deadline for the whole delivery: DNS, connect, send and a slowly dripping response.
        async with asyncio.timeout(operator.timeout):
            ip = await resolve_vetted(host, port, operator.allowed_networks)
            # Connect to the vetted IP itself, so a second DNS answer cannot differ.
            client = _client()
            request = client.build_request(
                "POST",
                url.copy_with(host=str(ip)),
                content=payload,
                headers=_request_headers(settings, url, ctx.idempotency_key, payload),
                extensions={"sni_hostname": host} if url.scheme == "https" else {},
                timeout=operator.timeout,
            )
            response = await client.send(request, stream=True)
            try:
                excerpt = await _read_excerpt(response)
            finally:
                await response.aclose()
    except Refused as exc:
        return Result.fail(str(exc), error_code="ssrf_refused")
    except (TimeoutError, httpx.TimeoutException):
        return Result.retry(
            f"no complete answer from {host} within {operator.timeout:g}s", error_code="timeout"
        )
    except socket.gaierror as exc:
        return Result.retry(f"could not resolve {host}: {exc}", error_code="dns_error")
    except httpx.TransportError as exc:
        return Result.retry(
            f"connection to {host}:{port} failed: {type(exc).__name__}: {exc}",
            error_code="connection_error",
        )
    return _result_for(response, excerpt)


def preview_webhook(ctx: ActionContext) -> dict[str, Any]:
    """What a delivery would send (the signature is made at send time)."""
    settings: WebhookStepSettings = ctx.settings
    return {
        "method": "POST",
        "url": settings.url,
        "headers": {"webhook-id": ctx.idempotency_key, **settings.headers},
        "body": json.loads(build_payload(ctx)),
    }


@hookimpl
def register_actions(register: Callable[[ActionType], None]) -> None:
    register(
        ActionType(
            name=ACTION,
            title="Call Webhook",
            settings=WebhookStepSettings,
            execute=call_webhook,
            preview=preview_webhook,
            capability="webhook",
            description="POST the booking event as signed JSON (Standard Webhooks) to a URL.",
        )
    )
