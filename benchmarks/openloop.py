"""Open-loop HTTP/1.1 load: each request sent at its own seeded Poisson arrival time, whatever
the server does with the earlier ones.

    python -m benchmarks.openloop --url http://127.0.0.1:8000 --rate 500 --duration 8 \\
        --endpoint get_user --ids 1 50 --seed 1 --json

Why not wrk: wrk is closed-loop. Each of its connections sends its next request only after the
previous answer, so a server that slows down also slows its own load, and the requests that
"would have been sent" meanwhile are never measured (coordinated omission). Past capacity that
is exactly what must be measured: arrivals keep coming at the offered rate, a queue builds, and
the question is what the service then answers, and when. Why not httpx: its per-request cost
(~1 ms of Python) makes the generator, not the service, the bottleneck from a few hundred
requests a second. So this is the smallest client that can do it: uvloop, one
`asyncio.Protocol` per connection, request bytes rendered before the clock starts, and a
response parser that reads only the status line, Content-Length, Transfer-Encoding and
Connection: close.

How a request is sent: at its intended time, on an idle keep-alive connection, or on a new
connection when none is idle (so concurrency is unbounded up to `--max-connections`; past the
cap a request waits for a connection, and that wait is counted as the driver's own lateness).
Latency is measured from the INTENDED send time, so every wait (the driver's, a connection's,
the server's backlog) is inside it. Every request ends as exactly one of: an answer (its
status, classed 2xx / 503 / 504 / other), a connection error (refused, reset, closed before the
answer was complete), or a client timeout (no complete answer `--timeout` seconds after its
intended time; its connection is then closed).

The instrument checks itself: per request it records how late the driver dispatched it (actual
minus intended time), and the run is `driver_bound` when the p99 of that lag is over 10 ms or
the achieved send rate is under 0.97 of the scheduled one. Such a run measured the driver, not
the service, and must not be reported as the service's figure.

Monotonic times in the summary are CLOCK_MONOTONIC (time.monotonic()), which is system-wide on
Linux, so the process that started the driver can compare them with its own clock.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop

# The instrument's own limits: beyond them a run says "driver-bound", not a service figure.
MAX_P99_LAG_S = 0.010
MIN_ACHIEVED_RATIO = 0.97
PASSWORD = "benchmark password"
# Outcome codes besides an HTTP status.
PENDING, CONN_ERROR, TIMED_OUT = 0, -1, -2
CLASSES = ("2xx", "503", "504", "other")
SWEEP_S = 0.05  # how often unanswered requests are checked against their timeout
YIELD_EVERY = 64  # dispatches between two looks at the sockets when the driver is behind


def arrival_offsets(rate: float, duration_s: float, seed: int) -> list[float]:
    """Seconds from the start at which each request is due: a Poisson process of `rate`
    arrivals a second (exponential gaps), the same list for the same seed."""
    rng = random.Random(seed)
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def request_renderer(endpoint: str, host: str, ids: tuple[int, int] | None, seed: int,
                     name_prefix: str) -> Callable[[int], bytes]:
    """Request number i's bytes. GETs round-robin over the seeded ids from a seeded start (all
    rendered up front); creates carry a name unique to the run and the request."""
    head = f"Host: {host}\r\n"
    if endpoint == "healthz":
        fixed = f"GET /healthz HTTP/1.1\r\n{head}\r\n".encode()
        return lambda i: fixed
    if endpoint == "get_user":
        if ids is None:
            raise ValueError("get_user needs --ids FIRST LAST")
        first, last = ids
        rendered = [f"GET /users/{n} HTTP/1.1\r\n{head}\r\n".encode()
                    for n in range(first, last + 1)]
        start = random.Random(seed).randrange(len(rendered))
        return lambda i: rendered[(start + i) % len(rendered)]
    if endpoint == "create_user":
        def create(i: int) -> bytes:
            body = f'{{"name":"{name_prefix}-{i}","password":"{PASSWORD}"}}'.encode()
            return (f"POST /users/ HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        return create
    raise ValueError(f"unknown endpoint {endpoint!r}")


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time."""

    __slots__ = ("body_end", "buffer", "chunked", "close", "driver", "request", "status",
                 "transport", "until_close")

    def __init__(self, driver: OpenLoop, request: int) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.request = request  # the request in flight on it, -1 when none
        self._reset()

    def _reset(self) -> None:
        self.buffer = bytearray()
        self.body_end = -1  # where the answer ends in the buffer, once its head is parsed
        self.status = 0
        self.close = False
        self.chunked = False
        self.until_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = transport  # type: ignore[assignment]
        if self.request >= 0:
            transport.write(self.driver.render(self.request))
        else:
            transport.abort()  # its request timed out while it was connecting

    def send(self, request: int) -> None:
        self.request = request
        assert self.transport is not None
        self.transport.write(self.driver.render(request))

    def data_received(self, data: bytes) -> None:
        if self.request < 0:
            return  # nothing asked (e.g. a server's goodbye on an idle connection)
        buffer = self.buffer
        buffer += data
        if self.body_end < 0 and not self._parse_head():
            return
        if self.chunked:
            if buffer.find(b"0\r\n\r\n", self.body_end) < 0:
                return
        elif self.until_close or len(buffer) < self.body_end:
            return
        self._complete()

    def _parse_head(self) -> bool:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buffer[:end]).lower()
        try:
            self.status = int(head[9:12])
        except ValueError:
            self.status = 999  # not HTTP: counted as "other"
        self.close = b"\r\nconnection: close" in head
        self.body_end = end + 4
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            line_end = head.find(b"\r\n", at + 2)
            self.body_end += int(head[at + 17:line_end if line_end >= 0 else None])
        elif b"\r\ntransfer-encoding: chunked" in head:
            self.chunked = True
        elif self.status not in (204, 304) and not 100 <= self.status < 200:
            self.until_close = True
        return True

    def _complete(self) -> None:
        request, status, close = self.request, self.status, self.close
        self.request = -1
        self._reset()
        if close and self.transport is not None:
            self.transport.close()
        self.driver.answered(self, request, status, reusable=not close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.request >= 0 and self.until_close and self.body_end >= 0:
            self.close = True
            self._complete()  # an answer delimited by the end of the connection
        self.driver.lost(self)

    def abort(self) -> None:
        self.request = -1
        if self.transport is not None:
            self.transport.abort()


class OpenLoop:
    """The schedule, the connections and every request's outcome for one run."""

    def __init__(self, host: str, port: int, offsets: list[float],
                 render: Callable[[int], bytes], timeout_s: float, max_connections: int) -> None:
        self.host, self.port = host, port
        self.offsets = offsets
        self.render = render
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        n = len(offsets)
        self.t0 = 0.0
        self.dispatched_at = [math.nan] * n
        self.done_at = [math.nan] * n
        self.outcome = [PENDING] * n
        self.conn_of: list[Connection | None] = [None] * n
        self.idle: dict[Connection, None] = {}  # an ordered set: popitem() takes the newest
        self.waiting: collections.deque[int] = collections.deque()  # at the connection cap
        self.watch: collections.deque[int] = collections.deque()  # in intended-time order
        self.open = 0
        self.max_open = 0
        self.opened = 0
        self.cap_hits = 0
        self.resolved = 0
        self.last_dispatch = 0.0
        self.all_resolved: asyncio.Future[None] | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None

    # -- sending

    def dispatch(self, i: int, now: float) -> None:
        self.dispatched_at[i] = now
        self.last_dispatch = now
        while self.idle:
            conn, _ = self.idle.popitem()
            if conn.transport is None or conn.transport.is_closing():
                continue  # closed by the server while idle; its connection_lost is on the way
            self.conn_of[i] = conn
            conn.send(i)
            return
        if self.open < self.max_connections:
            self._connect(i)
        else:
            self.cap_hits += 1
            self.dispatched_at[i] = math.nan  # not yet: it waits for a connection
            self.waiting.append(i)

    def _connect(self, i: int) -> None:
        self.open += 1
        self.opened += 1
        self.max_open = max(self.max_open, self.open)
        conn = Connection(self, i)
        self.conn_of[i] = conn
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: conn, self.host, self.port))
        task.add_done_callback(lambda t: self._connected(t, conn))

    def _connected(self, task: asyncio.Task[Any], conn: Connection) -> None:
        if task.cancelled() or task.exception() is not None:
            if task.exception() is not None and conn.request >= 0:
                self._resolve(conn.request, CONN_ERROR)
            conn.request = -1
            self.lost(conn)

    def _next_waiting(self) -> int:
        """The oldest request still waiting for a connection, or -1."""
        while self.waiting:
            i = self.waiting.popleft()
            if self.outcome[i] == PENDING:
                now = time.monotonic()
                self.dispatched_at[i] = now
                self.last_dispatch = now
                return i
        return -1

    async def schedule(self) -> None:
        offsets, dispatch, monotonic = self.offsets, self.dispatch, time.monotonic
        t0 = self.t0
        n, i, since_yield = len(offsets), 0, 0
        self._sweep_handle = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        try:
            while i < n:
                now = monotonic()
                due = t0 + offsets[i]
                if due <= now:
                    self.watch.append(i)
                    dispatch(i, now)
                    i += 1
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:  # behind: let answers in, then go on
                        since_yield = 0
                        await asyncio.sleep(0)
                    continue
                since_yield = 0
                await asyncio.sleep(due - now)
            if self.resolved < n:
                assert self.all_resolved is not None
                await self.all_resolved
        finally:
            if self._sweep_handle is not None:
                self._sweep_handle.cancel()

    # -- answers

    def answered(self, conn: Connection, i: int, status: int, reusable: bool) -> None:
        self._resolve(i, status)
        if not reusable:
            return
        nxt = self._next_waiting()
        if nxt >= 0:
            self.conn_of[nxt] = conn
            conn.send(nxt)
        else:
            self.idle[conn] = None

    def lost(self, conn: Connection) -> None:
        if conn.request >= 0:
            self._resolve(conn.request, CONN_ERROR)
            conn.request = -1
        self.idle.pop(conn, None)
        self.open -= 1
        nxt = self._next_waiting()
        if nxt >= 0:
            self._connect(nxt)

    def _resolve(self, i: int, outcome: int) -> None:
        if self.outcome[i] != PENDING:
            return
        self.outcome[i] = outcome
        self.done_at[i] = time.monotonic()
        self.conn_of[i] = None
        self.resolved += 1
        if self.resolved == len(self.offsets) and self.all_resolved is not None \
                and not self.all_resolved.done():
            self.all_resolved.set_result(None)

    def _sweep(self) -> None:
        """Requests unanswered `timeout_s` after their intended time become client timeouts
        (their connection is closed, as a client that gives up closes it)."""
        limit = time.monotonic() - self.timeout_s - self.t0
        watch, offsets = self.watch, self.offsets
        while watch and offsets[watch[0]] <= limit:
            i = watch.popleft()
            if self.outcome[i] != PENDING:
                continue
            conn = self.conn_of[i]
            self._resolve(i, TIMED_OUT)
            if conn is not None:
                conn.abort()
        self._sweep_handle = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.all_resolved = loop.create_future()
        if not self.offsets:
            self.all_resolved.set_result(None)
        self.t0 = time.monotonic() + 0.05  # room to enter the schedule loop
        try:
            await self.schedule()
        finally:
            for conn in list(self.idle):
                conn.abort()
            for conn in self.conn_of:
                if conn is not None:
                    conn.abort()


# ---------------------------------------------------------------------------- summary


def _class_of(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    if status in (503, 504):
        return str(status)
    return "other"


def percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """min, p50, p99 and max (milliseconds), the percentiles by the nearest-rank method."""
    if not values:
        return {"min_ms": None, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"min_ms": round(ordered[0] * 1000, 3), "p50_ms": round(rank(50) * 1000, 3),
            "p99_ms": round(rank(99) * 1000, 3), "max_ms": round(ordered[-1] * 1000, 3)}


def summarize(run: OpenLoop, rate: float, duration_s: float, seed: int, late_after_s: float,
              cpu_s: float, wall_s: float) -> dict[str, Any]:
    """Every figure of the run; `driver_bound` says whether they are the driver's rather than
    the service's."""
    t0, end = run.t0, run.t0 + duration_s
    n = len(run.offsets)
    by_class: dict[str, list[float]] = {name: [] for name in CLASSES}
    in_window = dict.fromkeys(CLASSES, 0)
    late = timeouts = unsent = errors = 0
    lags: list[float] = []
    for i in range(n):
        intended = t0 + run.offsets[i]
        if not math.isnan(run.dispatched_at[i]):
            lags.append(run.dispatched_at[i] - intended)
        outcome = run.outcome[i]
        if outcome == TIMED_OUT:
            timeouts += 1
            unsent += math.isnan(run.dispatched_at[i])  # still waiting at the connection cap
        elif outcome in (CONN_ERROR, PENDING):
            errors += 1
        else:
            latency = run.done_at[i] - intended
            name = _class_of(outcome)
            by_class[name].append(latency)
            if run.done_at[i] <= end:
                in_window[name] += 1
            if latency > late_after_s:
                late += 1
    sent = len(lags)
    span = max(duration_s, run.last_dispatch - t0) if sent else duration_s
    scheduled_rate = n / duration_s
    achieved_rate = sent / span
    achieved_ratio = achieved_rate / scheduled_rate if n else 1.0
    lag = percentiles_ms(lags)
    why = []
    if lag["p99_ms"] is not None and lag["p99_ms"] > MAX_P99_LAG_S * 1000:
        why.append(f"p99 send lag {lag['p99_ms']:.1f} ms > {MAX_P99_LAG_S * 1000:.0f} ms")
    if achieved_ratio < MIN_ACHIEVED_RATIO:
        why.append(f"sent {achieved_ratio:.2f}x the scheduled rate < {MIN_ACHIEVED_RATIO}")
    return {
        "intended_rate": rate, "duration_s": duration_s, "seed": seed,
        "scheduled": n, "scheduled_rate": round(scheduled_rate, 2), "sent": sent,
        "achieved_rate": round(achieved_rate, 2), "achieved_ratio": round(achieved_ratio, 4),
        "lag_p50_ms": lag["p50_ms"], "lag_p99_ms": lag["p99_ms"], "lag_max_ms": lag["max_ms"],
        "driver_bound": bool(why), "driver_bound_why": "; ".join(why),
        "classes": {name: {"count": len(values), **percentiles_ms(values)}
                    for name, values in by_class.items()},
        "goodput_per_s": round(in_window["2xx"] / duration_s, 2),
        "refusals_per_s": round(in_window["503"] / duration_s, 2),
        "late_after_s": late_after_s if math.isfinite(late_after_s) else None,
        "late_answers": late,
        "client_timeouts": timeouts, "timeouts_never_sent": unsent,
        "connection_errors": errors,
        "max_connections": run.max_connections, "cap_hits": run.cap_hits,
        "max_open_connections": run.max_open, "connections_opened": run.opened,
        "driver_cpu_s": round(cpu_s, 3), "driver_wall_s": round(wall_s, 3),
        "started_at": t0, "send_end_at": max(end, run.last_dispatch),
        # When the last request ended (answered, failed or given up): from here on the
        # server works for nobody, which is what "busy after the clients stop" measures.
        "clients_done_at": max([end, run.last_dispatch,
                                *(t for t in run.done_at if not math.isnan(t))]),
    }


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def drive(url: str, rate: float, duration_s: float, endpoint: str,
          ids: tuple[int, int] | None = None, seed: int = 1, timeout_s: float = 15.0,
          max_connections: int = 10_000, late_after_s: float = math.inf,
          name_prefix: str | None = None) -> dict[str, Any]:
    """One open-loop run on a fresh uvloop event loop; returns the summary."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    offsets = arrival_offsets(rate, duration_s, seed)
    render = request_renderer(endpoint, f"{host}:{port}", ids, seed,
                              name_prefix or f"ol{seed}-{time.monotonic_ns()}")
    run = OpenLoop(host, port, offsets, render, timeout_s, max_connections)
    _raise_fd_limit(max_connections + 64)
    cpu_before = time.process_time()
    started = time.monotonic()
    gc.disable()  # a collection pause would show up as the driver's lag
    try:
        uvloop.run(run.run())
    finally:
        gc.enable()
    return summarize(run, rate, duration_s, seed, late_after_s,
                     time.process_time() - cpu_before, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's base URL, http://host:port")
    parser.add_argument("--rate", type=float, required=True, help="requests a second (mean)")
    parser.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    parser.add_argument("--endpoint", choices=("healthz", "get_user", "create_user"),
                        required=True)
    parser.add_argument("--ids", type=int, nargs=2, metavar=("FIRST", "LAST"),
                        help="get_user: the range of existing ids")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds after its intended time a request is given up (15)")
    parser.add_argument("--max-connections", type=int, default=10_000)
    parser.add_argument("--late-after", type=float, default=math.inf,
                        help="answers later than this many seconds are counted as late")
    parser.add_argument("--name-prefix", default=None, help="create_user: names' prefix")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    summary = drive(args.url, args.rate, args.duration, args.endpoint,
                    tuple(args.ids) if args.ids else None, args.seed, args.timeout,
                    args.max_connections, args.late_after, args.name_prefix)
    if args.json:
        print(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
