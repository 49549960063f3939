"""http-500: with `probability` per HTTP request the proxy answers the request itself
(500, a JSON error body, `Connection: close`) and closes that connection; the request is
never forwarded, so an injected 500 never reaches the service. A request starts with a
client-to-upstream chunk that begins with a method token and a space (GET, POST, PUT,
PATCH, DELETE, HEAD, OPTIONS). This relies on clients sending one request at a time per
connection (no pipelining) and on a request's first bytes arriving at the start of a read,
which holds for HTTP/1.1 clients that wait for each response.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Fault

INJECTED_BODY = (b'{"error":{"code":"proxy_injected_500",'
                 b'"message":"injected by the fault proxy"}}')
INJECTED_500 = (b"HTTP/1.1 500 Internal Server Error\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(INJECTED_BODY)).encode() + b"\r\n"
                b"Connection: close\r\n\r\n" + INJECTED_BODY)


class Http500(Fault):
    name = "http-500"
    summary = ("with `probability` per request the proxy answers 500 itself and closes the "
               "connection; the service never sees that request")
    params: ClassVar[dict[str, float | None]] = {"probability": 0.05}

    def answers_request(self) -> bool:
        return self.rng.random() < self.values["probability"]
