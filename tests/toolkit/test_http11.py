"""The load generators' HTTP/1.1 transport, against servers scripted byte for byte: framing
(length, chunked, to the close), keep-alive reuse, a kept-alive connection the server closed,
timeouts, and a half-read answer never leaking into the next request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlite_faults.http11 import Http11Transport

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A server whose handler answers each request head with the bytes a test chose."""

    def __init__(self, answer: Callable[[bytes, int], bytes | None]) -> None:
        self.answer = answer  # (request head, index on its connection) -> bytes, None: close
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                reply = self.answer(head, index)
                index += 1
                if reply is None:
                    writer.close()
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _serve(handler: Handler) -> AsyncIterator[str]:
    """The server's URL while the `async for` body runs; every connection it accepted is
    closed and its handler finished on the way out."""
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.append(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


async def test_keep_alive_reuses_one_connection_for_sequential_requests() -> None:
    script = Scripted(lambda head, i: ok())
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            for _ in range(5):
                response = await client.get("/")
                assert response.status_code == 200 and response.json() == {"ok": True}
    assert script.connections == 1 and len(script.requests) == 5


async def test_json_body_and_headers_are_sent_as_given() -> None:
    script = Scripted(lambda head, i: ok())
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            await client.post("/users/?x=1", json={"name": "a"}, headers={"Idempotency-Key": "k"})
    sent = script.requests[0]
    assert sent.startswith(b"POST /users/?x=1 HTTP/1.1\r\n")
    assert b"idempotency-key: k" in sent.lower()
    assert sent.endswith(b'{"name":"a"}')


async def test_chunked_answer_is_reassembled() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n")
    script = Scripted(lambda head, i: chunked)
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            assert (await client.get("/")).json() == {"a": 1}
            assert (await client.get("/")).json() == {"a": 1}  # framing left nothing behind
    assert script.connections == 1


async def test_answer_delimited_by_close_is_read_to_the_end_and_not_reused() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Unavailable\r\nRetry-After: 1\r\n\r\nbusy")
        writer.close()

    async for url in _serve(handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            first = await client.get("/")
            second = await client.get("/")
    assert first.status_code == 503 and first.text == "busy"
    assert first.headers["Retry-After"] == "1" and second.status_code == 503
    assert connections == 2


async def test_connection_close_header_is_honoured() -> None:
    script = Scripted(lambda head, i: ok(extra=b"Connection: close\r\n"))
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            await client.get("/")
            await client.get("/")
    assert script.connections == 2


async def test_idle_connection_closed_by_the_server_is_replaced_for_a_read() -> None:
    # The server answers once per connection, then closes it after the client's next request
    # head arrives without answering: a keep-alive race. A GET is sent again on a new
    # connection; a POST is not (it might have been processed), and says so.
    script = Scripted(lambda head, i: ok() if i == 0 else None)
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/")).status_code == 200
            assert script.connections == 2
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await client.post("/users/", json={})


async def test_server_fin_on_an_idle_connection_is_noticed_before_reuse() -> None:
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ok())
        await writer.drain()
        writer.close()  # the server's idle timeout, right after the answer
        closed.set()

    async for url in _serve(handle):
        transport = Http11Transport()
        async with httpx.AsyncClient(base_url=url, transport=transport) as client:
            await client.get("/")
            await closed.wait()
            await asyncio.sleep(0.05)  # the FIN's delivery to the client's stream protocol
            # a POST can only succeed if the dead connection was not picked
            assert (await client.post("/users/", json={})).status_code == 200
    assert transport.connections_opened == 2


async def test_read_timeout_closes_the_connection_so_a_late_answer_is_never_misread() -> None:
    release = asyncio.Event()
    connections = 0
    index = 0  # requests seen by the server, over all connections

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections, index
        connections += 1
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if index == 0:
                await release.wait()
                body = b'{"late":true}'
            else:
                body = b'{"late":false}'
            index += 1
            writer.write(ok(body))
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async for url in _serve(handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport(),
                                     timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/")
            release.set()
            assert (await client.get("/")).json() == {"late": False}
    assert connections == 2


async def test_nothing_listening_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with httpx.AsyncClient(transport=Http11Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_interim_answer_is_skipped_and_head_and_204_have_no_body() -> None:
    def answer(head: bytes, i: int) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
        if i == 1:
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok()

    script = Scripted(answer)
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            assert (await client.get("/")).json() == {"ok": True}
            assert (await client.delete("/x")).status_code == 204
            head = await client.head("/")
            assert head.status_code == 200 and head.content == b""
            assert (await client.get("/")).status_code == 200
    assert script.connections == 1


async def test_garbage_instead_of_a_status_line_is_a_protocol_error() -> None:
    script = Scripted(lambda head, i: b"SSH-2.0-OpenSSH\r\n\r\n")
    async for url in _serve(script.handle):
        async with httpx.AsyncClient(base_url=url, transport=Http11Transport()) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="status line"):
                await client.get("/")
