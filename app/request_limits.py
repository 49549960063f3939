"""Limits on what a request may send: a body of at most `max_bytes`, arriving within `timeout_s`.

A pure ASGI middleware, so nothing is read before the check: a declared Content-Length past the
bound is refused with 413 before one byte of the body is read, and a chunked body is counted
as it arrives and refused as soon as it passes the bound. A body that trickles in slower than
`timeout_s` in all gets 408: a slow client must not hold a connection and a task for as long
as it likes. (Header size and header-read time are bounded in the HTTP protocol, app/serve.py:
they arrive before any ASGI code runs.)
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .http_errors import error_response


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


class RequestTooLarge(StarletteHTTPException):
    def __init__(self, max_bytes: int) -> None:
        # Connection: close, so the server does not read the rest of the body to reuse the
        # connection.
        super().__init__(413, _too_large(max_bytes), headers={"Connection": "close"})


class RequestTooSlow(StarletteHTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s",
                         headers={"Connection": "close"})


class LimitRequestBody:
    """Raises its refusals as HTTP exceptions from `receive`, which the app's error handlers
    turn into JSON (app/http_errors.py); FastAPI passes HTTP exceptions raised while it reads
    the body through unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    # Refused before the body is read: nothing of it is buffered. (Raising
                    # here would pass the app's error handlers, which sit inside.)
                    response = error_response(413, "request_too_large",
                                              _too_large(self.max_bytes),
                                              headers={"Connection": "close"})
                    await response(scope, receive, send)
                    return
                break
        received = 0
        body_done = False
        give_up_at = asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. a listener for http.disconnect: not bounded here
                return await receive()
            try:
                async with asyncio.timeout_at(give_up_at):
                    message = await receive()
            except TimeoutError:
                raise RequestTooSlow(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(self.max_bytes)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)
