"""A fast loopback webhook receiver for the benchmarks, in its own process.

A raw asyncio ``Protocol`` speaking just enough HTTP/1.1 (keep-alive, Content-Length bodies,
pipelining) to answer every request ``200 ok`` at well over 10,000 requests/s on one core, so
that it is never what a benchmark measures. Per request it records the arrival time and the
latency from the ``"sent_at": <unix seconds>`` number found in the body (the sender's clock is
the same machine's ``time.time()``), plus the ``webhook-id`` header to spot duplicates.

The bench process drives it over a ``multiprocessing`` pipe: ``count``, ``collect``, ``reset``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import re
import signal
import socket
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
# Compact JSON (both senders use separators=(",", ":")), but allow spaces to be safe.
_SENT_AT = re.compile(rb'"sent_at":\s*(-?[0-9][0-9.eE+-]*)')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_WEBHOOK_ID = re.compile(rb"\r\nwebhook-id:\s*([^\r]+)", re.IGNORECASE)
_MAX_HEAD = 64 * 1024


@dataclass
class Stats:
    """What the bench process gets back from ``collect``."""

    arrivals: list[float] = field(default_factory=list)  # time.time() of each request
    latencies: list[float] = field(default_factory=list)  # seconds, from body's sent_at
    # The same latencies by request path: a workflow's first step has a path of its own.
    by_path: dict[str, list[float]] = field(default_factory=dict)
    without_timestamp: int = 0
    duplicates: int = 0  # requests whose webhook-id was seen before


class _Recorder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # array('d') rather than lists of floats: cheap appends, cheap to pickle back.
        self.arrivals = array("d")
        self.latencies = array("d")
        self.by_path: dict[bytes, array[float]] = {}
        self.without_timestamp = 0
        self.duplicates = 0
        self.ids: set[bytes] = set()

    def record(self, head: bytes, body: bytes) -> None:
        now = time.time()
        self.arrivals.append(now)
        m = _SENT_AT.search(body)
        if m is None:
            self.without_timestamp += 1
        else:
            latency = now - float(m.group(1))
            self.latencies.append(latency)
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            self.by_path.setdefault(path, array("d")).append(latency)
        wid = _WEBHOOK_ID.search(head)
        if wid is not None:
            key = wid.group(1).strip()
            if key in self.ids:
                self.duplicates += 1
            else:
                self.ids.add(key)


class _Http(asyncio.Protocol):
    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small responses must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        answered = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._close()
                break
            head = bytes(self.buf[: end + 2])  # keep the last CRLF so header regexes anchor
            m = _CONTENT_LENGTH.search(head)
            length = int(m.group(1)) if m else 0
            total = end + 4 + length
            if len(self.buf) < total:
                break
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            self.recorder.record(head, body)
            answered += 1
        if answered and self.transport is not None:
            # One write for everything this read completed (pipelined requests).
            self.transport.write(RESPONSE * answered)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _serve(sock: socket.socket, control: multiprocessing.connection.Connection) -> None:
    """Child process entry: serve on the inherited listening socket until told to stop."""
    # A terminal's Ctrl-C reaches the whole process group: the bench process stops us itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        recorder = _Recorder()
        server = await loop.create_server(lambda: _Http(recorder), sock=sock, backlog=1024)
        stopped = asyncio.Event()

        def on_command() -> None:
            try:
                cmd = control.recv()
            except EOFError:  # the bench process went away
                stopped.set()
                return
            if cmd == "count":
                control.send(len(recorder.arrivals))
            elif cmd == "collect":
                control.send(
                    Stats(
                        arrivals=recorder.arrivals.tolist(),
                        latencies=recorder.latencies.tolist(),
                        by_path={p.decode(): a.tolist() for p, a in recorder.by_path.items()},
                        without_timestamp=recorder.without_timestamp,
                        duplicates=recorder.duplicates,
                    )
                )
            elif cmd == "reset":
                recorder.reset()
                control.send(True)
            elif cmd == "stop":
                stopped.set()
                control.send(True)

        loop.add_reader(control.fileno(), on_command)
        control.send("ready")
        await stopped.wait()
        loop.remove_reader(control.fileno())
        server.close()

    asyncio.run(main())


class Receiver:
    """Handle on the receiver process. Use as a context manager; every call is time-bounded."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        # Bind here so the port is known (and taken) before the child starts.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # spawn, not fork: the bench process may already hold threads and sockets.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(self._sock, child), name="bench-receiver", daemon=True
        )

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None, "not started"
        return self._proc.pid

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._proc.start()
        if self._ask_raw(None) != "ready":
            raise RuntimeError("receiver did not start")

    def _ask_raw(self, cmd: str | None) -> Any:
        if cmd is not None:
            self._conn.send(cmd)
        if not self._conn.poll(self.timeout):
            raise TimeoutError(f"receiver did not answer {cmd or 'start'} in {self.timeout}s")
        return self._conn.recv()

    def count(self) -> int:
        return int(self._ask_raw("count"))

    def collect(self) -> Stats:
        stats = self._ask_raw("collect")
        assert isinstance(stats, Stats)
        return stats

    def reset(self) -> None:
        self._ask_raw("reset")

    def wait_for(self, n: int, timeout: float, check: Any = None) -> int:
        """Poll until ``n`` requests arrived; ``check()`` may raise to fail fast (a dead
        worker). Returns the count; raises TimeoutError past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.count()
            if got >= n:
                return got
            if check is not None:
                check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {got} of {n} requests arrived within {timeout:g}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send("stop")
                self._conn.poll(2)
            except (OSError, EOFError):
                pass
            self._proc.join(3)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(3)
        self._conn.close()
        self._sock.close()


def self_test(url: str, requests: int = 20_000, connections: int = 32) -> float:
    """Requests/s the receiver answers from a raw asyncio client of ``connections`` keep-alive
    connections sending ~2 KB bodies one at a time each (the client is in this process, so the
    figure is a lower bound for the receiver)."""
    host, port = url.removeprefix("http://").split(":")
    body = b'{"sent_at":0,"pad":"' + b"x" * 2000 + b'"}'
    request = (
        b"POST /selftest HTTP/1.1\r\nHost: %b\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (host.encode(), len(body), body)
    )
    per_conn = requests // connections

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(per_conn):
            writer.write(request)
            await reader.readexactly(len(RESPONSE))
        writer.close()
        await writer.wait_closed()

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(connections))), 60)
        return per_conn * connections / (time.perf_counter() - t0)

    return asyncio.run(main())


if __name__ == "__main__":
    with Receiver() as r:
        rate = self_test(r.url)
        print(f"receiver self-test: {rate:,.0f} req/s ({r.count()} requests)")
