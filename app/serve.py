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
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .settings import Settings


class HeadTooLarge(Exception):
    pass


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

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a client that connects and sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

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
        super().on_headers_complete()

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
    })


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "loop": "uvloop",
        "http": protocol_for(settings),
        "timeout_keep_alive": settings.http_keep_alive_s,
        "limit_concurrency": settings.http_limit_concurrency,
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
    }


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
    uvicorn.run(args.app, factory=True, host=args.host, port=args.port,
                log_level=args.log_level, access_log=not args.no_access_log,
                **uvicorn_options(settings))


if __name__ == "__main__":
    main()
