"""The proxy itself, in its own process (`python -m sqlite_faults.netproxy`): connections,
their two directions with a queue and a pump each, the one active fault, and the JSON command
loop on stdin (the package's docstring describes the protocol and the forwarding)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import re
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from .faults import INJECTED_500, Fault, Plan, make_fault

CHUNK = 64 * 1024  # one read()
MSS = 1460  # the token bucket's burst: one Ethernet-sized segment
QUEUE_CHUNKS = 32  # per direction: a full queue stops reading, so the sender feels backpressure
LINGER_S = 5.0  # after an injected 500: how long a client that does not close is waited for
_REQUEST_START = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) ")
_REQUEST_ID = re.compile(rb"\r\nx-request-id:[ \t]*([^\r\n]{1,64})", re.IGNORECASE)

STATS_KEYS = (
    "connections_accepted", "connections_open", "upstream_connect_failures",
    "chunks_to_upstream", "chunks_to_client", "bytes_to_upstream", "bytes_to_client",
    "chunks_delayed", "connections_blackholed", "bytes_discarded", "http_requests_seen",
    "http_500_injected",
)


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
        if proxy.swallowing:
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
            if self.condemned or proxy.swallowing:
                self.condemn()
                proxy.stats["bytes_discarded"] += len(data)
                continue
            if direction.to_upstream and self.upstream_gone:
                continue  # the rest of a request the proxy already answered
            now = loop.time()
            request_id = None
            if direction.to_upstream and _REQUEST_START.match(data):
                proxy.stats["http_requests_seen"] += 1
                if fault is not None and fault.answers_request():
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
            plan = fault.plan(now) if fault is not None else Plan()
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
                if proxy.swallowing:
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
        self.fault: Fault | None = None
        self.stats = dict.fromkeys(STATS_KEYS, 0)
        # X-Request-Id -> [forwarded to the service at, its answer read at, its status]
        self.requests: dict[str, list[float | int | None]] = {}
        self._rng = random.Random(seed)
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def swallowing(self) -> bool:
        """A black hole is set: nothing is forwarded or answered."""
        return self.fault is not None and self.fault.swallows

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
                self.fault = make_fault(name, message, random.Random(self._rng.getrandbits(64)),
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
