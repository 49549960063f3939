"""A lean HTTP/1.1 transport for httpx: the load generators' connection pool.

Why not httpcore's pool, which httpx uses by default: picking a connection there costs time
per pooled connection on every request (each idle connection is asked whether its socket
turned readable, a `getpeername` and a `select` each, under a pool-wide lock), and on this
machine's Python it tries, and fails, to import `sniffio` on every request. Measured in the
report's open loop at 270 requests/s: while a 50 ms network fault raised the connections in
use from 16 to 45, the generator's process went to 100 % of a core, and after the fault was
cleared every request waited behind the generator itself (p50 from 6 ms to 1.2-2 s, client
timeouts) although the service and the proxy were idle. An instrument must not be what it
measures; this pool costs the same per request whatever its size:

- idle connections on a stack (the most recently used first: a small hot set);
- a connection the server closed while idle is noticed for free: the stream's protocol
  reads in the background, so the server's FIN shows as `at_eof()` without a syscall;
- one connection per request in flight; the caller bounds how many (the generators hold a
  semaphore), this pool does not queue.

What it speaks: HTTP/1.1 over plain TCP to the origin (no TLS, no proxies, no HTTP/2, no
pipelining, no `Expect: 100-continue`); bodies by Content-Length, chunked, or to the close.
Failures are httpx's exceptions (ConnectError, ReadTimeout, RemoteProtocolError, ...), so
`outcome_of` names them as it names httpcore's. A request whose exchange did not finish (a
timeout, a cancellation) closes its connection: a half-read answer would otherwise be read as
the next request's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_NO_BODY_STATUSES = frozenset({204, 304})
MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is refused, not buffered


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def reusable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.transport.is_closing())

    def close(self) -> None:
        self.writer.transport.abort()


class Http11Transport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=Http11Transport())`: keep-alive connections to any
    origin, no pool-wide work per request. Timeouts are httpx's (connect, write, read)."""

    def __init__(self, max_idle_per_origin: int = 1024) -> None:
        self.max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self.connections_opened = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"this transport speaks plain http only, not {request.url.scheme}://")
        origin = (request.url.host, request.url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        reused = True
        connection = self._take_idle(origin)
        if connection is None:
            reused = False
            connection = await self._connect(origin, timeouts.get("connect"))
        self._busy.add(connection)
        done = False
        try:
            try:
                status, reason, headers, content, keep = await self._exchange(
                    connection, request, body, timeouts)
            except _NothingCameBack as gone:
                # The server closed a kept-alive connection as we reused it (its idle timeout
                # raced our request): nothing of ours was processed, as RFC 9112 9.3.1 allows
                # to assume for an idempotent request, which is sent again on a new connection.
                connection.close()
                if not reused or request.method.encode() not in _IDEMPOTENT:
                    raise gone.failure from None
                self._busy.discard(connection)
                connection = await self._connect(origin, timeouts.get("connect"))
                self._busy.add(connection)
                try:
                    status, reason, headers, content, keep = await self._exchange(
                        connection, request, body, timeouts)
                except _NothingCameBack as again:
                    raise again.failure from None
            done = True
        finally:
            self._busy.discard(connection)
            if not done:
                connection.close()
        if keep and connection.reusable:
            self._put_idle(origin, connection)
        else:
            connection.close()
        return httpx.Response(status, headers=headers, content=content,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": reason})

    def _take_idle(self, origin: tuple[str, int]) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            if connection.reusable:
                return connection
            connection.close()
        return None

    def _put_idle(self, origin: tuple[str, int], connection: _Connection) -> None:
        stack = self._idle.setdefault(origin, [])
        if len(stack) >= self.max_idle:
            connection.close()
        else:
            stack.append(connection)

    async def _connect(self, origin: tuple[str, int], timeout: float | None) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    origin[0], origin[1], limit=MAX_HEAD_BYTES)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {origin} within {timeout} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        self.connections_opened += 1
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: httpx.Request, body: bytes,
                        timeouts: dict[str, float | None]
                        ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        writer, reader = connection.writer, connection.reader
        head = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        chunked_body = False
        for name, value in request.headers.raw:
            head += [name, b": ", value, b"\r\n"]
            chunked_body |= name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        head.append(b"\r\n")
        if chunked_body:  # a streamed upload: httpx already read it whole (`aread`)
            body = (b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
        try:
            async with asyncio.timeout(timeouts.get("write")):
                writer.write(b"".join(head) + body)
                await writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("the request could not be written in time",
                                     request=request) from None
        except OSError as exc:
            raise _NothingCameBack(httpx.WriteError(str(exc), request=request)) from exc
        try:
            async with asyncio.timeout(timeouts.get("read")):
                return await self._read_response(reader, request)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise httpx.ReadError(str(exc), request=request) from exc

    async def _read_response(self, reader: asyncio.StreamReader, request: httpx.Request
                             ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        while True:  # 1xx interim answers are skipped
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _NothingCameBack(httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.",
                        request=request)) from None
                raise httpx.RemoteProtocolError("the answer's head was cut short",
                                                request=request) from None
            except asyncio.LimitOverrunError:
                raise httpx.RemoteProtocolError("the answer's head is too large",
                                                request=request) from None
            status, reason, headers = _parse_head(head, request)
            if status >= 200 or status == 101:
                break
        fields = {name.lower(): value for name, value in headers}
        keep = fields.get(b"connection", b"").lower() != b"close"
        try:
            if request.method == "HEAD" or status in _NO_BODY_STATUSES or status < 200:
                content = b""
            elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
                content = b"".join([part async for part in _chunks(reader)])
            elif b"content-length" in fields:
                content = await reader.readexactly(int(fields[b"content-length"]))
            else:  # delimited by the close
                content, keep = await reader.read(), False
        except (asyncio.IncompleteReadError, ValueError):
            raise httpx.RemoteProtocolError("the answer's body was cut short or malformed",
                                            request=request) from None
        return status, reason, headers, content, keep

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()


class _NothingCameBack(Exception):
    """The connection ended before a single byte of the answer; `failure` is what the caller
    is told when the request is not sent again."""

    def __init__(self, failure: httpx.TransportError) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _parse_head(head: bytes, request: httpx.Request
                ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}",
                                        request=request)
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}",
                                            request=request)
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return
        yield await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("a chunk not followed by CRLF")

__all__ = ["Http11Transport"]
