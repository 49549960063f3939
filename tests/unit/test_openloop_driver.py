"""The open-loop driver (benchmarks/openloop.py) against tiny in-test HTTP servers: it sends
what its seeded schedule says, measures latency from each request's intended send time, turns
unanswered requests into client timeouts, and prints its summary as JSON.

The servers run on an event loop in a thread of this process; the driver runs as the
benchmark runs it, a process of its own (`python -m benchmarks.openloop --json`). The three
runs overlap, so the whole test takes about two seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.openloop import arrival_offsets

ROOT = Path(__file__).resolve().parents[2]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
SLOW_S = 0.2


class Answering(asyncio.Protocol):
    """Answers each request head with 200, at once or `delay_s` later; or never (None)."""

    def __init__(self, delay_s: float | None, transports: set[asyncio.BaseTransport]) -> None:
        self.delay_s = delay_s
        self.transports = transports
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:  # GET requests: a head and no body
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            if self.delay_s is None:
                continue
            if self.delay_s == 0:
                self.transport.write(OK)
            else:  # the server's answer time, not a synchronisation
                asyncio.get_running_loop().call_later(self.delay_s, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(OK)


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    """Three servers on one event loop in a thread: `ok`, `slow` (200 ms) and `silent`."""
    loop = asyncio.new_event_loop()
    transports: set[asyncio.BaseTransport] = set()
    started: dict[str, asyncio.Server] = {}

    async def start() -> dict[str, str]:
        urls = {}
        for name, delay in (("ok", 0.0), ("slow", SLOW_S), ("silent", None)):
            server = await loop.create_server(lambda d=delay: Answering(d, transports),
                                              "127.0.0.1", 0)
            started[name] = server
            urls[name] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return urls

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    urls = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)

    async def stop() -> None:
        for server in started.values():
            server.close()
        for transport in list(transports):
            transport.abort()
        for server in started.values():
            await server.wait_closed()

    try:
        yield urls
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _driver(url: str, rate: float, seed: int, timeout_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.openloop", "--url", url, "--rate", str(rate),
         "--duration", "1", "--endpoint", "healthz", "--seed", str(seed),
         "--timeout", str(timeout_s), "--late-after", "0.15", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(proc: subprocess.Popen[str]) -> dict:
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout  # one JSON line
    return json.loads(lines[0])


@pytest.mark.timeout(60)
def test_open_loop_driver(servers: dict[str, str]) -> None:
    runs = {"ok": (200.0, 11, 2.0), "slow": (50.0, 12, 2.0), "silent": (50.0, 13, 0.5)}
    procs = {name: _driver(servers[name], rate, seed, timeout)
             for name, (rate, seed, timeout) in runs.items()}
    summaries = {name: _summary(proc) for name, proc in procs.items()}

    for name, (rate, seed, _) in runs.items():
        got = summaries[name]
        # The seed's own Poisson schedule, and a count within 4 sigma of rate x duration.
        assert got["scheduled"] == len(arrival_offsets(rate, 1.0, seed))
        assert abs(got["scheduled"] - rate) <= 4 * math.sqrt(rate)
        assert got["sent"] == got["scheduled"]
        assert got["lag_p99_ms"] is not None
        assert got["connection_errors"] == 0

    ok = summaries["ok"]
    assert ok["classes"]["2xx"]["count"] == ok["scheduled"]
    assert ok["client_timeouts"] == 0

    # Latency counts from the intended send time: never less than the server's 200 ms.
    slow = summaries["slow"]
    assert slow["classes"]["2xx"]["count"] == slow["scheduled"]
    assert slow["classes"]["2xx"]["min_ms"] >= SLOW_S * 1000
    assert slow["late_answers"] == slow["scheduled"]  # all later than --late-after 0.15 s

    # Nothing answered: every request is a client timeout, none an answer or an error.
    silent = summaries["silent"]
    assert silent["client_timeouts"] == silent["scheduled"]
    assert all(c["count"] == 0 for c in silent["classes"].values())
    assert silent["goodput_per_s"] == 0
