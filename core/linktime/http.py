"""Safe outbound HTTP for plugins: the one client every action that calls a URL uses.

- An address guard at connection time: the host is resolved once, every address it resolves
  to is vetted (loopback, private, link-local and metadata, CGNAT, multicast, reserved and any
  other non-global address is refused unless ``LINKTIME_HTTP_ALLOWED_NETWORKS`` allows it) and
  the connection goes to that vetted address itself, so a second DNS answer cannot differ
  (DNS rebinding). The URL keeps its host name: TLS SNI, certificate checks and the
  ``Host`` header are the name's, and connections are pooled per name.
- One total deadline per request (resolve, connect, TLS, send and read), not a timeout per
  socket wait that a receiver dripping one byte at a time could stretch forever.
- No redirects followed, no cookies kept or sent, no proxy or ``.netrc`` from the environment,
  at most ``max_response_bytes`` of a body read.
- Pooled per process: one ``httpx.Client`` per thread (a Dramatiq worker thread never waits on
  another's pool) and one ``httpx.AsyncClient`` per event loop.

Built on public httpx/httpcore APIs: an ``httpcore.NetworkBackend`` that vets and pins, under
an ``httpcore.ConnectionPool``, under a small ``httpx`` transport of our own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import Cookie, CookieJar
from typing import Annotated, Any, NoReturn

import anyio
import httpcore
import httpx
from pydantic import AfterValidator, AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from .actions import Problem, Result
from .operator_settings import plugin_settings

__all__ = [
    "URL",
    "HttpSettings",
    "Refused",
    "acall",
    "arequest",
    "async_client",
    "call",
    "check_url",
    "client",
    "close",
    "request",
    "retry_after",
    "settings",
]

# httpx logs every request's full URL at INFO, and a plugin's URL may be its secret (an
# incoming-webhook URL): keep them out of the logs.
logging.getLogger("httpx").setLevel(logging.WARNING)

ENV_PREFIX = "LINKTIME_HTTP_"
ALLOWED_NETWORKS_ENV = ENV_PREFIX + "ALLOWED_NETWORKS"

AddressT = ipaddress.IPv4Address | ipaddress.IPv6Address
NetworkT = ipaddress.IPv4Network | ipaddress.IPv6Network


class HttpSettings(BaseModel):
    """The operator's settings of outbound HTTP (``LINKTIME_HTTP_*``)."""

    allowed_networks: Annotated[tuple[NetworkT, ...], NoDecode] = Field(
        default=(),
        # The webhook plugin's older name still works, so existing deployments keep theirs.
        validation_alias=AliasChoices(ALLOWED_NETWORKS_ENV, "LINKTIME_WEBHOOK_ALLOWED_NETWORKS"),
        description="CIDRs the address guard lets through, comma-separated, e.g. "
        "'10.0.0.0/8,127.0.0.1/32'",
    )
    timeout: float = Field(
        default=15.0, gt=0, allow_inf_nan=False, description="Default seconds for one request"
    )
    max_response_bytes: int = Field(
        default=65536, gt=0, description="How much of a response body is read, in bytes"
    )

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(ipaddress.ip_network(p.strip()) for p in value.split(",") if p.strip())
        return value


def settings() -> HttpSettings:
    """The current operator settings (re-read when their variables change); invalid ones raise
    ``OperatorSettingError``, which the engine turns into a retry ``operator_settings``."""
    return plugin_settings(ENV_PREFIX, HttpSettings)


# --- the address guard ---------------------------------------------------------------------------


class Refused(Exception):
    """The target is, or resolves to, an address the operator has not allowed."""


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


def _check_address(host: str, ip: AddressT, networks: tuple[NetworkT, ...]) -> None:
    """Raise ``Refused`` when ``ip`` (``host`` itself, or what it resolved to) is off limits."""
    reason = _why_not_global(ip)
    if reason is None or _allowed(ip, networks):
        return
    subject = f"{host} is" if _literal(host) == ip else f"{host} resolves to {ip},"
    raise Refused(f"refused: {subject} {reason} (allow it with {ALLOWED_NETWORKS_ENV})")


def _literal(host: str) -> AddressT | None:
    """``host`` as an IP address when it is one (a trailing dot, which only says the name is
    fully qualified, ignored), else None. A scoped IPv6 literal (fe80::1%eth0) is left to the
    resolver, which drops the scope."""
    try:
        ip = ipaddress.ip_address(host.rstrip(".") or host)
    except ValueError:
        return None
    return None if getattr(ip, "scope_id", None) else ip


def _vet_resolved(host: str, infos: Iterable[Any], networks: tuple[NetworkT, ...]) -> AddressT:
    """The address to connect to from ``getaddrinfo``'s answer. Every address is vetted: one
    bad answer refuses the whole target, since connecting to the 'good' one would still let a
    rebinding resolver pick which one is used."""
    addresses: list[AddressT] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _Unresolved(f"could not resolve {host}: no addresses")
    for ip in addresses:
        _check_address(host, ip, networks)
    return addresses[0]


class _Unresolved(httpcore.ConnectError):
    """The host name did not resolve (``call`` reports it as ``dns_error``)."""


def _getaddrinfo(host: str, port: int) -> list[Any]:
    try:
        # The name without a trailing dot, which some resolvers refuse as "not known".
        return socket.getaddrinfo(
            host.rstrip(".") or host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise _Unresolved(f"could not resolve {host}: {exc}") from exc


def _resolve_vetted(host: str, port: int) -> str:
    """Resolve ``host`` and vet what it resolves to (an IP literal is vetted as it is)."""
    networks = settings().allowed_networks
    literal = _literal(host)
    if literal is not None:
        _check_address(host, literal, networks)
        return str(literal)
    return str(_vet_resolved(host, _getaddrinfo(host, port), networks))


# --- one deadline per request --------------------------------------------------------------------

# When the request in progress in this thread or task must be over (time.monotonic()).
_deadline: ContextVar[float | None] = ContextVar("linktime_http_deadline", default=None)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` for one socket wait, cut to what is left of the request's deadline."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the request's time is up")
    return left if timeout is None or left < timeout else timeout


@contextlib.contextmanager
def _deadline_of(timeout: float) -> Iterator[None]:
    token = _deadline.set(time.monotonic() + timeout)
    try:
        yield
    finally:
        _deadline.reset(token)


class _Stream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline.

    Writes wait for the next read, so a request's head and body leave in one send (httpcore
    writes them separately: one system call and one TCP segment saved per request)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._unsent: list[bytes] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unsent:
            # The request is complete once httpcore turns to the response: send it now.
            data = b"".join(self._unsent)
            self._unsent.clear()
            self._stream.write(data, _left(timeout, httpcore.WriteTimeout))
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

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
        budget = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, budget))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


# Lookups for new connections of the blocking clients (pooled connections need none), shared by
# every thread of the process.
_resolvers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="linktime-resolve")


class _Backend(httpcore.NetworkBackend):
    """httpcore's blocking sockets, connected only to vetted addresses, bounded by the
    deadline."""

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
        if _literal(host) is not None:
            ip = _resolve_vetted(host, port)
        else:
            # getaddrinfo cannot be interrupted: it runs in the resolver pool, and waiting for
            # it ends at the deadline (a stuck lookup finishes there on its own).
            lookup = _resolvers.submit(_resolve_vetted, host, port)
            try:
                ip = lookup.result(_left(timeout, httpcore.ConnectTimeout))
            except concurrent.futures.TimeoutError:
                lookup.cancel()
                raise httpcore.ConnectTimeout(f"resolving {host} took too long") from None
        budget = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._backend.connect_tcp(ip, port, budget, local_address, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _AsyncStream(httpcore.AsyncNetworkStream):
    """The async counterpart of ``_Stream`` (without write coalescing)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        budget = _left(timeout, httpcore.ConnectTimeout)
        return _AsyncStream(await self._stream.start_tls(ssl_context, server_hostname, budget))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    """The async counterpart of ``_Backend``: the name is resolved in a worker thread, and
    waiting for it ends at the deadline."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if _literal(host) is not None:
            ip = _resolve_vetted(host, port)
        else:
            budget = _left(timeout, httpcore.ConnectTimeout)
            with anyio.move_on_after(budget) as waited:
                ip = await anyio.to_thread.run_sync(
                    _resolve_vetted, host, port, abandon_on_cancel=True
                )
            if waited.cancelled_caught:
                raise httpcore.ConnectTimeout(f"resolving {host} took too long")
        budget = _left(timeout, httpcore.ConnectTimeout)
        stream = await self._backend.connect_tcp(ip, port, budget, local_address, socket_options)
        return _AsyncStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


# --- transports: httpx requests over the guarded httpcore pools -----------------------------------

# httpcore's exceptions as httpx's (what httpx's own transport does, on public names only).
_EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


def _raise_mapped(exc: Exception) -> NoReturn:
    for kind in type(exc).__mro__:
        mapped = _EXCEPTIONS.get(kind)
        if mapped is not None:
            raise mapped(str(exc)) from exc
    raise exc


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        _raise_mapped(exc)


def _core_request(request: httpx.Request) -> httpcore.Request:
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


# Decoded a step at a time: what one raw chunk inflates to is never held whole.
_INFLATE_STEP = 65536
# Content codings decoded here, with bounded memory: zlib reads a gzip or a zlib header.
_ZLIB_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})


def _inflate(data: bytes, layers: list[Any], coding: str) -> Iterator[bytes]:
    """``data`` through each zlib layer in turn, in pieces of at most ``_INFLATE_STEP`` bytes
    (a layer keeps the input it has not decoded yet until its consumer asks for more)."""
    if not layers:
        yield data
        return
    first, rest = layers[0], layers[1:]
    while not first.eof:
        try:
            out = first.decompress(data, _INFLATE_STEP)
        except zlib.error as exc:
            raise httpcore.RemoteProtocolError(f"the answer's {coding} body is corrupt") from exc
        data = first.unconsumed_tail
        if out:
            yield from _inflate(out, rest, coding)
        if not data and len(out) < _INFLATE_STEP:
            return


class _Reader:
    """Turns a response's raw body into at most ``limit`` decoded bytes: the cap is on what
    the caller gets, not on what crossed the wire (a 300-byte gzip answer can inflate to
    gigabytes). gzip and deflate, stacked or not, are decoded here a bounded step at a time;
    a body in another coding (br, zstd...) is not read, and a note saying so stands for it."""

    def __init__(self, headers: list[tuple[bytes, bytes]], limit: int) -> None:
        codings = [
            c.strip().lower()
            for name, value in headers
            if name.lower() == b"content-encoding"
            for c in value.decode("latin-1").split(",")
        ]
        codings = [c for c in codings if c and c != "identity"]
        self.encoded = bool(codings)
        self.note: bytes | None = None
        unknown = [c for c in codings if c not in _ZLIB_CODINGS]
        if unknown:
            self.note = (
                f"(the answer's body is {', '.join(codings)}-encoded, which linktime.http "
                "does not decode: not read)"
            ).encode()
        # The last coding applied is the first one undone.
        self._layers = [zlib.decompressobj(32 + zlib.MAX_WBITS) for _ in codings]
        self._coding = ", ".join(codings)
        self._left = limit
        self._raw_left = limit

    @property
    def done(self) -> bool:
        return self._left <= 0 or self._raw_left <= 0 or bool(self._layers and self._layers[0].eof)

    def read(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of one raw chunk, cut where the cap is reached."""
        raw = raw[: self._raw_left]
        self._raw_left -= len(raw)
        for piece in _inflate(raw, self._layers, self._coding):
            yield piece[: self._left]
            self._left -= len(piece)
            if self._left <= 0:
                return

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The answer's headers for the body as the caller gets it: once decoded (or replaced
        by a note), neither its coding nor its wire length applies, and httpx must not decode
        it again."""
        if not self.encoded:
            return headers
        dropped = (b"content-encoding", b"content-length")
        return [(name, value) for name, value in headers if name.lower() not in dropped]


class _Body(httpx.SyncByteStream):
    """A response body, decoded and cut at the size cap (what the client reads, whatever it
    is sent)."""

    def __init__(self, stream: Iterable[bytes], reader: _Reader) -> None:
        self._stream = stream
        self._reader = reader

    def __iter__(self) -> Iterator[bytes]:
        if self._reader.note is not None:
            yield self._reader.note
            return
        with _mapped():
            for chunk in self._stream:
                yield from self._reader.read(chunk)
                if self._reader.done:
                    return

    def close(self) -> None:
        with _mapped():
            getattr(self._stream, "close", lambda: None)()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], reader: _Reader) -> None:
        self._stream = stream
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._reader.note is not None:
            yield self._reader.note
            return
        with _mapped():
            async for chunk in self._stream:
                for piece in self._reader.read(chunk):
                    yield piece
                if self._reader.done:
                    return

    async def aclose(self) -> None:
        with _mapped():
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()


# Per pool. A sync client belongs to one thread, which sends one request at a time: this bounds
# the idle keep-alive connections it keeps (one per host it talks to). An async client serves
# every task of its loop.
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=5.0)
_ASYNC_LIMITS = httpx.Limits(
    max_connections=200, max_keepalive_connections=100, keepalive_expiry=5.0
)


def _pool_options(ssl_context: ssl.SSLContext, limits: httpx.Limits) -> dict[str, Any]:
    return {
        "ssl_context": ssl_context,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
    }


class _Transport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(
            **_pool_options(ssl_context, _LIMITS), network_backend=_Backend()
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with _mapped():
            answer = self._pool.handle_request(_core_request(request))
        assert isinstance(answer.stream, Iterable)
        reader = _Reader(answer.headers, settings().max_response_bytes)
        return httpx.Response(
            status_code=answer.status,
            headers=reader.headers(answer.headers),
            stream=_Body(answer.stream, reader),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            **_pool_options(ssl_context, _ASYNC_LIMITS), network_backend=_AsyncBackend()
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _mapped():
            answer = await self._pool.handle_async_request(_core_request(request))
        assert isinstance(answer.stream, AsyncIterable)
        reader = _Reader(answer.headers, settings().max_response_bytes)
        return httpx.Response(
            status_code=answer.status,
            headers=reader.headers(answer.headers),
            stream=_AsyncBody(answer.stream, reader),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _NoCookies(CookieJar):
    """Keeps no cookies: one receiver's Set-Cookie never travels to the next request (which may
    be another account's receiver), and no Cookie header is ever sent."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Cookie) -> None:
        pass


# No redirects (each hop would need vetting, and a receiver could send us anywhere), no proxy
# or credentials from the environment. Bodies are asked for unencoded: the size cap is cheapest on
# bytes that need no decoding (an encoded answer is still decoded within the cap).
_CLIENT_OPTIONS: dict[str, Any] = {
    "follow_redirects": False,
    "trust_env": False,
    "headers": {"Accept-Encoding": "identity"},
}

_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None
_local = threading.local()
_sync_clients: list[httpx.Client] = []
_async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
_closing: set[asyncio.Task[None]] = set()


def _shared_ssl_context() -> ssl.SSLContext:
    global _ssl_context
    with _lock:
        if _ssl_context is None:
            # Honours SSL_CERT_FILE / SSL_CERT_DIR, read once per process (until close()).
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def client() -> httpx.Client:
    """The calling thread's pooled, guarded ``httpx.Client`` (made on its first use). Its
    requests have httpx's per-wait timeouts only: ``request``/``call`` add the total deadline
    and read the answer for you."""
    found: httpx.Client | None = getattr(_local, "client", None)
    if found is None or found.is_closed:
        found = httpx.Client(
            transport=_Transport(_shared_ssl_context()), cookies=_NoCookies(), **_CLIENT_OPTIONS
        )
        _local.client = found
        with _lock:
            _sync_clients.append(found)
    return found


def async_client() -> httpx.AsyncClient:
    """The running event loop's pooled, guarded ``httpx.AsyncClient`` (connections cannot
    cross event loops)."""
    loop = asyncio.get_running_loop()
    found = _async_clients.get(loop)
    if found is None or found.is_closed:
        found = httpx.AsyncClient(
            transport=_AsyncTransport(_shared_ssl_context()),
            cookies=_NoCookies(),
            **_CLIENT_OPTIONS,
        )
        with _lock:
            for stale in [other for other in _async_clients if other.is_closed()]:
                del _async_clients[stale]
            _async_clients[loop] = found
    return found


def close() -> None:
    """Close every pool of this process (the core's ``shutdown`` hook calls it). An async
    client is closed on its own loop while that still runs. Clients made later start afresh,
    with the TLS settings (SSL_CERT_FILE) read again."""
    global _ssl_context
    with _lock:
        sync_clients = list(_sync_clients)
        async_clients = list(_async_clients.items())
        _sync_clients.clear()
        _async_clients.clear()
        _ssl_context = None
    for sync_client in sync_clients:
        sync_client.close()
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    for loop, async_client_ in async_clients:
        if loop is current:
            # Called from a coroutine on that loop: waiting here would block the close itself.
            task = loop.create_task(async_client_.aclose())
            _closing.add(task)  # asyncio keeps only a weak reference to a task
            task.add_done_callback(_closing.discard)
        elif loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(async_client_.aclose(), loop)
            with contextlib.suppress(Exception):
                closing.result(timeout=5)
        # else nothing can run its close any more; its sockets go with the loop


# --- requests and results ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _parsed_once(url: str) -> httpx.URL:
    return httpx.URL(url)


def _parsed(url: str | httpx.URL) -> httpx.URL:
    """``url`` parsed, once per URL (an action calls the same few URLs again and again, and
    parsing one costs more than the rest of building its request)."""
    return _parsed_once(url) if isinstance(url, str) else url


def request(
    method: str, url: str | httpx.URL, *, timeout: float | None = None, **httpx_kwargs: Any
) -> httpx.Response:
    """Send one request through this thread's client within one total deadline (``timeout``
    seconds, else the ``LINKTIME_HTTP_TIMEOUT`` setting) and return the answer, its body read
    up to ``max_response_bytes`` and its connection released.

    Raises ``Refused`` (the guard), ``httpx.TimeoutException``, ``httpx.TransportError`` (a name
    that does not resolve is an ``httpx.ConnectError`` saying so)."""
    total = settings().timeout if timeout is None else timeout
    with _deadline_of(total):
        return client().request(method, _parsed(url), timeout=total, **httpx_kwargs)


async def arequest(
    method: str, url: str | httpx.URL, *, timeout: float | None = None, **httpx_kwargs: Any
) -> httpx.Response:
    """``request`` on the running loop's async client."""
    total = settings().timeout if timeout is None else timeout
    with _deadline_of(total):
        return await async_client().request(method, _parsed(url), timeout=total, **httpx_kwargs)


def _failure(exc: Exception, url: str | httpx.URL, timeout: float | None) -> Result:
    """What a request that got no answer comes to."""
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        # The URL itself is wrong (an octal address, no http(s) scheme...): trying again
        # cannot help. Its text is left out: the URL may be a secret.
        return Result.fail(f"the URL cannot be called: {exc}", error_code="invalid_url")
    target = httpx.URL(url)
    host = target.host
    if isinstance(exc, Refused):
        return Result.fail(str(exc), error_code="ssrf_refused")
    if isinstance(exc, httpx.TimeoutException):
        total = settings().timeout if timeout is None else timeout
        return Result.retry(
            f"no complete answer from {host} within {total:g}s", error_code="timeout"
        )
    if isinstance(exc.__cause__, _Unresolved):
        return Result.retry(str(exc), error_code="dns_error")
    port = target.port or (443 if target.scheme == "https" else 80)
    return Result.retry(
        f"connection to {host}:{port} failed: {type(exc).__name__}: {exc}",
        error_code="connection_error",
    )


Answered = Callable[[httpx.Response], Result]


def _answered(response: httpx.Response, excerpt_bytes: int, answered: Answered | None) -> Result:
    if answered is not None:
        return answered(response)
    return Result.from_response(response, excerpt_bytes=excerpt_bytes)


def call(
    method: str,
    url: str | httpx.URL,
    *,
    timeout: float | None = None,
    excerpt_bytes: int = 1024,
    answered: Answered | None = None,
    **httpx_kwargs: Any,
) -> Result:
    """``request``, every outcome as a ``Result``: an answer by ``answered(response)`` (default:
    ``Result.from_response``, its excerpt ``excerpt_bytes`` long at most), for a plugin that
    reads more of it (a header); a URL that cannot be called fails (``invalid_url``); a refused
    target fails (``ssrf_refused``); a timeout, a name that does not resolve or a failed
    connection retries (``timeout``, ``dns_error``, ``connection_error``)."""
    try:
        response = request(method, url, timeout=timeout, **httpx_kwargs)
    except (Refused, httpx.TransportError, httpx.InvalidURL) as exc:
        return _failure(exc, url, timeout)
    return _answered(response, excerpt_bytes, answered)


async def acall(
    method: str,
    url: str | httpx.URL,
    *,
    timeout: float | None = None,
    excerpt_bytes: int = 1024,
    answered: Answered | None = None,
    **httpx_kwargs: Any,
) -> Result:
    """``call`` on the running loop's async client."""
    try:
        response = await arequest(method, url, timeout=timeout, **httpx_kwargs)
    except (Refused, httpx.TransportError, httpx.InvalidURL) as exc:
        return _failure(exc, url, timeout)
    return _answered(response, excerpt_bytes, answered)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date), else
    None."""
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


# --- step settings and readiness -----------------------------------------------------------------


def _http_url(value: str) -> str:
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
        raise ValueError("credentials in the URL are not supported (user:password@)")
    return value


URL = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
"""A step setting holding an http(s) URL: a host, no ``user:password@``, at most 2048
characters, surrounding blanks removed."""


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


def check_url(url: str) -> list[Problem]:
    """For an action's ``check``: a URL the guard would refuse whatever DNS says (an address,
    a numeric IPv4 form, a localhost name), or outbound HTTP set up wrongly on this server.
    Names are not resolved: their answer may change before sending, and a dry run must not
    wait on a resolver."""
    try:
        networks = settings().allowed_networks
    except ValueError:
        return [Problem.operator("Outbound HTTP is not set up correctly on this server.")]
    host = httpx.URL(url).host
    try:
        for ip in _addresses_without_resolver(host):
            _check_address(host, ip, networks)
    except Refused:
        return [
            Problem(
                f"{host} is a private address: this server does not call it.",
                "Use a public URL, or ask your administrator to allow that network.",
            )
        ]
    return []
