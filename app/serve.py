"""Serve the API as it is meant to run: uvicorn, with limits at the door.

    python -m app.serve [--host H] [--port P] [--log-level L] [--no-access-log]   (./run serve)
                        [--app MODULE:FACTORY]   (a factory wrapping create_app, e.g. the
                                                  report's, which adds its fault agent)

uvicorn's httptools protocol reads request headers of any size for as long as the client
takes (measured: a 1 MiB header line and 5,000 header lines are accepted, and a connection
that sends half a request head, or nothing, is kept forever). `GuardedHttpTools` adds two
bounds while a request head arrives: `HTTP_MAX_HEADER_BYTES` (URL plus header names and
values; 431 past it) and `HTTP_HEADER_TIMEOUT_S` (from the connection's first byte or the
previous response to the end of the head; the connection is closed with 408). Bodies are
bounded in app/request_limits.py; idle keep-alive connections and concurrency by uvicorn's own
`timeout_keep_alive` and `limit_concurrency`. Every value is a setting (README's table).

It is also where a request's budget starts and where overload is refused (docs/architecture.md,
"Overload"):

- **The deadline counts from the request's first byte** as the server reads it, not from the
  ASGI call: time in the event loop's backlog before the handler runs is inside the budget.
  The stamp travels in the scope's state (`arrived`), read by app/api.py.
- **Admission at the door**: once the head has arrived, and before a task is made or the body
  read, the app's gate (app/admission.py, handed over in the lifespan state as `admission`)
  judges whether the request can start its work in time; if not, the protocol writes a
  prebuilt `503 overloaded` itself. The connection stays open for the next request unless the
  refused one announced a body larger than `HTTP_MAX_BODY_BYTES` or a chunked one (then it is
  closed rather than read).
- **Clients who leave**: each admitted request gets a future in its state (`gone`), settled
  when the connection is lost before its response is complete; work still queued for it is
  then withdrawn (app/resilience.py's await_until).

And it is where the process's garbage collector is told what is permanent: everything alive
once the server has started (`FrozenAtStartServer`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import socket
import sys
import time
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .settings import Settings

# uvicorn's own exit status for a server that failed to start (uvicorn.main.STARTUP_FAILURE).
_STARTUP_FAILURE = 3


class HeadTooLarge(Exception):
    pass


class _Answered:
    """Stands in for the request-response cycle of a request the protocol answered itself:
    complete from the start, so the parser's body callbacks drop what the client still
    sends, and the next request on the connection starts as usual."""

    response_complete = True
    disconnected = False
    message_event = asyncio.Event()  # set on connection loss; nobody waits on it


_ANSWERED: Any = _Answered()


def _json_response(status: int, reason: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, reason),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ])


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size and a time bound on each request head."""

    max_head_bytes = 16 * 1024
    head_timeout_s = 10.0
    max_body_bytes = 16 * 1024

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_too_large = False
        self._received_at = 0.0
        self._first_byte_at = 0.0
        self._held_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a client that connects and sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        unanswered = [cycle for cycle in (self.cycle, *(c for c, _ in self.pipeline))
                      if cycle is not None and not cycle.response_complete]
        super().connection_lost(exc)
        for cycle in unanswered:
            gone = cycle.scope["state"].get("gone")
            if gone is not None and not gone.done():
                gone.set_result(None)

    def data_received(self, data: bytes) -> None:
        # The earliest moment this process sees a request: its deadline counts from here;
        # after a refusal's hold, from when reading stopped (the bytes may have come then).
        self._received_at = self._held_since or time.monotonic()
        self._held_since = None
        super().data_received(data)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.write(_json_response(
                408, b"Request Timeout", "request_timeout",
                f"the request head did not arrive within {self.head_timeout_s:g} s"))
            self.transport.close()

    # Parser callbacks: count the head as the parser sees it (body bytes that arrive in the
    # same packet are not head bytes).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._first_byte_at = self._received_at
        self._in_head = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head_bytes:
            self._head_too_large = True
            raise HeadTooLarge  # ends feed_data with a parser error: see send_400_response

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        if self.transport.is_closing():  # answered already (a refusal that closed)
            self.cycle = _ANSWERED
            return
        gate = self.app_state.get("admission")
        in_order = self.cycle is None or self.cycle.response_complete
        if gate is not None and in_order and self._past_connection_limit():
            # uvicorn would refuse this too, but through an ASGI task of its own and as
            # plain text; this costs no task, and closing sheds the connection itself.
            gate.refuse_connection()
            self._refuse(gate, close=True)
            return
        route = None if gate is None else gate.route_of(self.parser.get_method(), self.url)
        if (gate is not None and route is not None and in_order
                and not gate.admits(route, self._first_byte_at)):
            self._refuse(gate, close=self._body_to_skip_is_large())
            return
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is previous:  # an upgrade: no request cycle, nothing to stamp or count
            return
        state = self.scope["state"]
        state["arrived"] = self._first_byte_at
        state["gone"] = self.loop.create_future()
        if route is not None and in_order:
            # Counted from now until app.main.StampArrival sees it answered. Only a request
            # whose task starts now: a pipelined one may never start (its connection lost
            # first), and a count nothing ever decrements would close the door for good.
            route.enter()
            state["admitted"] = route

    def _past_connection_limit(self) -> bool:
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit
                                      or len(self.tasks) >= limit)

    def _refuse(self, gate: Any, *, close: bool) -> None:
        """Answer the request from here, before its body is read and without an ASGI task.
        (Only when no earlier request of this connection is still being answered: responses
        go out in order.)"""
        self.cycle = _ANSWERED
        if close:
            self.transport.write(gate.refusal_bytes_closing)
            self.transport.close()
            return
        self.transport.write(gate.refusal_bytes)
        self.on_response_complete()  # the keep-alive timer, as after any answer
        if not gate.holds_after_refusal():
            return
        # The refusal went out at once; while refusals come fast, this connection's next
        # request is read only after a short hold. A client that ignores Retry-After and asks
        # again at once would otherwise spend the CPU the admitted requests need on refusals
        # (closed-loop load generators do exactly that). Its deadline counts from the hold's
        # start.
        self.flow.pause_reading()
        self._held_since = time.monotonic()
        self.loop.call_later(gate.refusal_hold_s, self._end_hold)

    def _end_hold(self) -> None:
        if not self.transport.is_closing():
            self.flow.resume_reading()

    def _body_to_skip_is_large(self) -> bool:
        """Whether the refused request's body is one not worth reading to keep the
        connection: chunked, larger than a body the app would accept, or an HTTP/1.0 or
        `Connection: close` request."""
        if not self.parser.should_keep_alive():
            return True
        for name, value in self.headers:
            if name == b"transfer-encoding":
                return True
            if name == b"content-length":
                return not value.isdigit() or int(value) > self.max_body_bytes
        return False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The keep-alive timer (uvicorn's) runs until the next request's first byte; the head
        # timer starts again at on_message_begin.
        self._in_head = True

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(_json_response(
            431, b"Request Header Fields Too Large", "headers_too_large",
            f"the request head is larger than {self.max_head_bytes} bytes"))
        self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedHttpTools]:
    """The protocol class with this instance's bounds (uvicorn instantiates it per
    connection, so the bounds travel as class attributes)."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {
        "max_head_bytes": settings.http_max_header_bytes,
        "head_timeout_s": settings.http_header_timeout_s,
        "max_body_bytes": settings.http_max_body_bytes,
    })


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "loop": settings.http_event_loop,
        "http": protocol_for(settings),
        "timeout_keep_alive": settings.http_keep_alive_s,
        "limit_concurrency": settings.http_limit_concurrency,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
    }


class FrozenAtStartServer(uvicorn.Server):
    """uvicorn's server, which once started (app made, lifespan run, sockets bound) moves
    every object alive into the collector's permanent generation (`gc.freeze()`, Python's
    gc docs).

    A full (generation 2) collection walks every tracked object, and the libraries loaded
    at start-up (FastAPI, pydantic, SQLAlchemy, uvicorn) leave a few hundred thousand that
    live as long as the process. Each full collection stopped the event loop for 70-77 ms
    (measured with gc.callbacks during the report's slow-statements, whose failed reads make
    enough cyclic garbage to trigger one every few seconds): every timer due then fired late,
    and 504s due at the deadline came up to 111 ms after it. Frozen, those objects are never
    walked again; only what requests create is.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        gc.freeze()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--app", default="app.main:create_app")
    args = parser.parse_args(argv)
    settings = Settings()
    config = uvicorn.Config(args.app, factory=True, host=args.host, port=args.port,
                            log_level=args.log_level, access_log=not args.no_access_log,
                            **uvicorn_options(settings))
    config.load_app()
    server = FrozenAtStartServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as uvicorn.run: start-up failed (the error is logged)
        sys.exit(_STARTUP_FAILURE)


if __name__ == "__main__":
    main()
