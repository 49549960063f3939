"""Throughput and latency of the hardened service and the naive baseline, side by side.

    .venv/bin/python benchmarks/bench.py                      # the table in docs/performance.md
    .venv/bin/python benchmarks/bench.py --stall-probe        # the naive pool-exhaustion stall
    .venv/bin/python benchmarks/bench.py --services naive --concurrency 1,16 --duration 3
    .venv/bin/python benchmarks/bench.py --services hardened --backend sqlite,postgres

Benchmark mode: each service (`--services`) runs in a real uvicorn process
(`faults.server.ServerProcess`, a temporary data folder, argon2 at its cheapest cost). 200 users
are created first; then `wrk` drives, at each concurrency (`--concurrency`, default 1, 16,
64): `GET /healthz` (no database: the ceiling of the HTTP stack on this machine), then
`GET /users/{id}` over the existing ids, then `POST /users/` with unique names. Every figure
is also given as a ratio to `/healthz` of the same server at the same concurrency, because
this machine is shared and its absolute numbers drift from run to run. Services take turns
at each concurrency. Each wrk run stops at `--duration` whether or not its requests were
answered, so a stalled server shows as a collapse in answered requests and as a server that
does not answer `GET /readyz` within 2 s afterwards (`answered after: no`), not as a hung
script; a stalled server is then restarted on the same data folder for the next run.

`--backend` picks the hardened service's database: `sqlite` (default), `postgres` (a
throwaway PostgreSQL server started for the run, `faults.postgres_server.PostgresServer`, a
fresh database per service), or both, `sqlite,postgres`, which take turns like services do, so
the two backends are compared within one run. The naive baseline is SQLite-only (it is the
service on SQLite's defaults): it runs on the sqlite backend and is left out of the others.

Stall-probe mode: asyncio + httpx clients (each its own connection, every request under a
client timeout) read users for `--duration` seconds while a monitor asks `GET /healthz`
every 0.1 s; a fresh server per concurrency level. It reports the longest stretch in which
the server answered nothing at all, /healthz included: the event loop itself was blocked.

Output: a Markdown table on stdout, JSON and Markdown in build/bench/.
wrk comes from Debian's packages: installed with apt-get when missing and running as root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from faults.postgres_server import PostgresServer, pg_bin_dir
from faults.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "build" / "bench"
SERVICES = {
    "hardened": "app.main:create_app",
    "naive": "examples.naive_service.app:create_app",
}
BACKENDS = ("sqlite", "postgres")
ENDPOINTS = ("healthz", "get_user", "create_user")
SEED_USERS = 200
PASSWORD = "benchmark password"

# What Debian's wrk (4.1.0) reports, and what it does not: its text output has no p95
# (`--latency` prints 50/75/90/99), and it counts a "timeout" only for a response that
# arrives later than --timeout (leaving it out of the latency figures); a request still
# unanswered when the run stops is counted nowhere (and a healthy server has one in flight per
# connection at that moment too, so counting them would not tell a stall apart). So every
# script ends with a `done` hook printing the run's figures on one marked line, and the stall
# is judged by asking the server right after the run (`answered_after`). Percentiles are in
# µs, after wrk's own correction for coordinated omission.
_DONE = r"""
function done(summary, latency, requests)
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%.0f,\"p95_us\":%.0f," ..
    "\"p99_us\":%.0f,\"max_us\":%.0f,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"""

SCRIPTS = {
    # Built per request in Lua like the other two (wrk's static path would be cheaper on the
    # client), so all three endpoints pay the same client cost and their ratios compare like
    # with like.
    "healthz": _DONE + r"""
local req
function init(args)
  req = wrk.format("GET", "/healthz")
end
function request()
  return req
end
""",
    # Round-robin over ids known to exist, so every answer is a 200 that read a row.
    "get_user": _DONE + r"""
local first, count, n
function init(args)
  first = tonumber(args[1])
  count = tonumber(args[2]) - first + 1
  n = math.random(count)
end
function request()
  n = n + 1
  return wrk.format("GET", "/users/" .. (first + n % count))
end
""",
    # Unique names without coordination: a prefix per run (script argument), a number per wrk
    # thread (handed out by `setup`, which runs in the main Lua state) and a counter per thread.
    "create_user": _DONE + r"""
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
end
local prefix
local counter = 0
function init(args)
  prefix = args[1] .. "-" .. thread_no
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = string.format('{"name":"%s-%d","password":"benchmark password"}',
                             prefix, counter)
  return wrk.format("POST", "/users/", nil, body)
end
""",
}


@dataclass
class Cell:
    service: str
    endpoint: str
    concurrency: int
    backend: str = "sqlite"
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    non_2xx: int = 0
    socket_errors: int = 0  # connect + read + write
    late: int = 0  # answered after more than --timeout (wrk's "timeout"): not in percentiles
    # Did the server answer GET /readyz within 2 s right after the run? A stalled one does not
    # (and is restarted on the same data folder before the next run).
    answered_after: bool = True
    ratios: dict[str, float | None] = field(default_factory=dict)
    wrk_output: str = ""


# ---------------------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it from Debian's packages (apt-get install wrk)",
              file=sys.stderr)
        # Install first; only a stale package list needs an update, and it costs a download.
        if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"],
                          stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                           stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("wrk is needed: install it with `sudo apt-get install wrk` (Debian/Ubuntu), "
             "then run this script again.")


def run_wrk(wrk: str, url: str, concurrency: int, duration_s: int, timeout_s: int,
            script: Path, script_args: list[str]) -> tuple[dict[str, Any], float, str]:
    """One bounded wrk run: (figures from the done hook, wrk's Requests/sec, raw output)."""
    command = [
        wrk, "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{duration_s}s",
        "--timeout", f"{timeout_s}s", "--latency", "-s", str(script), url, "--", *script_args,
    ]
    # wrk stops within 0.1 s of -d (its rate timer checks the stop flag), answered or not;
    # the margin here only guards against wrk itself hanging.
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=duration_s + timeout_s + 30, check=True)
    output = done.stdout
    marked = re.search(r"^BENCH_JSON (\{.*\})$", output, re.MULTILINE)
    per_sec = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if marked is None or per_sec is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}\n{done.stderr}")
    return json.loads(marked.group(1)), float(per_sec.group(1)), output


def _ms(us: float, requests: int) -> float | None:
    return round(us / 1000, 3) if requests else None


# ---------------------------------------------------------------------------- servers


def seed_users(base_url: str, count: int, prefix: str) -> tuple[int, int]:
    """Create `count` users; returns the (first, last) id, which must be contiguous."""
    ids = []
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for i in range(count):
            response = client.post("/users/", json={"name": f"{prefix}-{i}",
                                                     "password": PASSWORD})
            response.raise_for_status()
            ids.append(response.json()["id"])
    if ids != list(range(ids[0], ids[0] + count)):
        raise RuntimeError("seeded ids are not contiguous; the GET script assumes they are")
    return ids[0], ids[-1]


def answers(server: ServerProcess, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(server.base_url + "/readyz", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def serving(app: str, database_url: str | None = None) -> Iterator[ServerProcess]:
    """A server on an SQLite file in a temporary folder, or on `database_url`."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = {"DATABASE_URL": database_url} if database_url else None
        server = ServerProcess(Path(tmp), app=app, env=env)
        server.start()
        try:
            yield server
        except BaseException:
            print(f"server log tail:\n{server.log_tail(20)}", file=sys.stderr)
            raise
        finally:
            server.kill()


# ---------------------------------------------------------------------------- benchmark


def run_benchmark(runs: list[tuple[str, str]], wrk: str, concurrencies: list[int],
                  duration_s: int, timeout_s: int, scripts: dict[str, Path],
                  postgres: PostgresServer | None = None) -> list[Cell]:
    """`runs`: (service, backend) pairs; `postgres` serves every pair on the postgres backend,
    each with a database of its own."""
    cells: list[Cell] = []
    with contextlib.ExitStack() as stack:
        servers: dict[tuple[str, str], ServerProcess] = {}
        for service, backend in runs:
            url = None
            if backend == "postgres":
                assert postgres is not None
                url = postgres.url(postgres.create_database(f"bench_{service}"))
            servers[(service, backend)] = stack.enter_context(serving(SERVICES[service], url))
        ids = {run: seed_users(server.base_url, SEED_USERS, "seed")
               for run, server in servers.items()}
        # Services (and backends) take turns at each concurrency (the idle one waits,
        # unloaded), so a change in the machine's background load mid-run does not favour one
        # of them.
        for concurrency in concurrencies:
            for (name, backend), server in servers.items():
                for endpoint in ENDPOINTS:
                    cell = measure(wrk, server, name, endpoint, concurrency, duration_s,
                                   timeout_s, scripts[endpoint], ids[(name, backend)], backend)
                    cells.append(cell)
                    print(f"  {name:8} {backend:8} {endpoint:11} c={concurrency:<3} "
                          f"{cell.rps:9.1f} req/s  p99 {cell.p99_ms} ms  non-2xx {cell.non_2xx}"
                          f"  late {cell.late}"
                          + ("" if cell.answered_after else "  STALLED: restarting"),
                          file=sys.stderr)
                    if not cell.answered_after:
                        # The next run gets a fresh process on the same data folder.
                        server.kill()
                        server.start()
    add_ratios(cells)
    return cells


def measure(wrk: str, server: ServerProcess, service: str, endpoint: str, concurrency: int,
            duration_s: int, timeout_s: int, script: Path, ids: tuple[int, int],
            backend: str = "sqlite") -> Cell:
    # The GET and POST scripts build each request's path themselves.
    path, script_args = {
        "healthz": ("/healthz", []),
        "get_user": ("/users/", [str(ids[0]), str(ids[1])]),
        "create_user": ("/users/", [f"c{concurrency}-{time.monotonic_ns()}"]),
    }[endpoint]
    figures, per_sec, output = run_wrk(wrk, server.base_url + path, concurrency, duration_s,
                                       timeout_s, script, script_args)
    requests = figures["requests"]
    return Cell(
        service, endpoint, concurrency, backend,
        requests=requests,
        rps=per_sec,
        p50_ms=_ms(figures["p50_us"], requests),
        p95_ms=_ms(figures["p95_us"], requests),
        p99_ms=_ms(figures["p99_us"], requests),
        max_ms=_ms(figures["max_us"], requests),
        non_2xx=figures["status"],
        socket_errors=figures["connect"] + figures["read"] + figures["write"],
        late=figures["timeout"],
        answered_after=answers(server),
        wrk_output=output,
    )


def add_ratios(cells: list[Cell]) -> None:
    """Each cell against /healthz of the same server at the same concurrency."""
    base = {(c.service, c.backend, c.concurrency): c for c in cells if c.endpoint == "healthz"}

    def ratio(value: float | None, reference: float | None) -> float | None:
        if value is None or not reference:
            return None
        return round(value / reference, 3)

    for cell in cells:
        ref = base[(cell.service, cell.backend, cell.concurrency)]
        cell.ratios = {
            "rps": ratio(cell.rps, ref.rps),
            "p50": ratio(cell.p50_ms, ref.p50_ms),
            "p95": ratio(cell.p95_ms, ref.p95_ms),
            "p99": ratio(cell.p99_ms, ref.p99_ms),
        }


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def bench_markdown(cells: list[Cell]) -> str:
    lines = [
        "| service | backend | endpoint | c | req/s | p50 ms | p95 ms | p99 ms | non-2xx "
        "| sock err | late | answered after | req/s / healthz | p50 / healthz | p95 / healthz "
        "| p99 / healthz |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.service} | {c.backend} | {c.endpoint} "
            f"| {c.concurrency} | {c.rps:.0f} | {_fmt(c.p50_ms)} | {_fmt(c.p95_ms)} "
            f"| {_fmt(c.p99_ms)} | {c.non_2xx} | {c.socket_errors} | {c.late} "
            f"| {'yes' if c.answered_after else '**no**'} "
            f"| {_fmt(c.ratios['rps'], 2)} | {_fmt(c.ratios['p50'], 1)} "
            f"| {_fmt(c.ratios['p95'], 1)} | {_fmt(c.ratios['p99'], 1)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- stall probe


@dataclass
class ProbeLevel:
    service: str
    concurrency: int
    duration_s: float
    request_timeout_s: float
    ok: int = 0
    other_status: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0
    transport_errors: int = 0
    healthz_asked: int = 0
    healthz_answered: int = 0
    longest_silence_s: float = 0.0  # longest stretch with no answer to anything
    first_silence_at_s: float | None = None  # when that stretch began, from the start
    # Every stretch of more than a second with no answer: [began at (s), length (s)].
    silences_over_1s: list[list[float]] = field(default_factory=list)


async def probe_level(service: str, concurrency: int, duration_s: float,
                      request_timeout_s: float) -> ProbeLevel:
    level = ProbeLevel(service, concurrency, duration_s, request_timeout_s)
    # Blocking start and seeding, before any client starts: nothing else runs on this loop.
    with serving(SERVICES[service]) as server:
        first, last = seed_users(server.base_url, 20, "probe")
        count = last - first + 1
        answered_at: list[float] = []  # completion times of every answer, any status
        # One client (one connection) per reader, as independent callers have. They are built
        # before the clock starts: building 64 (an SSL context each) took seconds here, which
        # showed up as silence that was the probe's own. Not one pooled client: httpx's pool
        # is slow at 16+ connections, and a client slower than the server offers too little
        # load to reproduce the stall (measured: no stall at 64 through one pooled client).
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=server.base_url, timeout=request_timeout_s))
                for _ in range(concurrency)
            ]
            start = time.monotonic()
            end = start + duration_s

            async def reader(k: int) -> None:
                client = clients[k]
                i = k
                while time.monotonic() < end:
                    try:
                        response = await client.get(f"/users/{first + i % count}")
                    except httpx.TimeoutException:
                        level.timeouts += 1
                    except httpx.HTTPError:
                        level.transport_errors += 1
                    else:
                        answered_at.append(time.monotonic())
                        if response.status_code == 200:
                            level.ok += 1
                        else:
                            key = str(response.status_code)
                            level.other_status[key] = level.other_status.get(key, 0) + 1
                    i += concurrency

            def monitor() -> None:
                # On its own thread, so a busy client loop does not delay the health checks.
                with httpx.Client(base_url=server.base_url, timeout=1.0) as health:
                    while time.monotonic() < end:
                        level.healthz_asked += 1
                        with contextlib.suppress(httpx.HTTPError):
                            if health.get("/healthz").status_code == 200:
                                level.healthz_answered += 1
                                answered_at.append(time.monotonic())
                        time.sleep(0.1)  # the probe's pace, not synchronisation

            await asyncio.gather(asyncio.to_thread(monitor),
                                 *(reader(k) for k in range(concurrency)))

    # Silence inside the measured window only: edges count, late answers do not.
    marks = [start, *sorted(t for t in answered_at if t < end), end]
    gaps = [(b - a, a) for a, b in itertools.pairwise(marks)]
    longest, began = max(gaps)
    level.longest_silence_s = round(longest, 2)
    level.first_silence_at_s = round(began - start, 2)
    level.silences_over_1s = [[round(at - start, 2), round(length, 2)]
                              for length, at in gaps if length > 1.0]
    return level


def probe_markdown(levels: list[ProbeLevel]) -> str:
    lines = [
        "| service | clients | 200s | other statuses | client timeouts | /healthz answered "
        "| longest silence (s) | silence began at (s) |",
        "|---|--:|--:|---|--:|--:|--:|--:|",
    ]
    for lv in levels:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(lv.other_status.items())) or "-"
        lines.append(
            f"| {lv.service} | {lv.concurrency} | {lv.ok} | {statuses} "
            f"| {lv.timeouts + lv.transport_errors} "
            f"| {lv.healthz_answered}/{lv.healthz_asked} | {lv.longest_silence_s:.2f} "
            f"| {lv.first_silence_at_s:.2f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _services(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(names) - set(SERVICES)
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SERVICES)}")
    return names


def _backends(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or set(names) - set(BACKENDS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def plan_runs(services: list[str] | None, backends: list[str]) -> list[tuple[str, str]]:
    """(service, backend) pairs to measure. The naive baseline runs on SQLite only: by default
    it is left out of other backends; asked for by name with no sqlite backend, it is refused."""
    if services is not None and "naive" in services and "sqlite" not in backends:
        raise SystemExit("the naive baseline is SQLite-only (the service on SQLite's "
                         "defaults): add sqlite to --backend, or leave naive out of --services")
    return [(service, backend) for backend in backends for service in services or SERVICES
            if service != "naive" or backend == "sqlite"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=None,
                        help="seconds per run (default 5; stall probe: 8)")
    parser.add_argument("--services", type=_services, default=None,
                        help="comma-separated: hardened,naive (default both; naive runs on "
                             "the sqlite backend only)")
    parser.add_argument("--backend", type=_backends, default=["sqlite"],
                        help="comma-separated: sqlite,postgres (default sqlite); postgres "
                             "starts a throwaway PostgreSQL server for the run")
    parser.add_argument("--concurrency", type=_ints, default=None,
                        help="comma-separated client counts (default 1,16,64; "
                             "stall probe: 4,15,16,64)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="client timeout in seconds (default: the duration; "
                             "stall probe: 2)")
    parser.add_argument("--stall-probe", action="store_true",
                        help="measure the naive pool-exhaustion stall instead")
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/bench.py", *(argv or sys.argv[1:])]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }

    if args.stall_probe:
        if args.backend != ["sqlite"]:
            # The probe is about the naive baseline's pool stall, which is SQLite-only.
            parser.error("--stall-probe runs on the sqlite backend only")
        args.services = args.services or list(SERVICES)
        concurrencies = args.concurrency or [4, 15, 16, 64]
        duration = args.duration or 8
        timeout = args.timeout or 2
        levels = [
            asyncio.run(probe_level(service, c, duration, timeout))
            for service in args.services for c in concurrencies
        ]
        table = probe_markdown(levels)
        (OUT_DIR / "stall.json").write_text(json.dumps(
            {**meta, "levels": [asdict(lv) for lv in levels]}, indent=2))
        (OUT_DIR / "stall.md").write_text(table + "\n")
        print(table)
        return 0

    runs = plan_runs(args.services, args.backend)
    if "postgres" in args.backend and pg_bin_dir() is None:
        sys.exit("--backend postgres starts its own throwaway PostgreSQL server and needs "
                 "initdb and pg_ctl: apt-get install postgresql")
    wrk = ensure_wrk()
    meta["wrk"] = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split(
        "\n")[0].strip()
    concurrencies = args.concurrency or [1, 16, 64]
    duration = args.duration or 5
    # A response slower than --timeout is left out of wrk's percentiles: by default none is,
    # since no response can take longer than the run.
    timeout = args.timeout or duration
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lua-"))
        scripts: dict[str, Path] = {}
        for name, text in SCRIPTS.items():
            scripts[name] = Path(tmp) / f"{name}.lua"
            scripts[name].write_text(text)
        postgres = None
        if "postgres" in args.backend:
            postgres = stack.enter_context(PostgresServer())
            meta["postgres"] = postgres.psql("SHOW server_version").strip()
        cells = run_benchmark(runs, wrk, concurrencies, duration, timeout, scripts, postgres)
    table = bench_markdown(cells)
    (OUT_DIR / "bench.json").write_text(json.dumps(
        {**meta, "duration_s": duration, "timeout_s": timeout,
         "cells": [asdict(c) for c in cells]}, indent=2))
    (OUT_DIR / "bench.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
