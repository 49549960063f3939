"""The open-loop drivers, the Python one (benchmarks/openloop.py) and the C one
(benchmarks/openloop.c, built by benchmarks/openloop_native.py), against tiny in-test HTTP
servers: each sends what its seeded schedule says, measures latency from each request's intended
send time, turns unanswered requests into client timeouts, counts refused connections as
connection errors, honours `Connection: close`, sends the endpoints' requests, and prints the
same JSON summary.

Every test runs once per driver; the C one is skipped when there is no C compiler. The servers
run on an event loop in a thread of this process; a driver runs as the benchmark runs it, a
process of its own (`--json`). The runs of one test overlap, so each takes about two seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import openloop, openloop_native

ROOT = Path(__file__).resolve().parents[2]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
CREATED = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"
SLOW_S = 0.2
SUMMARY_KEYS = [
    "intended_rate", "duration_s", "seed", "scheduled", "scheduled_rate", "sent",
    "achieved_rate", "achieved_ratio", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "driver_bound",
    "driver_bound_why", "classes", "goodput_per_s", "refusals_per_s", "late_after_s",
    "late_answers", "client_timeouts", "timeouts_never_sent", "connection_errors",
    "max_connections", "cap_hits", "max_open_connections", "connections_opened",
    "driver_cpu_s", "driver_wall_s", "started_at", "send_end_at", "clients_done_at",
]
CLASS_KEYS = ["count", "min_ms", "p50_ms", "p99_ms", "max_ms"]


@dataclass(frozen=True)
class Driver:
    name: str
    command: list[str]  # before the flags
    schedule: Callable[[float, float, int], list[float]]  # its arrival offsets for a seed


@pytest.fixture(params=["python", "c"])
def driver(request: pytest.FixtureRequest) -> Driver:
    if request.param == "python":
        return Driver("python", list(openloop_native.PYTHON_COMMAND), openloop.arrival_offsets)
    if openloop_native.compiler() is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC): the C driver cannot be built")
    binary = openloop_native.native_driver()  # compiles on first use
    assert binary is not None, "a C compiler is present but benchmarks/openloop.c did not build"
    return Driver("c", [str(binary)], openloop_native.arrival_offsets)


class Answering(asyncio.Protocol):
    """Per request (head, and a Content-Length body): `ok` answers 200 at once, `slow` 200
    `SLOW_S` later, `silent` never, `closing` 200 with Connection: close and closes,
    `recording` 201 and keeps the request."""

    def __init__(self, mode: str, transports: set[asyncio.BaseTransport],
                 recorded: list[bytes]) -> None:
        self.mode = mode
        self.transports = transports
        self.recorded = recorded
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
            size = int(length.group(1)) if length else 0
            if len(rest) < size:
                return
            self.buffer = rest[size:]
            self._answer(head + b"\r\n\r\n" + rest[:size])

    def _answer(self, request: bytes) -> None:
        if self.mode == "ok":
            self.transport.write(OK)
        elif self.mode == "slow":  # the server's answer time, not a synchronisation
            asyncio.get_running_loop().call_later(SLOW_S, self._late_answer)
        elif self.mode == "closing":
            self.transport.write(CLOSING)
            self.transport.close()
        elif self.mode == "recording":
            self.recorded.append(request)
            self.transport.write(CREATED)

    def _late_answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(OK)


@dataclass
class Servers:
    urls: dict[str, str]  # by mode, and "refused": a bound port that does not listen
    recorded: dict[str, list[bytes]]  # the requests the `recording*` servers got


@pytest.fixture
def servers() -> Iterator[Servers]:
    loop = asyncio.new_event_loop()
    transports: set[asyncio.BaseTransport] = set()
    started: dict[str, asyncio.Server] = {}
    recorded: dict[str, list[bytes]] = {}
    modes = {"ok": "ok", "slow": "slow", "silent": "silent", "closing": "closing",
             "recording-get": "recording", "recording-create": "recording"}

    async def start() -> dict[str, str]:
        urls = {}
        for name, mode in modes.items():
            got = recorded.setdefault(name, [])
            server = await loop.create_server(
                lambda m=mode, g=got: Answering(m, transports, g), "127.0.0.1", 0)
            started[name] = server
            urls[name] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return urls

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    urls = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    # Connecting to a bound port nobody listens on is refused (RST), at once.
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    urls["refused"] = f"http://127.0.0.1:{refused.getsockname()[1]}"

    async def stop() -> None:
        for server in started.values():
            server.close()
        for transport in list(transports):
            transport.abort()
        for server in started.values():
            await server.wait_closed()

    try:
        yield Servers(urls, recorded)
    finally:
        refused.close()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _start(driver: Driver, url: str, rate: float, seed: int, timeout_s: float = 2.0,
           endpoint: str = "healthz", duration_s: float = 1.0,
           extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*driver.command, "--url", url, "--rate", str(rate), "--duration", str(duration_s),
         "--endpoint", endpoint, "--seed", str(seed), "--timeout", str(timeout_s),
         "--late-after", "0.15", "--json", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _summary(proc: subprocess.Popen[str]) -> dict:
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout  # one JSON line
    return json.loads(lines[0])


@pytest.mark.timeout(60)
def test_open_loop_driver(driver: Driver, servers: Servers) -> None:
    runs = {"ok": (200.0, 11, 2.0), "slow": (50.0, 12, 2.0), "silent": (50.0, 13, 0.5),
            "closing": (50.0, 14, 2.0), "refused": (50.0, 15, 2.0)}
    procs = {name: _start(driver, servers.urls[name], rate, seed, timeout)
             for name, (rate, seed, timeout) in runs.items()}
    summaries = {name: _summary(proc) for name, proc in procs.items()}

    for name, (rate, seed, _) in runs.items():
        got = summaries[name]
        # The seed's own Poisson schedule, and a count within 4 sigma of rate x duration.
        assert got["scheduled"] == len(driver.schedule(rate, 1.0, seed)), name
        assert abs(got["scheduled"] - rate) <= 4 * math.sqrt(rate), name
        assert got["sent"] == got["scheduled"], name
        assert got["lag_p99_ms"] is not None, name
        assert got["connection_errors"] == (got["scheduled"] if name == "refused" else 0), name

    ok = summaries["ok"]
    assert ok["classes"]["2xx"]["count"] == ok["scheduled"]
    assert ok["client_timeouts"] == 0
    assert ok["goodput_per_s"] > 0

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

    # Connection: close is honoured: every answer complete, one connection per request.
    closing = summaries["closing"]
    assert closing["classes"]["2xx"]["count"] == closing["scheduled"]
    assert closing["connections_opened"] == closing["scheduled"]

    # Refused: connection errors, neither answers nor timeouts.
    refused = summaries["refused"]
    assert refused["client_timeouts"] == 0
    assert all(c["count"] == 0 for c in refused["classes"].values())


@pytest.mark.timeout(60)
def test_endpoints_requests(driver: Driver, servers: Servers) -> None:
    """get_user goes round-robin over --ids; create_user posts the benchmark's JSON body with a
    name unique to the run and the request."""
    gets = _start(driver, servers.urls["recording-get"], 40.0, 21, endpoint="get_user",
                  duration_s=0.5, extra=("--ids", "3", "5"))
    creates = _start(driver, servers.urls["recording-create"], 40.0, 22, endpoint="create_user",
                     duration_s=0.5, extra=("--name-prefix", "t-run"))
    got_gets, got_creates = _summary(gets), _summary(creates)

    paths = [r.split(b" ")[1].decode() for r in servers.recorded["recording-get"]]
    assert len(paths) == got_gets["scheduled"] == got_gets["classes"]["2xx"]["count"] > 3
    counts = [sum(p == f"/users/{n}" for p in paths) for n in (3, 4, 5)]
    assert sum(counts) == len(paths) and max(counts) - min(counts) <= 1, paths  # round-robin
    assert all(f"Host: {servers.urls['recording-get'][7:]}".encode() in r
               for r in servers.recorded["recording-get"])

    bodies = []
    for r in servers.recorded["recording-create"]:
        head, body = r.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /users/ HTTP/1.1\r\n")
        assert b"\r\nContent-Type: application/json" in head
        assert f"\r\nContent-Length: {len(body)}".encode() in head
        bodies.append(json.loads(body))
    assert len(bodies) == got_creates["scheduled"] == got_creates["classes"]["2xx"]["count"]
    assert sorted(bodies, key=lambda b: int(b["name"].rsplit("-", 1)[1])) == [
        {"name": f"t-run-{i}", "password": openloop.PASSWORD} for i in range(len(bodies))]


@pytest.mark.timeout(60)
def test_json_summary(driver: Driver, servers: Servers) -> None:
    """The same keys in the same order, and the same JSON types, from either driver."""
    got = _summary(_start(driver, servers.urls["ok"], 100.0, 31, duration_s=0.5))
    assert list(got) == SUMMARY_KEYS
    assert list(got["classes"]) == list(openloop.CLASSES)
    for name, figures in got["classes"].items():
        assert list(figures) == CLASS_KEYS, name
        assert isinstance(figures["count"], int)
    ints = ("seed", "scheduled", "sent", "late_answers", "client_timeouts",
            "timeouts_never_sent", "connection_errors", "max_connections", "cap_hits",
            "max_open_connections", "connections_opened")
    assert all(type(got[key]) is int for key in ints)
    floats = ("intended_rate", "duration_s", "scheduled_rate", "achieved_rate",
              "achieved_ratio", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "goodput_per_s",
              "refusals_per_s", "late_after_s", "driver_cpu_s", "driver_wall_s", "started_at",
              "send_end_at", "clients_done_at")
    assert all(type(got[key]) is float for key in floats), {k: got[k] for k in floats}
    assert got["driver_bound"] is False and got["driver_bound_why"] == ""
    assert got["intended_rate"] == 100.0 and got["duration_s"] == 0.5 and got["seed"] == 31
    assert got["late_after_s"] == 0.15
    assert got["send_end_at"] >= got["started_at"] + 0.5
    assert got["clients_done_at"] >= got["send_end_at"]


@pytest.mark.timeout(60)
def test_native_driver_is_rebuilt_when_its_source_is_newer(tmp_path: Path) -> None:
    if openloop_native.compiler() is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC): the C driver cannot be built")
    binary = tmp_path / "openloop"
    binary.write_bytes(b"stale")
    older = openloop_native.SOURCE.stat().st_mtime - 60
    os.utime(binary, (older, older))
    assert openloop_native.native_driver(binary) == binary
    assert binary.read_bytes() != b"stale"
    built = binary.stat().st_mtime_ns
    assert openloop_native.native_driver(binary) == binary  # up to date: not rebuilt
    assert binary.stat().st_mtime_ns == built


@pytest.mark.timeout(60)
def test_without_a_compiler_the_python_driver_runs(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(openloop_native, "BINARY", tmp_path / "openloop")  # not built
    monkeypatch.setattr(openloop_native, "_warned", False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.delenv("OPENLOOP_DRIVER", raising=False)
    assert openloop_native.compiler() is None
    assert openloop_native.driver_command() == (list(openloop_native.PYTHON_COMMAND), "python")
    assert "no C compiler" in capsys.readouterr().err
    assert not (tmp_path / "openloop").exists()
