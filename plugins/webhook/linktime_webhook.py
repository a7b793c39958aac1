"""LinkTime action ``webhook.call``: POST the booking event to a URL, signed per Standard Webhooks.

Operator settings (environment, prefix ``LINKTIME_WEBHOOK_``) are read on every delivery:
``ALLOWED_NETWORKS`` (comma-separated CIDRs exempt from the SSRF guard) and ``TIMEOUT`` (seconds
for one whole delivery).

``call_webhook`` is a plain function: the engine runs it in the Dramatiq worker thread, and each
worker thread has its own pooled ``httpx.Client`` (no event loop, no hand-off between threads).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from http.cookiejar import Cookie, CookieJar
from typing import Annotated, Any

import httpcore
import httpx
from linktime.actions import ActionContext, ActionType, Problem, Result
from linktime.crypto import MASK
from linktime.hookspecs import hookimpl
from linktime.operator_settings import operator_timeout
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator
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
_HEADER_VALUE_RE = re.compile(r"[\t\x20-\x7e]*\Z")
# Headers the plugin owns: the signature, the body framing and the pinned Host.
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

    url: str = Field(max_length=2048, description="The address to post to, starting with https://")
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

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if not url.scheme:
            raise ValueError("The URL scheme must be http or https: start it with https://")
        if url.scheme not in ("http", "https"):
            raise ValueError(f"The URL scheme must be http or https, not {url.scheme}")
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


_ENV_ALLOWED_NETWORKS = ENV_PREFIX + "ALLOWED_NETWORKS"
_ENV_TIMEOUT = ENV_PREFIX + "TIMEOUT"


def operator_settings() -> WebhookOperatorSettings:
    """The current operator settings; re-parsed only when one of the two variables changed."""
    # Two lookups per delivery, not a scan of the whole environment.
    environ = os.environ
    return _operator_settings_for(environ.get(_ENV_ALLOWED_NETWORKS), environ.get(_ENV_TIMEOUT))


@lru_cache(maxsize=16)
def _operator_settings_for(
    allowed_networks: str | None, timeout: str | None
) -> WebhookOperatorSettings:
    # The values are only the cache key: the constructor reads that same environment itself.
    # Invalid settings raise, and exceptions are not cached: they are re-checked every time.
    return WebhookOperatorSettings()


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


def signed_headers(secret: SecretStr, msg_id: str, payload: bytes) -> dict[str, str]:
    """Standard Webhooks headers for ``payload``, timestamped now."""
    # Whole seconds: the signature covers the timestamp exactly as the header carries it.
    timestamp = str(int(time.time()))
    # v1: base64 HMAC-SHA256 of "<id>.<timestamp>.<body>", on the body bytes as sent.
    signed = b"%s.%s.%s" % (msg_id.encode("utf-8"), timestamp.encode("ascii"), payload)
    digest = hmac.new(_signing_key(secret.get_secret_value()), signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
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


def resolve_vetted(host: str, port: int, networks: tuple[NetworkT, ...]) -> AddressT:
    """Resolve ``host`` and vet every address: one bad answer refuses the whole target, since
    connecting to the 'good' one would still let a rebinding resolver pick which we use.

    An IP literal is taken as it is, without asking the resolver."""
    # A trailing dot only says the name is fully qualified ("127.0.0.1.", "localhost."): vet
    # the name without it, which the resolver would otherwise refuse as "not known" (a retry).
    name = host.rstrip(".") or host
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    # A scoped IPv6 literal (fe80::1%eth0) goes through getaddrinfo, which drops the scope.
    if literal is not None and getattr(literal, "scope_id", None) is None:
        check_address(host, literal, networks)
        return literal
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
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

# Per connection pool, so per worker thread and TLS server name. A thread sends one request at a
# time, so this bounds the idle keep-alive connections it keeps (one per receiver it talks to).
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=5.0)


class _Deadline(threading.local):
    """When this thread's delivery in progress must be over (``time.monotonic()``), if any."""

    at: float | None = None


_deadline = _Deadline()


def _within_deadline(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` for one socket wait, cut to what is left of this thread's delivery."""
    at = _deadline.at
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the delivery's time is up")
    return left if timeout is None or left < timeout else timeout


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the delivery deadline.

    Writes wait for the next read, so a request's head and body leave in one send (httpcore
    writes them separately: one system call and one TCP segment saved per request)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._unsent: list[bytes] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unsent:
            # The request is complete once httpcore turns to the response; send it now.
            data = b"".join(self._unsent)
            self._unsent.clear()
            self._stream.write(data, _within_deadline(timeout, httpcore.WriteTimeout))
        return self._stream.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._unsent.append(buffer)

    def close(self) -> None:
        self._unsent.clear()
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        budget = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, budget))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking sockets, each wait bounded by the thread's delivery deadline.

    httpx's timeouts apply per socket operation; this turns them into one deadline for the
    whole request, so a receiver that drips its answer a byte at a time is still cut off."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        budget = _within_deadline(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, budget, local_address, socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


_BACKEND = _DeadlineBackend()


def _pool(ssl_context: ssl.SSLContext) -> httpx.HTTPTransport:
    """httpx's transport over an httpcore pool that uses the deadline backend."""
    transport = httpx.HTTPTransport(verify=ssl_context, limits=_LIMITS, trust_env=False)
    # httpx has no parameter for httpcore's network backend: swap in a pool like its own (same
    # TLS context and limits, HTTP/1.1) that has ours. Fail loudly if httpx changes underneath.
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
        raise RuntimeError("unsupported httpx version: HTTPTransport._pool is not a pool")
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        max_connections=_LIMITS.max_connections,
        max_keepalive_connections=_LIMITS.max_keepalive_connections,
        keepalive_expiry=_LIMITS.keepalive_expiry,
        network_backend=_BACKEND,
    )
    return transport


class _PoolPerServerName(httpx.BaseTransport):
    """One connection pool per TLS server name.

    Requests go to the pinned IP, so httpcore keys its pool by IP alone; without this, two HTTPS
    receivers behind one IP (a CDN) would reuse each other's TLS connections and server names.
    An idle pool holds no sockets once keep-alive expires, so one per receiver name is cheap.
    Each instance belongs to one thread's client, so it needs no lock.
    """

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = ssl_context
        self._pools: dict[str | None, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        server_name = request.extensions.get("sni_hostname")
        pool = self._pools.get(server_name)
        if pool is None:
            pool = self._pools[server_name] = _pool(self._ssl_context)
        return pool.handle_request(request)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


class _NoCookies(CookieJar):
    """Keeps no cookies: a receiver's Set-Cookie never travels to the next delivery (which may
    be another account's receiver behind the same IP), and no Cookie header is ever sent."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Cookie) -> None:
        pass


class _ClientsPerThread:
    """A pooled ``httpx.Client`` for each thread that delivers (a Dramatiq worker thread), so a
    delivery never waits on another thread's pool; the TLS context (CA bundle) is shared."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    def get(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                transport=_PoolPerServerName(self._shared_ssl_context()),
                cookies=_NoCookies(),
                follow_redirects=False,
                trust_env=False,
            )
            self._local.client = client
        return client

    def _shared_ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                # Honours SSL_CERT_FILE / SSL_CERT_DIR, read once per process.
                self._ssl_context = httpx.create_ssl_context()
            return self._ssl_context


_clients = _ClientsPerThread()


def _client() -> httpx.Client:
    """The pooled client of the calling thread (created on its first delivery)."""
    return _clients.get()


# --- the action ----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), else None."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit, not to float
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _read_answer(response: httpx.Response) -> str:
    """The body as far as it is read; cut to its excerpt only once its secrets are masked."""
    received = bytearray()
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) >= MAX_READ_BYTES:
            break
    return received.decode("utf-8", errors="replace")


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


def _request_headers(
    settings: WebhookStepSettings, url: httpx.URL, msg_id: str, payload: bytes
) -> dict[str, str]:
    signed = signed_headers(settings.secret, msg_id, payload)
    headers = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in _headers_sent(settings, signed).items()
    }
    headers["Host"] = url.netloc.decode("ascii")
    return headers


# Parsed once per URL rather than at every delivery (httpx.URL is immutable).
@lru_cache(maxsize=4096)
def _target(url: str) -> tuple[httpx.URL, str, int]:
    """The URL, its host and its port."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed, parsed.raw_host.decode("ascii"), port


@lru_cache(maxsize=4096)
def _pinned(url: str, ip: str) -> httpx.URL:
    """The URL with its host replaced by the vetted address it resolved to."""
    return _target(url)[0].copy_with(host=ip)


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
        for s in (settings.secret, *settings.headers.values())
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


def _deliver(ctx: ActionContext) -> Result:
    settings: WebhookStepSettings = ctx.settings
    try:
        operator = operator_settings()
    except ValueError as exc:
        # Every webhook is affected; retrying lets deliveries resume once the operator fixes it.
        return Result.retry(
            f"invalid {ENV_PREFIX}* operator settings: {exc}", error_code="operator_settings"
        )
    url, host, port = _target(settings.url)
    payload = _body_of_run(ctx)
    timeout = operator.timeout
    # One deadline for the whole delivery: resolving, connecting, sending and reading.
    deadline = time.monotonic() + timeout
    try:
        ip = resolve_vetted(host, port, operator.allowed_networks)
        if time.monotonic() >= deadline:
            # getaddrinfo cannot be interrupted; a resolver that took the whole budget still
            # ends the delivery here, before connecting.
            raise TimeoutError
        # Connect to the vetted IP itself, so a second DNS answer cannot differ.
        client = _client()
        request = client.build_request(
            "POST",
            _pinned(settings.url, str(ip)),
            content=payload,
            headers=_request_headers(settings, url, ctx.idempotency_key, payload),
            extensions={"sni_hostname": host} if url.scheme == "https" else {},
            timeout=timeout,
        )
        # Every socket wait from here on ends by the deadline (see _DeadlineBackend).
        _deadline.at = deadline
        try:
            response = client.send(request, stream=True)
            try:
                excerpt = _read_answer(response)
            finally:
                response.close()
        finally:
            _deadline.at = None
    except Refused as exc:
        return Result.fail(str(exc), error_code="ssrf_refused")
    except (TimeoutError, httpx.TimeoutException):
        return Result.retry(
            f"no complete answer from {host} within {timeout:g}s", error_code="timeout"
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


def _addresses_without_resolver(host: str) -> list[AddressT]:
    """The addresses ``host`` stands for whatever a resolver says: an IP literal, any numeric
    IPv4 form the resolver takes as one (2130706433, 127.1, 0x7f.0.0.1), and localhost names
    (RFC 6761). Empty for any other name."""
    name = (host.rstrip(".") or host).lower()
    try:
        return [ipaddress.ip_address(name)]
    except ValueError:
        pass
    if name == "localhost" or name.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    try:
        return [ipaddress.IPv4Address(socket.inet_aton(name))]
    except OSError:
        return []


def check_webhook(ctx: ActionContext) -> list[Problem]:
    """What would stop every delivery: the server's setup, or a target on an address it does
    not call, vetted by the sender's own rule. Only addresses are vetted here, not names: a
    name is resolved when sending (its answer may change, and a dry run must not wait on a
    resolver)."""
    try:
        networks = operator_settings().allowed_networks
    except ValueError:
        return [Problem.operator("Calling webhooks is not set up correctly on this server.")]
    host = _target(ctx.settings.url)[1]
    try:
        for ip in _addresses_without_resolver(host):
            check_address(host, ip, networks)
    except Refused:
        return [
            Problem(
                f"{host} is a private address: this server does not call it.",
                "Use a public URL, or ask your administrator to allow that network.",
            )
        ]
    return []


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
        )
    )
