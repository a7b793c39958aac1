"""linktime.http against real servers on loopback: the address guard (DNS rebinding included),
pooling, the total deadline, no redirects, no cookies, and Result.from_response."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from linktime import OperatorSettingError, http
from linktime.actions import Outcome, Result
from linktime.testing import HttpReceiver, Reply
from pydantic import BaseModel, ValidationError

LOOPBACK = "127.0.0.0/8,::1/128"


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Default settings whatever the shell exports, and no pooled connection across tests."""
    for name in (
        "LINKTIME_HTTP_ALLOWED_NETWORKS",
        "LINKTIME_WEBHOOK_ALLOWED_NETWORKS",
        "LINKTIME_HTTP_TIMEOUT",
        "LINKTIME_HTTP_MAX_RESPONSE_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)
    http.close()
    yield
    http.close()


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", LOOPBACK)


class Listener:
    """A TCP listener on ``host`` that counts the connections it accepts and answers every
    request on them with a 200 (keep-alive)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                # One answer per request head (a body may come in a read of its own).
                heads = data.count(b"\r\n\r\n")
                self.requests += heads
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * heads)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def make(host: str = "127.0.0.1", port: int = 0) -> Listener:
        started.append(Listener(host, port))
        return started[-1]

    yield make
    for listener in started:
        listener.close()


def answers(monkeypatch: pytest.MonkeyPatch, name: str, *rounds: list[str]) -> list[str]:
    """Make ``name`` resolve to ``rounds[0]`` on the first lookup, ``rounds[1]`` on the next...
    (the last one from then on); returns the log of lookups of ``name``."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != name:
            return real(host, port, *args, **kwargs)
        ips = rounds[min(len(asked), len(rounds) - 1)]
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port)) for ip in ips
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the guard: DNS rebinding --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_name_rebinding_to_loopback_never_reaches_loopback(
    mode: str, listen: Callable[..., Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rebind.example first resolves to an allowed address (127.0.0.2 stands in for a public
    one: a test cannot reach the internet), then to 127.0.0.1, where a listener counts every
    connection. Whoever resolves the name a second time (to connect, or for a new
    connection) lands on 127.0.0.1; the guard connects to the address it vetted."""
    loopback = listen("127.0.0.1")
    public = listen("127.0.0.2", loopback.port)  # the same port on both addresses
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "127.0.0.2/32")
    asked = answers(monkeypatch, "rebind.example", ["127.0.0.2"], ["127.0.0.1"])
    url = f"http://rebind.example:{loopback.port}/"

    def both() -> tuple[Result, Result]:
        first = http.call("GET", url)
        http.close()  # the next request needs a new connection, so a new lookup
        return first, http.call("GET", url)

    async def both_async() -> tuple[Result, Result]:
        first = await http.acall("GET", url)
        await http.async_client().aclose()
        return first, await http.acall("GET", url)

    first, second = both() if mode == "sync" else run(both_async())
    assert (first.outcome, first.http_status) == (Outcome.SUCCEEDED, 200)
    assert (second.outcome, second.error_code) == (Outcome.FAILED, "ssrf_refused")
    assert second.error == (
        "refused: rebind.example resolves to 127.0.0.1, a loopback address "
        "(allow it with LINKTIME_HTTP_ALLOWED_NETWORKS)"
    )
    assert asked == ["rebind.example", "rebind.example"]  # one lookup per connection
    assert (public.connections, loopback.connections) == (1, 0)


def test_one_bad_answer_among_good_ones_refuses_the_target(
    monkeypatch: pytest.MonkeyPatch, listen: Callable[..., Listener]
) -> None:
    listener = listen()
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")
    answers(monkeypatch, "mixed.example", ["127.0.0.1", "10.1.2.3"])
    result = http.call("POST", f"http://mixed.example:{listener.port}/")
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "ssrf_refused")
    assert result.error == (
        "refused: mixed.example resolves to 10.1.2.3, a private address "
        "(allow it with LINKTIME_HTTP_ALLOWED_NETWORKS)"
    )
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("host", "ip", "kind"),
    [
        ("127.0.0.1", "127.0.0.1", "loopback"),
        ("[::1]", "::1", "loopback"),
        ("localhost", None, "loopback"),
        ("10.0.0.1", "10.0.0.1", "private"),
        ("169.254.169.254", "169.254.169.254", "link-local (cloud metadata)"),
        ("100.64.0.1", "100.64.0.1", "CGNAT"),
        ("224.0.0.1", "224.0.0.1", "multicast"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", "loopback"),
        ("[fe80::1]", "fe80::1", "link-local"),
        ("0.0.0.0", "0.0.0.0", "unspecified"),
        ("[fc00::1]", "fc00::1", "private"),
        ("[ff02::1]", "ff02::1", "multicast"),
        ("[2002:a00:1::]", "2002:a00:1::", "an IPv6 form of 10.0.0.1"),  # 6to4
        ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe", "an IPv6 form of 169.254.169.254"),
        ("198.18.0.1", "198.18.0.1", "private"),  # benchmarking, private to Python
        ("240.0.0.1", "240.0.0.1", "private"),  # reserved, private to Python
        # A trailing dot (a fully qualified name) is the same address, refused the same way.
        ("127.0.0.1.", "127.0.0.1", "loopback"),
        ("127.0.0.1..", "127.0.0.1", "loopback"),
        ("127.1.", "127.0.0.1", "loopback"),
        ("localhost.", None, "loopback"),
        ("10.0.0.1.", "10.0.0.1", "private"),
        ("169.254.169.254.", "169.254.169.254", "link-local"),
        ("2130706433.", "127.0.0.1", "loopback"),
        ("0x7f.1", "127.0.0.1", "loopback"),
    ],
)
def test_refused_targets_name_the_address_why_and_the_setting(
    host: str, ip: str | None, kind: str
) -> None:
    result = http.call("POST", f"http://{host}:8080/hook", timeout=5)
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "ssrf_refused")
    assert result.error is not None
    assert kind in result.error
    assert "LINKTIME_HTTP_ALLOWED_NETWORKS" in result.error
    if ip:
        assert ip in result.error
    with pytest.raises(http.Refused):
        http.request("GET", f"http://{host}:8080/")


def test_an_ip_literal_is_vetted_without_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("an IP literal went to the resolver")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(http.Refused, match=r"^refused: 10\.0\.0\.1 is a private address"):
        http.request("GET", "http://10.0.0.1/")


@pytest.mark.parametrize(
    ("allowed", "target"),
    [
        ("127.0.0.0/8", "127.0.0.1"),
        ("127.0.0.0/8", "[::ffff:127.0.0.1]"),  # the IPv4 network covers its mapped form
    ],
)
def test_the_allow_list_lets_a_network_through(
    allowed: str, target: str, monkeypatch: pytest.MonkeyPatch, listen: Callable[..., Listener]
) -> None:
    listener = listen()
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", allowed)
    result = http.call("GET", f"http://{target}:{listener.port}/")
    assert (result.outcome, result.http_status) == (Outcome.SUCCEEDED, 200), result.error


def test_the_allow_list_is_read_from_the_older_webhook_variable_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINKTIME_WEBHOOK_ALLOWED_NETWORKS", " 10.0.0.0/8 , fd00::/8 ")
    assert [str(n) for n in http.settings().allowed_networks] == ["10.0.0.0/8", "fd00::/8"]
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")  # the new name wins
    assert [str(n) for n in http.settings().allowed_networks] == ["127.0.0.0/8"]


def test_a_bad_allow_list_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "10.0.0.1/8")
    with pytest.raises(OperatorSettingError, match="LINKTIME_HTTP_ALLOWED_NETWORKS") as caught:
        http.call("GET", "https://hooks.example.com/")
    assert "10.0.0.1/8 has host bits set" in str(caught.value)


# --- pooling, deadline, redirects, cookies, size -------------------------------------------------


@pytest.mark.usefixtures("allow_loopback")
def test_requests_reuse_one_pooled_connection(listen: Callable[..., Listener]) -> None:
    listener = listen()
    url = f"http://127.0.0.1:{listener.port}/"

    async def three() -> list[Result]:
        return [await http.acall("POST", url, content=b"x") for _ in range(3)]

    sync = [http.call("POST", url, content=b"x") for _ in range(3)]
    assert [r.outcome for r in sync] == [Outcome.SUCCEEDED] * 3
    assert (listener.requests, listener.connections) == (3, 1)
    assert [r.outcome for r in run(three())] == [Outcome.SUCCEEDED] * 3
    assert (listener.requests, listener.connections) == (6, 2)  # the event loop's own pool


@pytest.mark.usefixtures("allow_loopback")
def test_a_plugin_reads_the_answer_itself(listen: Callable[..., Listener]) -> None:
    """``answered`` makes the Result from the response (a header of it, say), sync and async;
    failures that got no answer stay the core's."""
    url = f"http://127.0.0.1:{listen().port}/"

    def answered(response: httpx.Response) -> Result:
        return Result.ok(external_id=f"answered {response.status_code}")

    async def once() -> Result:
        return await http.acall("POST", url, content=b"x", answered=answered)

    assert http.call("POST", url, content=b"x", answered=answered).external_id == "answered 200"
    assert run(once()).external_id == "answered 200"
    refused = http.call("GET", "http://127.0.0.1:1/", answered=answered)
    assert refused.outcome is Outcome.RETRY and refused.error_code == "connection_error"


def test_each_thread_has_its_own_client() -> None:
    mine = http.client()
    assert http.client() is mine
    others: list[httpx.Client] = []
    thread = threading.Thread(target=lambda: others.append(http.client()))
    thread.start()
    thread.join()
    assert others and others[0] is not mine
    http.close()
    assert mine.is_closed and others[0].is_closed
    assert http.client() is not mine


DRIPS = 40  # bytes of a dripped answer, one every 50 ms: complete after 2 s at the soonest


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("head", "tail"),
    [
        # a header 40 bytes long, then the end of the headers
        (b"HTTP/1.1 200 OK\r\nX-Drip: ", b"\r\nContent-Length: 0\r\n\r\n"),
        # a body of 40 bytes
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % DRIPS, b""),
    ],
    ids=["headers", "body"],
)
def test_a_dripping_server_is_cut_off_at_the_deadline(mode: str, head: bytes, tail: bytes) -> None:
    """Each byte arrives well within a per-read timeout, and the whole answer, a 200, is
    complete after 2 s: four times the 0.5 s deadline. Held to the deadline, the request gives
    up first; one that is not gets the 200."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(head)
                for _ in range(DRIPS):
                    if stop.is_set():
                        return
                    conn.sendall(b"x")
                    time.sleep(0.05)
                conn.sendall(tail)
            except OSError:  # the client hung up
                return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    started = time.monotonic()
    try:
        if mode == "sync":
            result = http.call("GET", url, timeout=0.5)
        else:
            result = run(http.acall("GET", url, timeout=0.5))
    finally:
        stop.set()
        listener.close()
        thread.join(5)
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")
    assert result.error == "no complete answer from 127.0.0.1 within 0.5s"
    assert time.monotonic() - started < 1.9


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_slow_resolver_is_cut_off_at_the_deadline(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup of slow.example would answer after 5 s; a request with a 1 s deadline gives
    up long before (the lookup is let go at the end of the test)."""
    real = socket.getaddrinfo
    released = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "slow.example":
            released.wait(5)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = "http://slow.example/"
    started = time.monotonic()
    try:
        result = (
            http.call("GET", url, timeout=1)
            if mode == "sync"
            else run(http.acall("GET", url, timeout=1))
        )
        elapsed = time.monotonic() - started
    finally:
        released.set()
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "timeout")
    assert elapsed < 4


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_redirect_is_not_followed(mode: str, http_receiver: HttpReceiver) -> None:
    target = f"{http_receiver.url}/elsewhere"
    http_receiver.script("/hook", Reply(302, "", {"Location": target}))
    url = f"{http_receiver.url}/hook"
    result = http.call("POST", url) if mode == "sync" else run(http.acall("POST", url))
    assert (result.outcome, result.error_code, result.http_status) == (
        Outcome.FAILED,
        "http_302",
        302,
    )
    assert result.error == (
        f"127.0.0.1 answered 302 Found, a redirect to {target}; redirects are not followed: "
        "set the URL to the final address"
    )
    assert [r.path for r in http_receiver.requests] == ["/hook"]


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cookies_are_neither_kept_nor_sent(mode: str, http_receiver: HttpReceiver) -> None:
    http_receiver.default = Reply(200, "ok", {"Set-Cookie": "session=tenant-a; Path=/"})
    url = f"{http_receiver.url}/hook"

    async def twice() -> None:
        await http.arequest("GET", url)
        await http.arequest("GET", url)

    if mode == "sync":
        http.request("GET", url)
        http.request("GET", url)
    else:
        run(twice())
    assert [r.headers.get("cookie") for r in http_receiver.requests] == [None, None]


@pytest.mark.usefixtures("allow_loopback")
def test_only_max_response_bytes_of_a_body_are_read(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_MAX_RESPONSE_BYTES", "1000")
    http_receiver.default = Reply(200, b"y" * 100_000)
    url = f"{http_receiver.url}/big"
    assert http.request("GET", url).content == b"y" * 1000
    assert run(http.arequest("GET", url)).content == b"y" * 1000
    assert http.call("GET", url, excerpt_bytes=5000).response_excerpt == "y" * 1000


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def deflated(data: bytes) -> bytes:
    return zlib.compress(data, 9)


BOMB = b"\0" * (100 << 20)  # 100 MiB of zeros: about 100 KiB gzipped once, 300 bytes twice


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzipped(BOMB)),
        ("gzip, gzip", gzipped(gzipped(BOMB))),
        ("deflate", deflated(BOMB)),
        ("deflate, gzip", gzipped(deflated(BOMB))),
    ],
)
def test_an_encoded_body_is_capped_once_decoded(
    mode: str,
    coding: str,
    body: bytes,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compression bomb sent although the request asked for no encoding: what the caller
    gets is decoded, and at most the cap."""
    monkeypatch.setenv("LINKTIME_HTTP_MAX_RESPONSE_BYTES", "70000")
    http_receiver.default = Reply(200, body, {"Content-Encoding": coding})
    url = f"{http_receiver.url}/bomb"
    response = http.request("GET", url) if mode == "sync" else run(http.arequest("GET", url))
    assert len(response.content) == 70000
    assert not response.content.strip(b"\0")
    assert "content-encoding" not in response.headers
    assert http_receiver.requests[0].headers["accept-encoding"] == "identity"


def test_a_small_encoded_body_is_decoded_whole(http_receiver: HttpReceiver) -> None:
    http_receiver.default = Reply(200, gzipped(b"hello"), {"Content-Encoding": "gzip"})
    result = http.call("GET", f"{http_receiver.url}/small", headers={"Accept-Encoding": "gzip"})
    assert result.response_excerpt == "hello"
    assert http_receiver.requests[0].headers["accept-encoding"] == "gzip"


def test_a_body_in_a_coding_not_decoded_is_not_read(http_receiver: HttpReceiver) -> None:
    http_receiver.default = Reply(200, b"\x8b\x01\x80binary", {"Content-Encoding": "br"})
    result = run(http.acall("GET", f"{http_receiver.url}/br"))
    assert result.response_excerpt == (
        "(the answer's body is br-encoded, which linktime.http does not decode: not read)"
    )


def test_a_corrupt_encoded_body_says_so(http_receiver: HttpReceiver) -> None:
    http_receiver.default = Reply(200, b"not gzip at all", {"Content-Encoding": "gzip"})
    result = http.call("GET", f"{http_receiver.url}/corrupt")
    assert result.error_code == "connection_error"
    assert result.error is not None and "the answer's gzip body is corrupt" in result.error


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://0177.0.0.1:18099/x", "Invalid IPv4 address: '0177.0.0.1'"),
        ("http://[::1/x", "Invalid port"),
        ("ftp://example.com/", "unsupported protocol 'ftp://'"),
        ("example.com/hook", "missing an 'http://' or 'https://' protocol"),
    ],
)
def test_a_url_that_cannot_be_called_fails_as_invalid_url(
    mode: str, url: str, problem: str
) -> None:
    result = http.call("GET", url) if mode == "sync" else run(http.acall("GET", url))
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "invalid_url")
    assert result.error is not None and problem in result.error


def test_a_name_that_does_not_resolve_retries_as_dns_error() -> None:
    result = http.call("GET", "http://no-such-host.invalid/")
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "dns_error")
    assert result.error is not None and "could not resolve no-such-host.invalid" in result.error
    with pytest.raises(httpx.ConnectError, match="could not resolve"):
        http.request("GET", "http://no-such-host.invalid/")


@pytest.mark.usefixtures("allow_loopback")
def test_a_closed_port_retries_as_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        result = run(http.acall("GET", f"http://127.0.0.1:{port}/"))
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "connection_error")
    assert result.error is not None and f"127.0.0.1:{port}" in result.error


# --- Result.from_response and Retry-After ---------------------------------------------------------


def answer(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.Response(
        status, content=body, headers=headers, request=httpx.Request("POST", "https://h.example/")
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCEEDED),
        (204, Outcome.SUCCEEDED),
        (408, Outcome.RETRY),
        (425, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (301, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.FAILED),
        (404, Outcome.FAILED),
        (410, Outcome.FAILED),
        (422, Outcome.FAILED),
    ],
)
def test_from_response_maps_each_status(status: int, outcome: Outcome) -> None:
    result = Result.from_response(answer(status, b"said"))
    assert (result.outcome, result.http_status, result.response_excerpt) == (
        outcome,
        status,
        "said",
    )
    assert result.error_code == (None if outcome is Outcome.SUCCEEDED else f"http_{status}")


def test_from_response_says_who_answered_what_and_when_to_retry() -> None:
    result = Result.from_response(answer(503, b"down", **{"Retry-After": "120"}))
    assert result.error == "h.example answered 503 Service Unavailable"
    assert result.retry_after == 120
    later = format_datetime(datetime.now(UTC).replace(microsecond=0), usegmt=True)
    assert Result.from_response(answer(429, **{"Retry-After": later})).retry_after == 0
    assert Result.from_response(answer(429)).retry_after is None


def test_from_response_keeps_an_excerpt_of_excerpt_bytes() -> None:
    result = Result.from_response(answer(200, "é".encode() * 600), excerpt_bytes=11)
    assert result.response_excerpt == "ééééé\ufffd"
    assert Result.from_response(answer(200)).response_excerpt is None


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert http.retry_after(" 30 ", now) == 30
    assert http.retry_after("Tue, 24 Nov 2026 10:01:30 GMT", now) == 90
    assert http.retry_after("Tue, 24 Nov 2026 09:00:00 GMT", now) == 0
    assert http.retry_after("soon", now) is None
    assert http.retry_after(None, now) is None
    assert http.retry_after("²", now) is None and http.retry_after("٣", now) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("²", None),
    ],
)
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert http.retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = http.retry_after(format_datetime(datetime.now(UTC) + timedelta(seconds=90), True))
    assert later is not None and 85 <= later <= 90
    assert http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- URL and check_url ---------------------------------------------------------------------------


class Step(BaseModel):
    url: http.URL


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "scheme must be http or https, not ftp"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("hooks.example.com/x", "scheme must be http or https: start it with https://"),
        ("http:///path", "no host"),
        ("https://user:pw@hooks.example.com/", "credentials in the URL are not supported"),
        ("https://hooks.example.com/" + "x" * 2048, "at most 2048 characters"),
    ],
)
def test_url_refuses_what_cannot_be_called(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        Step(url=url)
    assert [e["loc"] for e in caught.value.errors()] == [("url",)]


def test_url_keeps_a_good_one_without_its_blanks() -> None:
    assert Step(url=" https://hooks.example.com/in?x=1 ").url == "https://hooks.example.com/in?x=1"


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://localhost/", True),
        ("http://hooks.LOCALHOST./", True),
        ("http://2130706433/", True),
        ("http://0x7f.1/", True),
        ("http://10.1/", True),
        ("http://[::1]/", True),
        ("https://8.8.8.8/", False),
        ("https://hooks.example.com/", False),  # a name: resolved when sending
    ],
)
def test_check_url_names_what_the_guard_refuses_without_resolving(
    url: str, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_url went to the resolver")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    problems = http.check_url(url)
    assert bool(problems) is refused
    if refused:
        host = httpx.URL(url).host
        assert problems[0].message == f"{host} is a private address: this server does not call it."


def test_check_url_allows_what_the_operator_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "10.0.0.0/8")
    assert http.check_url("http://10.1.2.3/") == []
    assert ipaddress.ip_address("10.1.2.3") in http.settings().allowed_networks[0]
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "not a network")
    [problem] = http.check_url("http://10.1.2.3/")
    assert problem.fix == "Contact your administrator."


# --- closing the pools ------------------------------------------------------------------------


def test_the_core_shutdown_closes_every_pool(http_receiver: HttpReceiver, tmp_path: Any) -> None:
    """Sync clients and the async client of the plugins' loop (closed on that loop)."""
    from linktime import lifecycle, loop, plugins
    from linktime.settings import Settings

    async def used() -> httpx.AsyncClient:
        await http.acall("GET", f"{http_receiver.url}/a")
        return http.async_client()

    async_client = loop.run(used())
    sync_client = http.client()
    http.call("GET", f"{http_receiver.url}/s")
    context = lifecycle.ProcessContext(
        frozenset({"worker"}), Settings(data_dir=tmp_path, secret_key="test-secret")
    )
    lifecycle.stop(plugins.load(""), context)
    assert sync_client.is_closed and async_client.is_closed
    assert http.call("GET", f"{http_receiver.url}/again").outcome is Outcome.SUCCEEDED


@pytest.mark.usefixtures("allow_loopback")
def test_close_from_a_coroutine_closes_its_own_loop_s_client(http_receiver: HttpReceiver) -> None:
    async def close_inside() -> httpx.AsyncClient:
        await http.acall("GET", f"{http_receiver.url}/a")
        client = http.async_client()
        http.close()
        await asyncio.sleep(0)  # the close runs as a task of this loop
        await asyncio.sleep(0)
        return client

    assert asyncio.run(asyncio.wait_for(close_inside(), 5)).is_closed
