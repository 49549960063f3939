"""A trivial HTTP/1.1 service in its own process: the reference the report calibrates its
instrument against (the load generator and the fault proxy), so that what they cost is known
before a service is judged through them.

    python -m sqlite_faults.echo [--port 0]      prints {"port": N}, serves until stdin closes

It does no work a service could be slow at: every answer is written from the request's head
alone, at once, keep-alive. It is shaped like a target (`TARGET`) so the report's own load
generator can drive it with its usual mix:

    POST <any path>     201 {"id": N, "name": ...}   (N counts up; the JSON body is not parsed)
    GET  <path>/N       200 {"id": N}
    GET  <anything>     200 {"ok": true}

Run by `EchoServer` (below) from the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

from sqlite_faults.target import Target, target_from_dict

_ids = itertools.count(1)


def _answer(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def response_for(head: bytes) -> bytes:
    method, _, rest = head.partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if method == b"POST":
        return _answer(b"201 Created", b'{"id":%d,"name":"echo"}' % next(_ids))
    last = path.rstrip(b"/").rpartition(b"/")[2]
    if last.isdigit():
        return _answer(b"200 OK", b'{"id":%s}' % last)
    return _answer(b"200 OK", b'{"ok":true}')


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    await reader.readexactly(int(line[15:]))
            writer.write(response_for(head))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_serve_connection, "127.0.0.1", port)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    # Serve until stdin closes: the parent's exit (or its close()) ends this process too. It
    # keeps no state worth a graceful end, and cancelling its connections' tasks at shutdown
    # only prints asyncio's complaints about them.
    await asyncio.to_thread(sys.stdin.read)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqlite_faults.echo",
                                     description="A trivial HTTP/1.1 service (calibration).")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


# A target file's worth of the echo service, for the report's load generator.
TARGET: Target = target_from_dict({
    "name": "echo",
    "launcher": [sys.executable, "-m", "sqlite_faults.echo"],
    "probe": "GET /",
    "write": {"request": "POST /items/", "json": {"name": "{unique}"}, "id_field": "id"},
    "read": {"request": "GET /items/{id}"},
}, Path.cwd(), "the echo service")


class EchoServer:
    """The echo service in a child process: `with EchoServer() as echo: echo.base_url`."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-m", "sqlite_faults.echo"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self._stdout().readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        try:
            self.port = int(json.loads(first[0])["port"])
        except (IndexError, ValueError, KeyError):
            self.close()
            raise RuntimeError(f"the echo service did not start within {timeout_s} s "
                               f"(it said {first!r})") from None

    def _stdout(self) -> IO[str]:
        assert self._proc.stdout is not None
        return self._proc.stdout

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stdout().close()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    main()
