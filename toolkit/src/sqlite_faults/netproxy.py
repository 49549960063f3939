"""Network faults between clients and an HTTP service: a TCP proxy of our own, in its own
process, driven over its stdin.

Toxiproxy and `tc netem` are not available on the machines the report runs on, so the report
puts this proxy between its load generator and the service. It forwards HTTP/1.1 cleartext
on loopback and injects one fault at a time. It runs in a process of its own so that its CPU
never shares the load generator's event loop (a proxy starved by its own clients would add
latency nobody asked for):

    python -m sqlite_faults.netproxy --upstream 127.0.0.1:8000 --seed 7 [--listen-port 0]

It binds 127.0.0.1 (port 0: a free one), prints `{"port": N}` on stdout, then reads one JSON
command per line on stdin and answers each with one JSON line on stdout, so the parent can
wait for the ack before it measures anything:

    {"op": "set", "fault": "latency", "ms": 50}   -> {"ok": true, "fault": "latency", ...}
    {"op": "clear"}                                -> {"ok": true, ...}
    {"op": "stats"}                                -> {"ok": true, "stats": {...}}
    {"op": "requests"}                             -> {"ok": true, "requests": {...}}
    {"op": "stop"}                                 (EOF on stdin stops it too)

A refused command answers `{"ok": false, "error": "..."}`. `NetworkFaults` (below) is the
parent's side.

How faults act. Each accepted client connection gets its own upstream connection (if that
connect fails the client connection is reset: SO_LINGER 0, then close; the proxy carries on,
so a service restarted on the same port is reached again by the next connection). A chunk is
one read() of up to 64 KiB from a socket; each direction of each connection has a queue and a
pump task that writes the chunks in the order they were read, each no earlier than its
release time. A delay therefore never reorders bytes within a connection and direction: a
chunk drawn a short delay behind one drawn a long delay waits for it, as TCP's in-order
delivery would. A fault applies to chunks read after it was set. Faults (FAULTS below):

- latency: a constant `ms` on every chunk in both directions.
- latency-pulses: pulses of `pulse_ms`, each adding one delay drawn U(`low_ms`, `high_ms`)
  to every chunk read during it, separated by gaps of `gap_ms` with no extra delay; the
  schedule starts with a pulse when the fault is set.
- jitter: every chunk delayed U(0, `ms`), order kept.
- bandwidth: each connection's bytes paced to `kib_per_s` per direction by a token bucket
  with a burst of one MSS (1460 bytes): a slow link per client.
- packet-loss: with `probability` a chunk is "lost". Under TCP a lost segment is
  retransmitted, so above TCP a loss is never missing bytes: it is that chunk, and
  everything behind it on that connection and direction, held back for one retransmission
  timeout (`rto_ms`, 200 by default: Linux's minimum RTO). The model ignores exponential
  backoff on repeated loss and the congestion window's shrinking.
- blackhole: while set, nothing is forwarded and nothing is answered. Bytes read on any
  connection during the hole are discarded and that connection is condemned: it stays
  silent until the client closes it, and nothing later is forwarded on it (a byte stream
  with a hole in it cannot be resumed); its upstream side is closed at once. Connections
  accepted during the hole are condemned too (their connect succeeds: the kernel completes
  the handshake before any accept). An idle connection that sends nothing during the hole
  survives it, as a TCP connection does through a short partition. After `clear`, new
  connections work normally. This models a partition that outlasts the client's patience:
  clients see read timeouts, not resets.
- http-500: with `probability` per HTTP request the proxy answers the request itself
  (500, a JSON error body, `Connection: close`) and closes that connection; the request is
  never forwarded, so an injected 500 never reaches the service. A request starts with a
  client-to-upstream chunk that begins with a method token and a space (GET, POST, PUT,
  PATCH, DELETE, HEAD, OPTIONS). This relies on clients sending one request at a time per
  connection (no pipelining) and on a request's first bytes arriving at the start of a read,
  which holds for HTTP/1.1 clients that wait for each response.

Requests that carry an `X-Request-Id` header are logged: when the proxy wrote the request's
first chunk to the service, when it read the first chunk of the service's answer, and the
answer's status (the proxy's clock is CLOCK_MONOTONIC, the same as `time.monotonic()` in any
process on the machine). `requests` returns the log and empties it:
`{id: [forwarded_at, answered_at, status]}`, null where it did not happen. What lies between
the two times is the service's own time, whatever the network faults added around it; a
request missing from the log never reached the service or was cut off from it (a black hole
took it, or its answer; or the proxy answered it). The report judges network scenarios by it.

Every random choice comes from `random.Random(seed)`: each `set` derives the fault's own
generator from it, so a run with the same seed, the same sequence of `set`s and the same
order of traffic (e.g. sequential requests) makes the same decisions.

What it cannot do: TLS, HTTP/2 (frames are not requests), pipelined requests, anything below
TCP (no real packet is dropped, no SYN is lost), anything but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import queue
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any, ClassVar

from sqlite_faults.errors import SqliteFaultsError

CHUNK = 64 * 1024  # one read()
MSS = 1460  # the token bucket's burst: one Ethernet-sized segment
QUEUE_CHUNKS = 32  # per direction: a full queue stops reading, so the sender feels backpressure
LINGER_S = 5.0  # after an injected 500: how long a client that does not close is waited for

FAULTS: dict[str, str] = {
    "latency": "a constant `ms` added to every chunk, both directions",
    "latency-pulses": "pulses of `pulse_ms` adding U(`low_ms`, `high_ms`) (one draw per "
                      "pulse) to every chunk, then `gap_ms` without; repeated",
    "jitter": "every chunk delayed U(0, `ms`), byte order kept",
    "bandwidth": "each connection paced to `kib_per_s` per direction (token bucket, "
                 "1 MSS burst)",
    "packet-loss": "with `probability` a chunk is lost: TCP retransmits it, so it and all "
                   "behind it on its connection wait `rto_ms`; never missing bytes",
    "blackhole": "nothing forwarded or answered; a connection with traffic in the hole stays "
                 "silent until its client gives up (read timeouts, not resets)",
    "http-500": "with `probability` per request the proxy answers 500 itself and closes "
                "the connection; the service never sees that request",
}

INJECTED_BODY = (b'{"error":{"code":"proxy_injected_500",'
                 b'"message":"injected by the fault proxy"}}')
INJECTED_500 = (b"HTTP/1.1 500 Internal Server Error\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(INJECTED_BODY)).encode() + b"\r\n"
                b"Connection: close\r\n\r\n" + INJECTED_BODY)
_REQUEST_START = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) ")
_REQUEST_ID = re.compile(rb"\r\nx-request-id:[ \t]*([^\r\n]{1,64})", re.IGNORECASE)

STATS_KEYS = (
    "connections_accepted", "connections_open", "upstream_connect_failures",
    "chunks_to_upstream", "chunks_to_client", "bytes_to_upstream", "bytes_to_client",
    "chunks_delayed", "connections_blackholed", "bytes_discarded", "http_requests_seen",
    "http_500_injected",
)


# --- the fault models (in the proxy's process) -----------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What a fault decided for one chunk when it was read."""

    delay_s: float = 0.0
    rate: float | None = None  # bytes per second, for pacing


class _Fault:
    name: ClassVar[str]
    # parameter -> default (None: required)
    params: ClassVar[dict[str, float | None]] = {}

    def __init__(self, values: dict[str, float], rng: random.Random, now: float) -> None:
        self.values = values
        self.rng = rng
        self.started = now

    def plan(self, now: float) -> _Plan:
        return _Plan()


class _Latency(_Fault):
    name = "latency"
    params: ClassVar[dict[str, float | None]] = {"ms": None}

    def plan(self, now: float) -> _Plan:
        return _Plan(self.values["ms"] / 1000)


class _LatencyPulses(_Fault):
    name = "latency-pulses"
    params: ClassVar[dict[str, float | None]] = {
        "low_ms": 150, "high_ms": 250, "pulse_ms": 1000, "gap_ms": 1000}

    def __init__(self, values: dict[str, float], rng: random.Random, now: float) -> None:
        super().__init__(values, rng, now)
        if values["low_ms"] > values["high_ms"]:
            raise ValueError("latency-pulses: low_ms must not exceed high_ms")
        if values["pulse_ms"] <= 0:
            raise ValueError("latency-pulses: pulse_ms must be > 0")
        self._draws: list[float] = []

    def plan(self, now: float) -> _Plan:
        pulse, gap = self.values["pulse_ms"] / 1000, self.values["gap_ms"] / 1000
        index, into = divmod(now - self.started, pulse + gap)
        if into >= pulse:
            return _Plan()
        # One draw per pulse, in pulse order (also for pulses nobody sent during), so pulse k's
        # delay depends on the seed alone, not on when traffic happened to arrive.
        while len(self._draws) <= int(index):
            self._draws.append(self.rng.uniform(self.values["low_ms"], self.values["high_ms"]))
        return _Plan(self._draws[int(index)] / 1000)


class _Jitter(_Fault):
    name = "jitter"
    params: ClassVar[dict[str, float | None]] = {"ms": 100}

    def plan(self, now: float) -> _Plan:
        return _Plan(self.rng.uniform(0, self.values["ms"]) / 1000)


class _Bandwidth(_Fault):
    name = "bandwidth"
    params: ClassVar[dict[str, float | None]] = {"kib_per_s": 4}

    def __init__(self, values: dict[str, float], rng: random.Random, now: float) -> None:
        super().__init__(values, rng, now)
        if values["kib_per_s"] <= 0:
            raise ValueError("bandwidth: kib_per_s must be > 0")

    def plan(self, now: float) -> _Plan:
        return _Plan(rate=self.values["kib_per_s"] * 1024)


class _PacketLoss(_Fault):
    name = "packet-loss"
    params: ClassVar[dict[str, float | None]] = {"probability": 0.05, "rto_ms": 200}

    def plan(self, now: float) -> _Plan:
        lost = self.rng.random() < self.values["probability"]
        return _Plan(self.values["rto_ms"] / 1000 if lost else 0.0)


class _Blackhole(_Fault):
    name = "blackhole"


class _Http500(_Fault):
    name = "http-500"
    params: ClassVar[dict[str, float | None]] = {"probability": 0.05}

    def inject(self) -> bool:
        return self.rng.random() < self.values["probability"]


_FAULT_CLASSES: dict[str, type[_Fault]] = {cls.name: cls for cls in (
    _Latency, _LatencyPulses, _Jitter, _Bandwidth, _PacketLoss, _Blackhole, _Http500)}
assert set(_FAULT_CLASSES) == set(FAULTS)


def _make_fault(name: Any, given: dict[str, Any], rng: random.Random, now: float) -> _Fault:
    """The fault `name` with `given` parameters checked against its own: a mistake is named
    (ValueError) rather than silently ignored, since a misspelt knob would leave a scenario
    measuring the default."""
    cls = _FAULT_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
    unknown = sorted(set(given) - set(cls.params))
    if unknown:
        takes = ", ".join(cls.params) or "no parameters"
        raise ValueError(f"{cls.name}: unknown parameter(s) {unknown} (takes: {takes})")
    values: dict[str, float] = {}
    for key, default in cls.params.items():
        value = given.get(key, default)
        if value is None:
            raise ValueError(f"{cls.name}: parameter {key!r} is required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{cls.name}: {key} must be a number, got {value!r}")
        if value < 0 or (key == "probability" and value > 1):
            raise ValueError(f"{cls.name}: {key} out of range: {value!r}")
        values[key] = float(value)
    return cls(values, rng, now)


# --- the proxy ---------------------------------------------------------------------------------


class _Eof:
    """The source closed its sending side: pass the half-close on, in order."""


class _Close:
    """Close the destination once everything queued before has been written."""


@dataclass
class _Chunk:
    data: bytes
    release_at: float
    rate: float | None = None
    delayed: bool = False
    request_id: str | None = None  # the first chunk of a logged request


_Item = _Chunk | _Eof | _Close


class _Bucket:
    """A token bucket: `rate` bytes per second, at most one MSS of burst."""

    def __init__(self) -> None:
        self.tokens = float(MSS)
        self.at: float | None = None

    async def take(self, n: int, rate: float, loop: asyncio.AbstractEventLoop) -> bool:
        now = loop.time()
        if self.at is not None:
            self.tokens = min(float(MSS), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= n:
            self.tokens -= n
            return False
        wait = (n - self.tokens) / rate
        await asyncio.sleep(wait)
        self.tokens, self.at = 0.0, now + wait
        return True


@dataclass
class _Direction:
    to_upstream: bool
    queue: asyncio.Queue[_Item] = field(default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    last_release: float = 0.0
    bucket: _Bucket = field(default_factory=_Bucket)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer sees a reset rather than an orderly close."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    def __init__(self, proxy: Proxy, client_r: asyncio.StreamReader,
                 client_w: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client_r, self.client_w = client_r, client_w
        self.upstream_w: asyncio.StreamWriter | None = None
        self.condemned = False  # black-holed: silent until the client closes
        self.upstream_gone = False  # condemned, or answered by the proxy itself
        self.up = _Direction(to_upstream=True)
        self.down = _Direction(to_upstream=False)
        self.upstream_reader: asyncio.Task[None] | None = None
        # Logged requests forwarded and not yet answered, oldest first (no pipelining, so
        # the next answer from the service is the oldest one's).
        self.awaiting: collections.deque[str] = collections.deque()

    def condemn(self) -> None:
        if self.condemned:
            return
        self.condemned = self.upstream_gone = True
        self.proxy.stats["connections_blackholed"] += 1
        # Requests the service had and had not answered: the hole cut them off, and an answer
        # it sends now is never read. They are the network's, not the service's: out of the
        # log, as if never forwarded.
        while self.awaiting:
            self.proxy.requests.pop(self.awaiting.popleft(), None)
        if self.upstream_w is not None:
            self.upstream_w.transport.abort()

    async def serve(self) -> None:
        proxy = self.proxy
        if isinstance(proxy.fault, _Blackhole):
            self.condemn()
            await self._swallow()
            return
        try:
            host, port = proxy.upstream
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection(host, port), proxy.connect_timeout_s)
        except (OSError, TimeoutError):
            proxy.stats["upstream_connect_failures"] += 1
            _reset(self.client_w)
            return
        self.upstream_w = upstream_w
        self.upstream_reader = asyncio.create_task(self._read(upstream_r, self.down))
        tasks = [self.upstream_reader,
                 asyncio.create_task(self._read(self.client_r, self.up)),
                 asyncio.create_task(self._write(self.up, upstream_w)),
                 asyncio.create_task(self._write(self.down, self.client_w))]
        failed = False
        try:
            pending: set[asyncio.Task[None]] = set(tasks)
            while pending and not failed:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_EXCEPTION)
                failed = any(not t.cancelled() and t.exception() is not None for t in done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (self.client_w, upstream_w):
                if failed:
                    _reset(writer)  # a reset on one side is passed on as a reset
                else:
                    writer.close()

    async def _swallow(self) -> None:
        """A connection accepted during a black-hole: read and discard until the client
        gives up, answer nothing."""
        with contextlib.suppress(OSError):
            while data := await self.client_r.read(CHUNK):
                self.proxy.stats["bytes_discarded"] += len(data)
        self.client_w.close()

    def _gone(self, direction: _Direction) -> bool:
        """Nothing more is written in this direction: the hole took it, or the proxy answered
        (then only the way to the upstream is closed)."""
        return self.condemned or (direction.to_upstream and self.upstream_gone)

    async def _read(self, reader: asyncio.StreamReader, direction: _Direction) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await reader.read(CHUNK)
            except OSError:
                if not self.upstream_gone:
                    raise
                data = b""  # a side the proxy closed on purpose: not a failure to pass on
            if not data:
                await direction.queue.put(_Eof())
                return
            fault = proxy.fault
            if self.condemned or isinstance(fault, _Blackhole):
                self.condemn()
                proxy.stats["bytes_discarded"] += len(data)
                continue
            if direction.to_upstream and self.upstream_gone:
                continue  # the rest of a request the proxy already answered
            now = loop.time()
            request_id = None
            if direction.to_upstream and _REQUEST_START.match(data):
                proxy.stats["http_requests_seen"] += 1
                if isinstance(fault, _Http500) and fault.inject():
                    await self._answer_500(now)
                    continue
                head_end = data.find(b"\r\n\r\n")
                found = _REQUEST_ID.search(data, 0, head_end + 2 if head_end >= 0 else len(data))
                request_id = found.group(1).decode("latin-1").strip() if found else None
            elif not direction.to_upstream and self.awaiting and data.startswith(b"HTTP/1."):
                logged = proxy.requests.get(self.awaiting.popleft())
                if logged is not None and logged[1] is None:
                    # The service's answer, before any delay of the fault's.
                    logged[1] = now
                    status = data[9:12]
                    logged[2] = int(status) if status.isdigit() else None
            plan = fault.plan(now) if fault is not None else _Plan()
            release = max(now + plan.delay_s, direction.last_release)
            direction.last_release = release
            await direction.queue.put(_Chunk(data, release, plan.rate, plan.delay_s > 0,
                                             request_id))

    async def _answer_500(self, now: float) -> None:
        """Answer the request here: the upstream never gets it, and nothing it sends later
        may follow the 500 on this connection."""
        self.proxy.stats["http_500_injected"] += 1
        self.upstream_gone = True
        if self.upstream_reader is not None:
            self.upstream_reader.cancel()
        if self.upstream_w is not None:
            self.upstream_w.transport.abort()
        release = max(now, self.down.last_release)
        await self.down.queue.put(_Chunk(INJECTED_500, release))
        await self.down.queue.put(_Close())

    async def _write(self, direction: _Direction, writer: asyncio.StreamWriter) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        count, volume = (("chunks_to_upstream", "bytes_to_upstream") if direction.to_upstream
                         else ("chunks_to_client", "bytes_to_client"))
        while True:
            item = await direction.queue.get()
            if isinstance(item, _Close):
                # Half-close, then let the client close: a client still sending its body
                # reads the answer instead of a reset; one that never closes is closed later.
                if writer.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                loop.call_later(LINGER_S, writer.close)
                return
            if isinstance(item, _Eof):
                if not self._gone(direction) and writer.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                return
            wait = item.release_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            delayed = item.delayed
            step = MSS if item.rate else len(item.data)
            for start in range(0, len(item.data), step):
                if isinstance(proxy.fault, _Blackhole):
                    self.condemn()  # queued before the hole: the hole swallows it too
                if self._gone(direction):
                    break
                piece = item.data[start:start + step]
                if item.rate:
                    delayed = await direction.bucket.take(len(piece), item.rate, loop) or delayed
                try:
                    writer.write(piece)
                    await writer.drain()
                except OSError:
                    if self._gone(direction):
                        break
                    raise
                proxy.stats[volume] += len(piece)
                if item.request_id is not None and start == 0:
                    # The service has the request's first bytes now, after the fault's delay.
                    proxy.requests[item.request_id] = [loop.time(), None, None]
                    self.awaiting.append(item.request_id)
            else:
                proxy.stats[count] += 1
                proxy.stats["chunks_delayed"] += delayed


class Proxy:
    """The forwarder and its one active fault (in the proxy's own process)."""

    def __init__(self, upstream: tuple[str, int], seed: int,
                 connect_timeout_s: float = 5.0) -> None:
        self.upstream = upstream
        self.connect_timeout_s = connect_timeout_s
        self.fault: _Fault | None = None
        self.stats = dict.fromkeys(STATS_KEYS, 0)
        # X-Request-Id -> [forwarded to the service at, its answer read at, its status]
        self.requests: dict[str, list[float | int | None]] = {}
        self._rng = random.Random(seed)
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats["connections_accepted"] += 1
        self.stats["connections_open"] += 1
        try:
            await _Connection(self, reader, writer).serve()
        except Exception as exc:  # one connection's trouble never stops the proxy
            print(f"netproxy: connection failed: {exc!r}", file=sys.stderr)
            writer.transport.abort()
        finally:
            self.stats["connections_open"] -= 1
            self._handlers.discard(task)

    def command(self, line: str) -> tuple[dict[str, Any], bool]:
        """The answer to one control line, and whether to stop."""
        answer: dict[str, Any] = {}
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("a command is a JSON object")
            if "id" in message:
                answer["id"] = message.pop("id")
            op = message.pop("op", None)
            if op == "set":
                name = message.pop("fault", None)
                self.fault = _make_fault(name, message, random.Random(self._rng.getrandbits(64)),
                                         asyncio.get_running_loop().time())
                answer.update(ok=True, fault=self.fault.name, params=self.fault.values)
            elif op == "clear":
                self.fault = None
                answer.update(ok=True, fault=None)
            elif op == "stats":
                answer.update(ok=True, stats=dict(self.stats),
                              fault=self.fault.name if self.fault else None)
            elif op == "requests":
                answer.update(ok=True, requests=self.requests)
                self.requests = {}
            elif op == "stop":
                answer.update(ok=True)
                return answer, True
            else:
                raise ValueError(f"unknown op {op!r} (set, clear, stats, requests, stop)")
        except ValueError as exc:  # json.JSONDecodeError is one
            answer.update(ok=False, error=str(exc))
        return answer, False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """stdin's lines on a daemon thread (works for pipes, terminals and files alike; a daemon
    thread blocked in a read never holds up the exit). None is EOF."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="netproxy-stdin", daemon=True).start()
    return lines


def _say(message: dict[str, Any]) -> None:
    with contextlib.suppress(BrokenPipeError, ValueError):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


async def _main(upstream: tuple[str, int], seed: int, listen_port: int) -> None:
    proxy = Proxy(upstream, seed)
    port = await proxy.start(listen_port)
    _say({"port": port})
    lines = _stdin_lines(asyncio.get_running_loop())
    try:
        while (line := await lines.get()) is not None:
            if not line.strip():
                continue
            answer, stop = proxy.command(line)
            if stop:
                await proxy.stop()
                _say(answer)
                return
            _say(answer)
    finally:
        await proxy.stop()


def parse_upstream(upstream: str | tuple[str, int]) -> tuple[str, int]:
    """("host", port) from a tuple, "HOST:PORT" or an http:// URL."""
    if isinstance(upstream, tuple):
        return upstream[0], int(upstream[1])
    text = upstream
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "http":
            raise ValueError(f"the fault proxy forwards cleartext HTTP only, not {scheme}://")
        text = text.split("/", 1)[0]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"upstream must be HOST:PORT, got {upstream!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sqlite_faults.netproxy",
        description="A TCP fault proxy for HTTP/1.1 on loopback; JSON commands on stdin.")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the service")
    parser.add_argument("--seed", type=int, default=0, help="replays every random choice")
    parser.add_argument("--listen-port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    try:
        upstream = parse_upstream(args.upstream)
    except ValueError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(upstream, args.seed, args.listen_port))


# --- the parent's side -------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardedRequest:
    """One logged request (X-Request-Id): when the service got it and answered, monotonic."""

    forwarded_at: float
    answered_at: float | None
    status: int | None

    @property
    def service_s(self) -> float | None:
        """The service's own time, whatever the network added around it."""
        return None if self.answered_at is None else self.answered_at - self.forwarded_at


class NetworkFaultsError(SqliteFaultsError, RuntimeError):
    """The proxy process did not start, died, or did not answer in time."""


class NetworkFaults:
    """The fault proxy in a child process, and its controls.

        with NetworkFaults("127.0.0.1:8000", seed=7) as faults:
            client = httpx.Client(base_url=faults.base_url)
            faults.set("latency", ms=50)          # returns once the proxy has it
            ...
            faults.clear()

        async with faults.during("blackhole"):    # from inside an event loop
            await asyncio.sleep(1.0)

    `set` raises ValueError for an unknown fault or parameter, with the proxy's own words.
    The async variants run the blocking call on a worker thread, so the caller's event loop
    goes on while the proxy acknowledges.
    """

    def __init__(self, upstream: str | tuple[str, int], seed: int = 0, listen_port: int = 0,
                 timeout_s: float = 10.0) -> None:
        self.upstream = parse_upstream(upstream)
        self.seed = seed
        self.timeout_s = timeout_s  # start-up and each ack; generous for a loaded machine
        self._lock = threading.Lock()
        self._next_id = 0
        self._answers: queue.Queue[str | None] = queue.Queue()
        # The proxy's stderr, for error messages; a file, since a pipe nobody reads could fill
        # and stall the proxy. It lives as long as this handle (closed in close()).
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        host, port = self.upstream
        try:
            self._proc: subprocess.Popen[str] = subprocess.Popen(
                [sys.executable, "-m", "sqlite_faults.netproxy", "--upstream", f"{host}:{port}",
                 "--seed", str(seed), "--listen-port", str(listen_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                bufsize=1)
        except BaseException:
            self._stderr.close()
            raise
        self._reader = threading.Thread(target=self._read_answers, name="netproxy-answers",
                                        daemon=True)
        self._reader.start()
        try:
            first = self._next_answer()
            if "port" not in first:
                raise NetworkFaultsError(f"the fault proxy said {first!r}, not its port")
            self.port = int(first["port"])
        except BaseException:
            self.close()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The proxy process's id (its CPU is part of the instrument's)."""
        return self._proc.pid

    def _read_answers(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _next_answer(self) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=self.timeout_s)
        except queue.Empty:
            raise NetworkFaultsError(
                f"the fault proxy did not answer within {self.timeout_s} s") from None
        if line is None:
            self._answers.put(None)  # every later call sees the exit too
            raise NetworkFaultsError(f"the fault proxy exited: {self._stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")[-2000:].strip() or "no output"
        return "no output"

    def _command(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self._proc.poll() is not None or self._proc.stdin is None:
                raise NetworkFaultsError(f"the fault proxy is not running: {self._stderr_tail()}")
            self._next_id += 1
            ident = self._next_id
            try:
                self._proc.stdin.write(json.dumps({**fields, "op": op, "id": ident}) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise NetworkFaultsError(f"the fault proxy is gone: {exc}") from None
            while True:  # an answer that came too late to an earlier call is skipped
                answer = self._next_answer()
                if answer.get("id") == ident:
                    break
        if not answer.get("ok"):
            raise ValueError(str(answer.get("error")))
        return answer

    def set(self, fault: str, **params: float) -> None:
        """Make `fault` the one active fault (replacing any other); returns once acked."""
        if "op" in params or "id" in params:
            raise ValueError("'op' and 'id' are not fault parameters")
        self._command("set", fault=fault, **params)

    def clear(self) -> None:
        """No fault: forward as is (connections condemned by a black-hole stay silent)."""
        self._command("clear")

    def stats(self) -> dict[str, int]:
        """The proxy's counters since it started (keys: STATS_KEYS)."""
        counters: dict[str, int] = self._command("stats")["stats"]
        return counters

    def requests(self) -> dict[str, ForwardedRequest]:
        """The logged requests since the last call (module docstring), and the log emptied."""
        log: dict[str, list[Any]] = self._command("requests")["requests"]
        return {key: ForwardedRequest(*entry) for key, entry in log.items()}

    async def arequests(self) -> dict[str, ForwardedRequest]:
        return await asyncio.to_thread(self.requests)

    async def aset(self, fault: str, **params: float) -> None:
        await asyncio.to_thread(self.set, fault, **params)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    @contextlib.asynccontextmanager
    async def during(self, fault: str, **params: float) -> AsyncIterator[None]:
        """`fault` for the body of the `async with`; cleared on the way out, also when the
        body fails."""
        await self.aset(fault, **params)
        try:
            yield
        finally:
            await self.aclear()

    def close(self) -> None:
        """Stop the proxy (its connections close with it); kill it if it does not exit."""
        proc = self._proc
        if proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(NetworkFaultsError, ValueError, OSError):
                self._command("stop")
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()  # EOF stops it too, if "stop" never got through
        try:
            proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reader.join(timeout=self.timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> NetworkFaults:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["FAULTS", "INJECTED_BODY", "STATS_KEYS", "ForwardedRequest", "NetworkFaults",
           "NetworkFaultsError",
           "Proxy", "main", "parse_upstream"]

if __name__ == "__main__":
    main()
